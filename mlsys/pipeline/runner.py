"""Runs a :class:`Pipeline` on Ray with caching by fingerprint and MLflow lineage.

A step's fingerprint covers its code, the config sections it reads and its
inputs' fingerprints. A finished step leaves a manifest under
``<home>/cache/<step>/<fingerprint>.json``; a later run with the same
fingerprint reuses it (and says so), so a pipeline that failed at step k
resumes at step k. Every pipeline run is an MLflow run and every step a
nested run carrying its params, metrics, fingerprint and artifact URIs.

``resources`` (``pipeline.resources``) size and place a step's own task; the
step's run records what the task asked for (``mlsys.resources``) and where it
ran (``mlsys.node_ip``, ``mlsys.node_id``). Neither enters a fingerprint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

from mlsys import storage
from mlsys.errors import StepFailedError
from mlsys.config import plain
from mlsys.pipeline.config import StepResources, check_step_resources
from mlsys.pipeline.fingerprint import Basis, basis, explain
from mlsys.pipeline.step import Pipeline, Step, StepContext
from mlsys.registry.mlflow_store import Tag

Status = Literal["ran", "cached"]


@dataclass(frozen=True)
class StepReport:
    name: str
    status: Status
    fingerprint: str
    seconds: float
    run_id: str
    outputs: Any
    metrics: tuple[tuple[str, float, int], ...]


@dataclass(frozen=True)
class StepPlan:
    """Whether a step would be reused or run, and why (``reasons`` is empty for a reuse)."""

    name: str
    fingerprint: str
    basis: Basis
    cached: dict | None  # the cache manifest that would be reused
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class PipelineResult:
    run_id: str
    experiment_id: str
    home: str
    steps: tuple[StepReport, ...]
    seconds: float

    def output(self, step: str) -> Any:
        return next(r.outputs for r in self.steps if r.name == step)


def fingerprint(step: Step, configs: dict[str, Any], inputs: dict[str, str]) -> str:
    """``sha256`` of the step's :class:`~mlsys.pipeline.fingerprint.Basis`: reached code, libraries, config, inputs."""
    return basis(step.name, step.fn, configs, inputs).digest()


def _execute(step: Step, ctx: StepContext, kwargs: dict[str, Any]) -> tuple[Any, list, dict]:
    import ray.util

    from mlsys.data.datasets import quiet_ray_data

    # Where the step ran, in its run record (step facts travel back as ctx.tags).
    ctx.set_tag("node_ip", ray.util.get_node_ip_address())
    ctx.set_tag("node_id", ray.get_runtime_context().get_node_id())

    # The driver prints a progress line per step instead (PipelineRunner._wait).
    quiet_ray_data()
    storage.remove(ctx.output_uri)  # leftovers of an attempt that failed half-way
    outputs = step.fn(ctx, **kwargs)
    if not isinstance(outputs, step.output):
        raise TypeError(f"step '{step.name}' returned {type(outputs).__name__}, declared {step.output.__name__}")
    return outputs, ctx.metrics, ctx.tags


