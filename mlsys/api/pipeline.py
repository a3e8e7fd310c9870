"""Running a pipeline from a composed :class:`~mlsys.api.config.MlsysConfig`, and explaining what a run would do."""

from __future__ import annotations

from typing import Callable

from mlsys.api.config import MlsysConfig
from mlsys.pipeline.runner import PipelineResult, PipelineRunner

# The config sections pipeline steps may take (bound by type, see mlsys.pipeline.step).
PIPELINE_SECTIONS = ("data", "validation", "features", "model", "train", "tune", "evaluate", "registry", "serve")


def runner(cfg: MlsysConfig, echo: Callable[[str], None] = print) -> PipelineRunner:
    """The runner of ``cfg.pipeline`` with every config section it binds (Ray is started only if a step runs)."""
    from mlsys.cluster import connect
    from mlsys.errors import ConfigError
    from mlsys.pipeline.config import check_step_resources
    from mlsys.pipeline.ctr import PIPELINES
    from mlsys.registry import mlflow_store
    from mlsys.train import warm_start

    if cfg.pipeline.name not in PIPELINES:
        raise ConfigError(f"pipeline.name={cfg.pipeline.name!r} is not one of {sorted(PIPELINES)}")
    pipeline = PIPELINES[cfg.pipeline.name]
    check_step_resources(cfg.pipeline.resources, pipeline.name, (s.name for s in pipeline.steps))  # before `until` cuts steps
    if cfg.pipeline.until:
        pipeline = pipeline.until(cfg.pipeline.until)
    kept = {s.name for s in pipeline.steps}
    sections = {name: getattr(cfg, name) for name in PIPELINE_SECTIONS}
    # Resolved once, before any step runs: the version an alias names now enters the fingerprints.
    sections["warm_start"] = warm_start.resolve(cfg.train.warm_start, mlflow_store.tracking_uri(cfg.home), cfg.model)
    return PipelineRunner(
        pipeline,
        sections,
        home=cfg.home.root,
        tracking_uri=mlflow_store.tracking_uri(cfg.home),
        experiment=cfg.pipeline.experiment,
        use_cache=cfg.pipeline.use_cache,
        echo=echo,
        connect=lambda: connect(cfg.cluster),
        resources={name: r for name, r in cfg.pipeline.resources.items() if name in kept},
    )


def execute_pipeline(cfg: MlsysConfig, overrides: list[str], echo: Callable[[str], None] = print,
                     tags: dict[str, str] | None = None) -> PipelineResult:
    """Run the pipeline, print its summary, log it to the configured logger."""
    from mlsys.train import loggers

    run = runner(cfg, echo)
    result = run.run(overrides, tags)
    echo(summary(result, run.tracking_uri))
    steps = [loggers.StepMetrics(r.name, r.metrics) for r in result.steps]
    logged = loggers.log_pipeline(cfg.logger, f"{cfg.pipeline.name}-{result.run_id[:8]}", loggers.plain_config(cfg), steps, run.home)
    if logged:
        echo(f"[logger] {cfg.logger.name.value} run: {logged}")
    return result


def explain(cfg: MlsysConfig) -> str:
    """Per step: would it be reused or run, and why (``mlsys run --explain``); runs nothing, starts no Ray."""
    from mlsys.pipeline.runner import format_plan

    return format_plan(runner(cfg).plan())


def summary(result: PipelineResult, tracking_uri: str) -> str:
    from mlsys import storage

    lines = [f"\n{'step':<11} {'status':<7} {'seconds':>8}  fingerprint"]
    for r in result.steps:
        lines.append(f"{r.name:<11} {r.status:<7} {r.seconds:>8.1f}  {r.fingerprint[:12]}")
    lines.append(f"pipeline wall time {result.seconds:.1f}s")
    for r in result.steps:
        if r.name == "evaluate":
            lines.append("eval: " + ", ".join(f"{n.removeprefix('eval_')} {v:.4f}" for n, v, _ in r.metrics if n != "eval_rows"))
        if r.name == "register":
            lines.append(f"registered model {r.outputs.model_name} version {r.outputs.version}")
        if r.name == "bless":
            lines.append(f"gate: {storage.read_json(r.outputs.blessing)['reason']}")
        if r.name == "push":
            lines.append(f"push: {storage.read_json(r.outputs.decision)['line']}")
    lines += [f"MLflow run id: {result.run_id}", f"tracking store: {tracking_uri}", f"artifacts: {result.home}/artifacts"]
    return "\n".join(lines)
