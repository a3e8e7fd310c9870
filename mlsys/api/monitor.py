"""``mlsys monitor``: the monitor of one registered model (docs/monitoring.md).

The work is :class:`mlsys.monitor.monitor.Monitor` (merge the windows serving wrote, judge them,
alert) and :class:`mlsys.monitor.retrain.Retrainer` (submit the retraining job); this module
wires them to the registry (each version's training statistics, from its package), the Ray
Jobs API, and a controller that runs them every ``monitor.interval_s``:

- ``mlsys monitor tick``: one pass, in this process (cron-friendly; prints what it judged);
- ``mlsys monitor run``: the controller in the foreground until Ctrl-C (the embedded default);
- ``mlsys monitor start`` / ``stop``: the controller as a detached actor on a Ray cluster, restarted
  by Ray if it dies (its state is on disk: a firing alert is not notified twice);
- ``mlsys monitor status``: the alerts, the last windows, the retrains, read from disk (no Ray);
- ``mlsys monitor spans --feature F``: a feature across every ingested span (offline statistics);
- ``mlsys monitor report``: drift, online quality, alerts, retrains and online updates as one HTML page.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional

from mlsys.api.config import MlsysConfig
from mlsys.monitor.config import monitor_dir

NAMESPACE = "mlsys"


def _model(cfg: MlsysConfig, model: Optional[str]) -> str:
    return model or cfg.registry.model_name


def _directory(cfg: MlsysConfig) -> str:
    return monitor_dir(cfg.serve.monitoring.path, cfg.home.root)


def training_statistics(cfg: MlsysConfig, model: str):
    """``version -> DatasetStatistics | None``: the training statistics its package carries."""
    from mlsys.errors import MlsysError
    from mlsys.registry import mlflow_store
    from mlsys.registry.package import read_package

    tracking = mlflow_store.tracking_uri(cfg.home)

    def of(version: str):
        try:
            return read_package(mlflow_store.resolve(tracking, f"{model}/{version}").source).training_statistics()
        except MlsysError as e:
            print(f"[monitor] no training statistics for {model} version {version} (no skew for it): {e}")
            return None

    return of


def offline_metrics(cfg: MlsysConfig, model: str):
    """``version -> {"auc": ..., "logloss": ...}``: the evaluate step's metrics, from the version's tags."""
    from mlsys.registry import mlflow_store

    client = mlflow_store.client(mlflow_store.tracking_uri(cfg.home))

    def of(version: str) -> dict:
        try:
            tags = client.get_model_version(model, str(version)).tags
        except Exception:  # noqa: BLE001 - a version served by path, or deleted: nothing to compare with
            return {}
        return {k.removeprefix("eval_"): float(v) for k, v in tags.items() if k.startswith("eval_")}

    return of


def quality_source(cfg: MlsysConfig, model: Optional[str] = None):
    """``() -> (feature log, labels)`` for online quality and online learning, or None without a feature
    log. The labels: ``monitor.quality.labels``, else what ``POST /v1/events`` recorded."""
    from mlsys.features.feature_log import default_log_dir, read_feature_log
    from mlsys.monitor.labels import labels_dir, read_labels

    log_dir = cfg.serve.feature_logging.path or default_log_dir(cfg.features.project, cfg.home.root)
    if not log_dir:
        return None
    labels = cfg.monitor.quality.labels or str(labels_dir(_directory(cfg), _model(cfg, model)))
    return lambda: (read_feature_log(log_dir), read_labels(labels))


def monitor_for(cfg: MlsysConfig, model: Optional[str] = None):
    from mlsys.monitor.monitor import Monitor

    name = _model(cfg, model)
    return Monitor(_directory(cfg), name, cfg.monitor, training_statistics(cfg, name),
                   quality_source=quality_source(cfg, name), offline_of=offline_metrics(cfg, name))


def retrainer_for(cfg: MlsysConfig, model: Optional[str] = None):
    """The retrain trigger, or None when ``monitor.retrain`` names neither alerts nor a schedule."""
    from pathlib import Path

    from mlsys import storage
    from mlsys.monitor.retrain import Retrainer

    retrain, name = cfg.monitor.retrain, _model(cfg, model)
    if not retrain.on_alerts and not retrain.schedule:
        return None
    jobs: dict = {}

    def client():
        if "client" not in jobs:
            from ray.job_submission import JobSubmissionClient

            jobs["client"] = JobSubmissionClient(retrain.address or dashboard_url())
        return jobs["client"]

    def submit(submission_id: str, entrypoint: str) -> None:
        client().submit_job(entrypoint=entrypoint, submission_id=submission_id)

    home = storage.absolute(cfg.home.root)
    state = str(Path(_directory(cfg)) / name / "retrain.json")
    # The job runs this Python's mlsys: the same environment as the monitor, whatever PATH the job has.
    return Retrainer(name, home, retrain, state, submit, lambda submission_id: client().get_job_status(submission_id),
                     program=(sys.executable, "-m", "mlsys.cli.main"))


def learner_for(cfg: MlsysConfig, model: Optional[str] = None):
    """Online learning (``monitor.online.enabled``), or None: updates of the version the alias serves,
    each registered as a new version (an MLflow run of its own) and pushed to the alias."""
    from pathlib import Path

    from mlsys.errors import ConfigError
    from mlsys.monitor.learning import OnlineLearner

    online, name = cfg.monitor.online, _model(cfg, model)
    if not online.enabled:
        return None
    source = quality_source(cfg, name)
    alias = online.alias or cfg.registry.alias
    if source is None:
        raise ConfigError("monitor.online.enabled=true learns from the feature log: set serve.feature_logging.path "
                          "(the home is remote, so it has no default place)")
    if not alias:
        raise ConfigError("monitor.online.enabled=true pushes to an alias: set monitor.online.alias or registry.alias")
    state = str(Path(_directory(cfg)) / name / "online.json")
    return OnlineLearner(online, state, source, _serving_version(cfg, name, alias), _publisher(cfg, name, alias),
                         attribution_s=cfg.monitor.quality.attribution_s)


def _serving_version(cfg: MlsysConfig, name: str, alias: str):
    """``() -> (version, package)``: the alias's version; before its first push, ``registry.alias``'s."""
    from mlsys.errors import ModelNotFoundError
    from mlsys.registry import mlflow_store
    from mlsys.registry.package import read_package

    tracking = mlflow_store.tracking_uri(cfg.home)

    def base():
        try:
            resolved = mlflow_store.resolve(tracking, f"{name}@{alias}")
        except ModelNotFoundError:
            if not cfg.registry.alias or cfg.registry.alias == alias:
                raise
            resolved = mlflow_store.resolve(tracking, f"{name}@{cfg.registry.alias}")
        return resolved.version, read_package(resolved.source)

    return base


def _publisher(cfg: MlsysConfig, name: str, alias: str):
    """``(package folder, update) -> (version, pushed, line)``: an MLflow run of the update, the version it
    registers (tagged with its evaluation on the base's eval split), and the push."""
    import dataclasses
    import json

    from mlsys import storage
    from mlsys.registry import mlflow_store
    from mlsys.registry.mlflow_store import Tag
    from mlsys.registry.package import read_package
    from mlsys.serve.push import validate_and_push

    tracking = mlflow_store.tracking_uri(cfg.home)
    evaluate = dataclasses.replace(cfg.evaluate, infra=dataclasses.replace(cfg.evaluate.infra, enabled=cfg.monitor.online.infra_validation))

    def publish(path: str, update) -> tuple[str, bool, str]:
        from mlsys.evaluate.evaluation import evaluate_package

        client = mlflow_store.client(tracking)
        experiment = mlflow_store.ensure_experiment(tracking, cfg.pipeline.experiment, storage.join(cfg.home.root, "mlartifacts"))
        run = client.create_run(experiment, run_name=f"online-{name}-v{update.base_version}-{time.strftime('%Y%m%d-%H%M%S')}",
                                tags={Tag.STEP: "online_learning", Tag.WARM_START: f"{name}/{update.base_version}"})
        run_id = run.info.run_id
        for key in ("rows", "train_rows", "holdout_rows", "clicks", "auc_base", "auc_new"):
            if getattr(update, key) is not None:
                client.log_metric(run_id, f"online_{key}", float(getattr(update, key)))
        eval_uri = read_package(path).manifest["lineage"].get("eval")
        metrics = evaluate_package(path, eval_uri) if eval_uri and storage.exists(eval_uri) else {}
        tags = {Tag.WARM_START: f"{name}/{update.base_version}", "mlsys.online_learning": json.dumps(
            {"base_version": update.base_version, "rows": update.rows, "auc_base": update.auc_base, "auc_new": update.auc_new}),
            **{f"eval_{k}": round(v, 6) for k, v in metrics.items()}}
        version = mlflow_store.register(tracking, run_id, path, name, None, tags)
        outcome = validate_and_push(tracking, name, version.version, version.source, alias, eval_uri, evaluate, cfg.serve,
                                    via=f"online learning (MLflow run {run_id})", reason=update.reason)
        client.set_terminated(run_id)
        return version.version, bool(outcome["pushed"]), outcome["line"]

    return publish


def dashboard_url() -> str:
    """The connected cluster's Jobs API (its dashboard)."""
    import ray

    url = ray._private.worker.get_dashboard_url()
    if not url:
        from mlsys.errors import ConfigError

        raise ConfigError("monitor.retrain needs the Ray Jobs API: this cluster has no dashboard; set monitor.retrain.address")
    return url if "://" in url else f"http://{url}"


def freshness(cfg: MlsysConfig, model: str, now: float) -> dict[str, float]:
    """The freshness signals (:mod:`mlsys.monitor.freshness`) of one model's service, now."""
    from pathlib import Path

    from mlsys.monitor.freshness import freshness_signals, last_window_end, modified_at
    from mlsys.monitor.labels import labels_dir

    materialized = None
    if cfg.features.enabled:
        from mlsys.features.store import store_paths

        materialized = modified_at(store_paths(cfg.features, cfg.home.root).watermark)
    created = None
    if cfg.registry.alias:
        from mlsys.registry import mlflow_store

        try:
            created = mlflow_store.client(mlflow_store.tracking_uri(cfg.home)).get_model_version_by_alias(
                model, cfg.registry.alias).creation_timestamp / 1000.0
        except Exception:  # noqa: BLE001 - no such model or alias yet: no signal
            created = None
    labels = Path(cfg.monitor.quality.labels) if cfg.monitor.quality.labels else labels_dir(_directory(cfg), model)
    files = [labels] if labels.is_file() else list(labels.rglob("*.*")) if labels.is_dir() else []
    label_at = max((t for t in map(modified_at, map(str, files)) if t is not None), default=None)
    return freshness_signals(now, materialized, last_window_end(Path(_directory(cfg)) / model), created, label_at)


class Controller:
    """The monitor's loop: a tick every ``monitor.interval_s``, then the retrain trigger."""

    def __init__(self, cfg: MlsysConfig, model: Optional[str] = None):
        self.cfg, self.model = cfg, _model(cfg, model)
        self.monitor = monitor_for(cfg, model)
        self.retrainer = retrainer_for(cfg, model)
        self.learner = learner_for(cfg, model)
        self.ticks, self.last_error = 0, None
        self._stop = threading.Event()

    def step(self, now: Optional[float] = None, signals: Optional[dict] = None):
        """One tick (``signals``: others observed now), then the retrain trigger."""
        at = time.time() if now is None else now
        tick = self.monitor.tick(now=now, signals={**freshness(self.cfg, self.model, at), **(signals or {})})
        retrains = self.retrainer.consider(tick.transitions, now=now) if self.retrainer is not None else []
        if self.learner is not None:
            tick.update = self.learner.consider(now=now)
        self.ticks += 1
        return tick, retrains

    def loop(self, echo=print) -> None:
        while not self._stop.is_set():
            try:
                tick, retrains = self.step()
                for line in describe_tick(tick, retrains):
                    echo(line)
                self.last_error = None
            except Exception as e:  # noqa: BLE001 - a bad tick (a full disk, the registry away) is said, then retried
                self.last_error = f"{type(e).__name__}: {e}"
                echo(f"[monitor] tick failed ({self.last_error}); again in {self.cfg.monitor.interval_s:g}s")
            self._stop.wait(self.cfg.monitor.interval_s)

    def stop(self) -> None:
        self._stop.set()


class ControllerActor:
    """The controller on Ray (``mlsys monitor start``): the loop in a thread of a 0-CPU actor."""

    def __init__(self, overrides: list[str], model: Optional[str] = None):
        from mlsys.api.config import compose_config

        self.controller = Controller(compose_config(overrides), model)
        self._thread = threading.Thread(target=self.controller.loop, name="mlsys-monitor", daemon=True)
        self._thread.start()

    def state(self) -> dict:
        return {"model": self.controller.model, "ticks": self.controller.ticks, "last_error": self.controller.last_error,
                "alive": self._thread.is_alive()}

    def stop(self) -> None:
        self.controller.stop()
        self._thread.join(timeout=30)


def _actor_name(model: str) -> str:
    return f"mlsys-monitor-{model}"


def start(cfg: MlsysConfig, overrides: list[str], model: Optional[str] = None) -> str:
    import ray

    from mlsys.cluster import connect
    from mlsys.errors import ConfigError

    name = _model(cfg, model)
    if cfg.cluster.address == "local":
        raise ConfigError("mlsys monitor start leaves the monitor running on a Ray cluster (cluster.address=auto or an "
                          "address); the embedded Ray ends with this command: run `mlsys monitor run` instead")
    connect(cfg.cluster)
    actor = ray.remote(ControllerActor).options(
        name=_actor_name(name), namespace=NAMESPACE, lifetime="detached", get_if_exists=True, max_restarts=-1,
        num_cpus=0).remote(list(overrides), name)
    state = ray.get(actor.state.remote(), timeout=120)
    return (f"[monitor] {name}: monitor running on the cluster (actor {_actor_name(name)}, namespace {NAMESPACE}), "
            f"every {cfg.monitor.interval_s:g}s; {state['ticks']} ticks so far. `mlsys monitor status` shows what it sees")


def stop(cfg: MlsysConfig, model: Optional[str] = None) -> str:
    import ray

    from mlsys.cluster import connect

    name = _model(cfg, model)
    connect(cfg.cluster)
    try:
        actor = ray.get_actor(_actor_name(name), namespace=NAMESPACE)
    except ValueError:
        return f"[monitor] {name}: no monitor is running on this cluster"
    ray.get(actor.stop.remote(), timeout=60)
    ray.kill(actor, no_restart=True)
    return f"[monitor] {name}: monitor stopped (its state stays under {_directory(cfg)})"


def tick(cfg: MlsysConfig, model: Optional[str] = None) -> str:
    """One pass in this process; what it judged and what changed, one line each."""
    controller = Controller(cfg, model)
    lines = describe_tick(*controller.step())
    return "\n".join(lines) if lines else (
        f"[monitor] {controller.model}: no window ended since the last pass (windows of {cfg.serve.monitoring.window_s:g}s, "
        f"merged {cfg.monitor.grace_s:g}s after they end; parts under {_directory(cfg)})")


def run_forever(cfg: MlsysConfig, model: Optional[str] = None) -> None:
    import signal

    controller = Controller(cfg, model)

    def _stop(signum, frame):
        controller.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    print(f"[monitor] {controller.model}: a pass every {cfg.monitor.interval_s:g}s over {_directory(cfg)}; Ctrl-C stops")
    controller.loop()
    print("[monitor] stopped")


# -- what is printed ------------------------------------------------------------------------


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def _top(table: dict, measure: str) -> Optional[tuple[str, float]]:
    values = [(feature, m[measure]) for feature, m in table.items() if measure in m and feature != "score"]
    return max(values, key=lambda fv: fv[1]) if values else None


def describe_report(report) -> str:
    head = f"[monitor] window {_when(report.start)} {report.model} v{report.version}: {report.rows:,} rows, {report.requests:,} requests"
    if not report.judged:
        return head + " (too few rows to judge: monitor.min_rows)"
    parts = []
    for side, table in (("skew", report.skew), ("drift", report.drift)):
        for measure in ("linf", "psi"):
            top = _top(table, measure)
            if top:
                parts.append(f"{side} {measure} {top[1]:.3f} ({top[0]})")
    score = report.drift.get("score", {}).get("psi")
    if score is not None:
        parts.append(f"prediction drift psi {score:.3f}")
    if not report.baseline:
        parts.append("no training statistics: no skew")
    return head + ("; " + ", ".join(parts) if parts else "")


def describe_quality(w) -> str:
    auc = f"AUC {w.auc:.4f}" if w.auc is not None else "AUC n/a (one class)"
    offline = f" (offline {w.offline['auc']:.4f})" if "auc" in w.offline else ""
    return (f"[monitor] quality {_when(w.start)} {w.model} v{w.version}: {w.rows:,} impressions, {w.clicks:,} clicks "
            f"(CTR {w.ctr:.3f}); {auc}{offline}, logloss {w.logloss:.4f}")


def describe_tick(tick, retrains=()) -> list[str]:
    lines = [describe_report(r) for r in tick.reports] + [describe_quality(w) for w in tick.quality]
    lines += [f"[monitor] {t.message}" for t in tick.transitions if t.notifies]
    lines += [f"[monitor] retraining: Ray job {r.submission_id} ({r.reason})" for r in retrains]
    if getattr(tick, "update", None) is not None:
        lines.append(f"[monitor] {tick.update.line()}")
    return lines


def status(cfg: MlsysConfig, model: Optional[str] = None) -> str:
    """The alerts, each version's last window and the retrains, from the monitor's files."""
    import json
    from pathlib import Path

    from mlsys.monitor.alerts import Alerts, AlertState
    from mlsys.monitor.drift import WindowReport

    name, directory = _model(cfg, model), _directory(cfg)
    root = Path(directory) / name
    lines = [f"monitor of {name} ({root})"]
    alerts = Alerts.load(str(root / "alerts.json"), cfg.monitor.alerts)
    firing, pending = alerts.alerts(AlertState.firing), alerts.alerts(AlertState.pending)
    lines.append(f"alerts: {len(firing)} firing, {len(pending)} pending, {len(cfg.monitor.alerts)} rules")
    lines += [f"  {a.message}" for a in firing + pending]
    reports = sorted(root.glob("windows/*/*.report.json"))
    latest: dict = {}
    for path in reports:
        report = WindowReport.from_dict(json.loads(path.read_text()))
        if report.version not in latest or report.start > latest[report.version].start:
            latest[report.version] = report
    lines.append(f"windows: {len(reports)} judged" if reports else "windows: none judged yet (is serving sketching? serve.monitoring.enabled)")
    lines += ["  " + describe_report(r).removeprefix("[monitor] ") for r in sorted(latest.values(), key=lambda r: r.version)]
    online = root / "online.json"
    if online.exists():
        history = json.loads(online.read_text())["history"]
        pushed = sum(1 for u in history if u["pushed"])
        lines.append(f"online learning: {len(history)} updates, {pushed} pushed")
        lines += [f"  {_when(u['at'])} v{u['base_version']} -> {'v' + u['version'] if u.get('version') else 'no version'}: {u['reason']}"
                  for u in history[-5:]]
    retrain = root / "retrain.json"
    if retrain.exists():
        history = json.loads(retrain.read_text())["history"]
        lines.append(f"retrains: {len(history)}")
        lines += [f"  {_when(r['at'])} {r['submission_id']}: {r['status']}{' - ' + r['error'] if r.get('error') else ''} ({r['reason']})"
                  for r in history[-5:]]
    return "\n".join(lines)


def spans(cfg: MlsysConfig, feature: str, split: str = "train") -> str:
    """``mlsys monitor spans --feature F``: one line per statistics step that ran, oldest first."""
    from mlsys.monitor.spans import span_series
    from mlsys.registry import mlflow_store

    points = span_series(mlflow_store.tracking_uri(cfg.home), feature, split)
    if not points:
        return f"no statistics of a feature {feature!r} in {mlflow_store.tracking_uri(cfg.home)} (run the pipeline first)"
    lines = [f"{feature} ({split} split) across {len(points)} statistics runs, oldest first:"]
    for p in points:
        what = (", ".join(f"{v} {share:.1%}" for v, share in p.top[:4]) if p.top is not None else
                f"mean {p.mean:.4g}, std {p.std:.4g}, p50 {p.quantiles['p50']:.4g}" if p.mean is not None else "no values")
        lines.append(f"  {_when(p.at)}  {p.source or '?'} span {p.span or '-'}: {p.rows:,} rows, missing {p.missing_rate:.1%}; {what}")
    return "\n".join(lines)


def report(cfg: MlsysConfig, model: Optional[str] = None, out: Optional[str] = None) -> str:
    """``mlsys monitor report``: the monitor's files as one HTML page (plotly, offline)."""
    from pathlib import Path

    from mlsys.monitor.report import write_report

    name = _model(cfg, model)
    root = Path(_directory(cfg)) / name
    path = write_report(root, Path(out) if out else root / "report.html", title=f"Monitoring of {name}")
    return f"[monitor] {name}: report written to {path}"