class PipelineRunner:
    """``PipelineRunner(pipeline, sections, home, tracking_uri, experiment).run(overrides)``.

    ``sections`` maps config section names to their dataclass objects (``{"data": DataConfig(...)}``);
    ``resources`` maps step names to what their tasks ask for (``pipeline.resources``; others keep
    ``@step(num_cpus=...)``).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        sections: dict[str, Any],
        home: str,
        tracking_uri: str,
        experiment: str,
        use_cache: bool = True,
        echo: Callable[[str], None] = print,
        connect: Callable[[], None] = lambda: None,
        resources: dict[str, StepResources] | None = None,
    ):
        self.pipeline = pipeline
        self.sections = sections
        self.home = storage.absolute(home)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.use_cache = use_cache
        self.echo = echo
        self._connect = connect  # called before the first step that runs: a cached run needs no Ray
        self._by_type = {type(cfg): name for name, cfg in sections.items()}
        pipeline.validate(self._by_type)
        self.resources = dict(resources or {})
        check_step_resources(self.resources, pipeline.name, (s.name for s in pipeline.steps))

    def task_options(self, step: Step) -> dict:
        """The resources ``step``'s task asks for: ``pipeline.resources.<step>``, else its declared ``num_cpus``."""
        return self.resources.get(step.name, StepResources()).task_options(default_cpus=step.num_cpus)

    def _cache_uri(self, step: Step, fp: str) -> str:
        return storage.join(self.home, "cache", step.name, f"{fp}.json")

    def _manifest(self, step: Step, fp: str) -> dict | None:
        """The cache manifest of ``fp`` if every output it names still exists."""
        uri = self._cache_uri(step, fp)
        if not storage.exists(uri):
            return None
        manifest = storage.read_json(uri)
        local_outputs = [v for v in manifest["outputs"].values() if isinstance(v, str) and v.startswith(("/", "s3://", "gs://"))]
        return manifest if all(storage.exists(v) for v in local_outputs) else None

    def _latest_basis(self, step: Step) -> Basis | None:
        """The basis of this step's most recent finished run in this home (to explain a change)."""
        import pyarrow.fs as pafs

        folder = storage.join(self.home, "cache", step.name)
        if not storage.exists(folder):
            return None
        fs, root = pafs.FileSystem.from_uri(folder) if "://" in folder else (pafs.LocalFileSystem(), folder)
        best = None
        for info in fs.get_file_info(pafs.FileSelector(root)):
            if info.base_name.endswith(".json") and (best is None or info.mtime > best.mtime):
                best = info
        manifest = storage.read_json(storage.join(folder, best.base_name)) if best else {}
        return Basis.from_dict(manifest["basis"]) if "basis" in manifest else None

    def _bind(self, step: Step, outputs: dict, fingerprints: dict) -> tuple[dict, dict, dict]:
        """``(kwargs, configs, inputs)``: the step's arguments, the config sections and upstream fingerprints."""
        kwargs, configs, inputs = {}, {}, {}
        for name, typ in step.params:
            if typ in fingerprints:
                kwargs[name], inputs[name] = outputs.get(typ), fingerprints[typ]
            else:
                section = self._by_type[typ]
                kwargs[name] = configs[section] = self.sections[section]
        return kwargs, configs, inputs

    def _decide(self, step: Step, configs: dict, inputs: dict) -> StepPlan:
        b = basis(step.name, step.fn, configs, inputs)
        fp = b.digest()
        manifest = self._manifest(step, fp) if self.use_cache else None
        if manifest is not None:
            return StepPlan(step.name, fp, b, manifest, ())
        if not self.use_cache:
            reasons = ("pipeline.use_cache=false",)
        elif storage.exists(self._cache_uri(step, fp)):
            reasons = ("an output of its last run with this fingerprint is gone",)
        else:
            reasons = tuple(explain(self._latest_basis(step), b)) or ("no cached run with this fingerprint",)
        return StepPlan(step.name, fp, b, None, reasons)

    def plan(self) -> list[StepPlan]:
        """What :meth:`run` would do, step by step, and why; runs nothing (``mlsys run --explain``)."""
        fingerprints: dict[type, str] = {}
        plans = []
        for step in self.pipeline.steps:
            _, configs, inputs = self._bind(step, {}, fingerprints)
            plans.append(self._decide(step, configs, inputs))
            fingerprints[step.output] = plans[-1].fingerprint
        return plans

    def _wait(self, step: Step, ref, started: float, every_s: float = 15.0):
        """``ray.get(ref)``, with a line every ``every_s`` seconds saying the step is still at work."""
        import ray

        while not ray.wait([ref], timeout=every_s)[0]:
            self.echo(f"[{step.name}] still running: {time.perf_counter() - started:.0f}s")
        return ray.get(ref)

    def run(self, overrides: list[str] | None = None, tags: dict[str, str] | None = None) -> PipelineResult:
        """Run the steps (cached ones reused); ``tags``: more tags for the pipeline's MLflow run (a sweep's id)."""
        from mlsys.registry import mlflow_store

        client = mlflow_store.client(self.tracking_uri)
        exp_id = mlflow_store.ensure_experiment(self.tracking_uri, self.experiment, storage.join(self.home, "mlartifacts"))
        parent = client.create_run(
            exp_id,
            run_name=f"{self.pipeline.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={Tag.PIPELINE: self.pipeline.name, Tag.OVERRIDES: json.dumps(overrides or []), **(tags or {})},
        )
        parent_id = parent.info.run_id
        self.echo(f"[pipeline] {self.pipeline.name}: MLflow run {parent_id} (experiment '{self.experiment}')")
        started = time.perf_counter()
        outputs: dict[type, Any] = {}
        fingerprints: dict[type, str] = {}
        reports: list[StepReport] = []
        try:
            for step in self.pipeline.steps:
                reports.append(self._run_step(client, exp_id, parent_id, step, outputs, fingerprints))
                outputs[step.output] = reports[-1].outputs
                fingerprints[step.output] = reports[-1].fingerprint
        except BaseException:
            client.set_terminated(parent_id, status="FAILED")
            raise
        seconds = time.perf_counter() - started
        client.log_metric(parent_id, "pipeline_wall_s", seconds)
        client.log_metric(parent_id, "steps_ran", sum(r.status == "ran" for r in reports))
        client.set_terminated(parent_id, status="FINISHED")
        return PipelineResult(parent_id, exp_id, self.home, tuple(reports), seconds)

    def _run_step(self, client, exp_id, parent_id, step: Step, outputs, fingerprints) -> StepReport:
        import ray

        kwargs, configs, inputs = self._bind(step, outputs, fingerprints)
        decision = self._decide(step, configs, inputs)
        fp, cached = decision.fingerprint, decision.cached
        run = client.create_run(
            exp_id,
            run_name=step.name,
            tags={Tag.PARENT: parent_id, Tag.STEP: step.name, Tag.FINGERPRINT: fp},
        )
        run_id = run.info.run_id
        for key, value in sorted(decision.basis.config.items()):
            if "<file " in key:  # a content hash of a file a config names: in the basis, not an MLflow param
                continue
            client.log_param(run_id, key, (json.dumps(value) if isinstance(value, list) else str(value))[:6000])
        upstream = {name: plain(kwargs[name]) for name, typ in step.params if typ in outputs}
        client.set_tag(run_id, Tag.INPUTS, json.dumps(upstream))

        if cached is not None:
            result = step.output(**cached["outputs"])
            metrics = [tuple(m) for m in cached["metrics"]]
            seconds = 0.0
            client.set_tag(run_id, Tag.CACHED_FROM, cached["run_id"])
            self.echo(f"[{step.name}] cached: reusing fingerprint {fp[:12]} (first computed in run {cached['run_id'][:12]})")
        else:
            client.set_tag(run_id, Tag.REASON, "; ".join(decision.reasons)[:5000])
            options = self.task_options(step)
            client.set_tag(run_id, Tag.RESOURCES, json.dumps(options, sort_keys=True))
            asked = f" with {json.dumps(options, sort_keys=True)}" if step.name in self.resources else ""
            self.echo(f"[{step.name}] running (fingerprint {fp[:12]}){asked}: {_reasons(decision.reasons)}")
            ctx = StepContext(
                step=step.name,
                fingerprint=fp,
                output_uri=storage.join(self.home, "artifacts", step.name, fp[:16]),
                home=self.home,
                tracking_uri=self.tracking_uri,
                run_id=run_id,
            )
            self._connect()
            t0 = time.perf_counter()
            try:
                task = ray.remote(**options, max_retries=0)(_execute)
                result, metrics, tags = self._wait(step, task.remote(step, ctx, kwargs), t0)
            except BaseException as e:
                client.set_terminated(run_id, status="FAILED")
                cause = e.cause if isinstance(e, ray.exceptions.RayTaskError) and e.cause is not None else e
                if isinstance(e, KeyboardInterrupt):
                    raise
                raise StepFailedError(step.name, cause) from e
            seconds = time.perf_counter() - t0
            for name, value in tags.items():
                client.set_tag(run_id, Tag.step_fact(name), value)
            storage.write_json(
                self._cache_uri(step, fp),
                {"step": step.name, "fingerprint": fp, "run_id": run_id, "seconds": seconds,
                 "outputs": plain(result), "metrics": metrics, "tags": tags, "resources": options,
                 "finished_at": time.time(), "basis": plain(decision.basis)},
            )
            where = f" on node {tags.get('node_ip')}" if step.name in self.resources else ""
            self.echo(f"[{step.name}] done in {seconds:.1f}s{where}")
        client.set_tag(run_id, Tag.CACHED, str(cached is not None).lower())
        client.set_tag(run_id, Tag.OUTPUTS, json.dumps(plain(result)))
        for name, value, idx in metrics:
            client.log_metric(run_id, name, value, step=idx)
        client.log_metric(run_id, "step_compute_s", seconds)
        client.set_terminated(run_id, status="FINISHED")
        return StepReport(step.name, "cached" if cached else "ran", fp, seconds, run_id, result, tuple(metrics))


def _reasons(reasons: tuple[str, ...], limit: int = 3) -> str:
    shown = list(reasons[:limit]) + ([f"and {len(reasons) - limit} more"] if len(reasons) > limit else [])
    return "; ".join(shown)


def format_plan(plans: list[StepPlan]) -> str:
    """The ``mlsys run --explain`` table: per step, reuse or run, and why."""
    lines = []
    for p in plans:
        if p.cached is not None:
            lines.append(f"{p.name:<11} reuse  {p.fingerprint[:12]}  (computed in run {p.cached['run_id'][:12]})")
        else:
            lines.append(f"{p.name:<11} run    {p.fingerprint[:12]}  {p.reasons[0]}")
            lines += [f"{'':<11}        {'':<12}  {r}" for r in p.reasons[1:]]
    return "\n".join(lines)
