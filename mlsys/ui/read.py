"""One read API over what mlsys records: MLflow (runs, steps, model versions, aliases) and ``MLSYS_HOME``
(statistics, anomalies, quarantine, the monitor's folder). Plain Python returning JSON-plain dicts; the
dashboard's routes (:mod:`mlsys.ui.app`) are thin shells over it, and the CLI's readers are the same
functions underneath (``pushes.history``, ``lineage.walk``, ``report.read_folder``, ``releases.read``)::

    home = Home.of(compose_config(["home.root=/data/mlsys"]))
    home.runs()[0]["steps_ran"], home.run(run_id)["steps"], home.models("ctr")["versions"]
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from mlsys import storage
from mlsys.errors import MlsysError
from mlsys.registry.mlflow_store import Tag


class NotFound(MlsysError):
    """A run, model, version or file the request names does not exist (the route answers 404)."""


def _finite(x: Any) -> Any:
    """JSON has no NaN or infinity: None instead (recursively)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _json_tag(tags: dict, name: str, default: Any) -> Any:
    try:
        return json.loads(tags[name])
    except (KeyError, ValueError):
        return default


@dataclass(frozen=True)
class Home:
    """Where one home's records are: the MLflow tracking URI, the home folder and its monitor folder."""

    tracking_uri: str
    root: str
    monitor_dir: str
    model: str = "ctr"
    experiment: str = "ctr"

    @classmethod
    def of(cls, cfg) -> "Home":
        from mlsys.monitor.config import monitor_dir
        from mlsys.registry import mlflow_store

        return cls(mlflow_store.tracking_uri(cfg.home), storage.absolute(cfg.home.root),
                   monitor_dir(cfg.serve.monitoring.path, cfg.home.root), cfg.registry.model_name, cfg.pipeline.experiment)

    def client(self):
        from mlsys.registry import mlflow_store

        return mlflow_store.client(self.tracking_uri)

    def _experiment_ids(self) -> list[str]:
        return [e.experiment_id for e in self.client().search_experiments()]

    # -- runs ---------------------------------------------------------------------------

    def runs(self, limit: int = 200) -> list[dict]:
        """The newest pipeline runs: status, start, wall time, steps ran, overrides, the evaluation's AUC."""
        ids = self._experiment_ids()
        if not ids:
            return []
        found = self.client().search_runs(ids, f"tags.`{Tag.PIPELINE}` LIKE '%'", max_results=limit, order_by=["attributes.start_time DESC"])
        return [self._run_row(r) for r in found]

    @staticmethod
    def _run_row(r) -> dict:
        m, tags = r.data.metrics, r.data.tags
        return _finite({
            "run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status, "experiment_id": r.info.experiment_id,
            "start": r.info.start_time / 1000.0, "end": (r.info.end_time or 0) / 1000.0 or None,
            "wall_s": m.get("pipeline_wall_s"), "steps_ran": m.get("steps_ran"),
            "pipeline": tags.get(Tag.PIPELINE, ""), "overrides": _json_tag(tags, Tag.OVERRIDES, []),
            "sweep": tags.get(Tag.SWEEP),
        })

    def _steps(self, run) -> list:
        found = self.client().search_runs([run.info.experiment_id], f"tags.`{Tag.PARENT}` = '{run.info.run_id}'", max_results=1000)
        return sorted(found, key=lambda s: s.info.start_time)

    def _pipeline_run(self, run_id: str):
        from mlflow.exceptions import MlflowException

        try:
            run = self.client().get_run(run_id)
        except MlflowException:
            raise NotFound(f"no run {run_id!r} in {self.tracking_uri}") from None
        if Tag.PIPELINE not in run.data.tags:
            raise NotFound(f"run {run_id!r} is not a pipeline run (a step's run? its pipeline is {run.data.tags.get(Tag.PARENT)})")
        return run

    def run(self, run_id: str) -> dict:
        """One pipeline run and its steps: ran, cached or failed, seconds, rows, why it ran, outputs, metrics;
        ``config``: the resolved config keys the steps read (their MLflow params), merged."""
        run = self._pipeline_run(run_id)
        steps, config = [], {}
        for s in self._steps(run):
            tags = s.data.tags
            status = "failed" if s.info.status == "FAILED" else "running" if s.info.status == "RUNNING" else (
                "cached" if tags.get(Tag.CACHED) == "true" else "ran")
            metrics = {k: v for k, v in s.data.metrics.items()}
            steps.append({
                "name": tags.get(Tag.STEP, s.info.run_name), "run_id": s.info.run_id, "status": status,
                "seconds": metrics.get("step_compute_s"), "rows": next((metrics[k] for k in ("rows_read", "train_rows", "eval_rows") if k in metrics), None),
                "fingerprint": tags.get(Tag.FINGERPRINT, ""), "cached_from": tags.get(Tag.CACHED_FROM),
                "reason": tags.get(Tag.REASON, ""), "outputs": _json_tag(tags, Tag.OUTPUTS, {}), "inputs": _json_tag(tags, Tag.INPUTS, {}),
                "metrics": metrics,
            })
            config.update(s.data.params)
        return _finite({**self._run_row(run), "steps": steps, "config": dict(sorted(config.items()))})

    def diff(self, a: str, b: str) -> dict:
        """Two runs' config keys and step metrics where they differ (and the keys only one has)."""
        ra, rb = self.run(a), self.run(b)

        def metrics(r: dict) -> dict:
            return {f"{s['name']}.{k}": v for s in r["steps"] for k, v in s["metrics"].items() if k != "step_compute_s"}

        def changed(x: dict, y: dict) -> list[dict]:
            return [{"key": k, "a": x.get(k), "b": y.get(k)} for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]

        ma, mb = metrics(ra), metrics(rb)
        return {"a": ra["run_id"], "b": rb["run_id"], "overrides": {"a": ra["overrides"], "b": rb["overrides"]},
                "config": changed(ra["config"], rb["config"]),
                "metrics": [{"key": k, "a": ma.get(k), "b": mb.get(k)} for k in sorted(set(ma) | set(mb))]}

    # -- data -----------------------------------------------------------------------------

    def data(self, run_id: str) -> dict:
        """A run's statistics per split (no sketches), its anomalies, and up to 100 quarantined rows."""
        steps = {s["name"]: s for s in self.run(run_id)["steps"]}
        out: dict[str, Any] = {"run_id": run_id, "splits": {}, "anomalies": None, "quarantine": None, "report": None}
        for split, uri in (steps.get("statistics", {}).get("outputs") or {}).items():
            out["splits"][split] = statistics(uri)
        validate = steps.get("validate", {}).get("outputs") or {}
        if validate.get("anomalies") and storage.exists(validate["anomalies"]):
            out["anomalies"] = storage.read_json(validate["anomalies"])
        out["report"] = validate.get("report") or None
        quarantine = (steps.get("ingest", {}).get("outputs") or {}).get("quarantine")
        if quarantine:
            out["quarantine"] = quarantined(quarantine)
        return _finite(out)

    def spans(self, feature: str, split: str = "train") -> list[dict]:
        """``feature`` across every statistics step that ran, oldest first (``mlsys monitor spans``)."""
        from mlsys.monitor.spans import span_series

        return _finite([asdict(p) for p in span_series(self.tracking_uri, feature, split)])

    # -- models, lineage, releases -----------------------------------------------------------

    def models(self, name: Optional[str] = None) -> dict:
        """Every version (aliases, metrics, the gate's findings, pushes) and the release in progress."""
        from mlsys.registry import pushes, releases

        name = name or self.model
        try:
            versions = pushes.history(self.tracking_uri, name)
        except MlsysError as e:
            raise NotFound(str(e)) from None
        try:
            release = asdict(releases.read(self.tracking_uri, name))
        except MlsysError:  # no champion yet: nothing is served
            release = None
        return _finite({"name": name, "versions": versions, "release": release})

    def lineage(self, name: str, version: str) -> dict:
        """The version back through its steps to the data: one node per step run, edges from input to user."""
        from mlsys.pipeline.lineage import walk
        from mlsys.registry import mlflow_store

        try:
            model = mlflow_store.resolve(self.tracking_uri, f"{name}/{version}")
        except MlsysError as e:
            raise NotFound(str(e)) from None
        nodes = walk(self.client(), model.run_id)
        by_output = {json.dumps(n.outputs): n.run_id for n in nodes}
        edges = [{"from": by_output[json.dumps(v)], "to": n.run_id, "input": k}
                 for n in nodes for k, v in n.inputs.items() if json.dumps(v) in by_output]
        pipeline = self.client().get_run(model.run_id).data.tags.get(Tag.PARENT)
        return {"name": name, "version": str(version), "package": model.source, "pipeline_run": pipeline,
                "nodes": [{"step": n.step, "run_id": n.run_id, "fingerprint": n.fingerprint, "cached_from": n.cached_from,
                           "outputs": n.outputs, "params": {k: v for k, v in n.params.items() if k.startswith(("data.", "model."))}}
                          for n in nodes],
                "edges": edges}

    def evaluation(self, name: str, version: str) -> dict:
        """What the gate saw of the version: metrics overall and per slice for it and the champion (with
        bootstrap intervals), the blessing decision, the pre-release estimate, and the HTML report."""
        lineage = self.lineage(name, version)
        out: dict[str, Any] = {"name": name, "version": str(version), "rows": [], "blessing": None, "estimate": None, "report": None}
        if not lineage["pipeline_run"]:
            return out
        bless = next((s for s in self.run(lineage["pipeline_run"])["steps"] if s["name"] == "bless"), None)
        outputs = (bless or {}).get("outputs") or {}
        for key, uri in (("rows", outputs.get("evaluation")), ("blessing", outputs.get("blessing")), ("estimate", outputs.get("estimate"))):
            if uri and storage.exists(uri):
                value = storage.read_json(uri)
                out[key] = value.get("rows", []) if key == "rows" and isinstance(value, dict) else value
        report = str(Path(outputs["evaluation"]).with_name("report.html")) if outputs.get("evaluation") else None
        out["report"] = report if report and storage.exists(report) else None
        return _finite(out)

    # -- tuning ----------------------------------------------------------------------------------

    def _optuna(self):
        path = Path(self.root) / "optuna.db"
        if not path.exists():
            return None
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.storages.RDBStorage(f"sqlite:///{path}")

    def studies(self) -> list[dict]:
        """The Optuna studies of the tune step (``<home>/optuna.db``), newest first."""
        import optuna

        storage_ = self._optuna()
        if storage_ is None:
            return []
        rows = []
        for s in optuna.get_all_study_summaries(storage_, include_best_trial=True):
            best = s.best_trial
            rows.append({"name": s.study_name, "direction": s.direction.name.lower(), "trials": s.n_trials,
                         "started": s.datetime_start.timestamp() if s.datetime_start else None,
                         "best_value": best.value if best else None, "best_params": best.params if best else {}})
        return _finite(sorted(rows, key=lambda r: r["started"] or 0, reverse=True))

    def study(self, name: str) -> dict:
        """One study's trials: state, value, parameters and the per-epoch values ASHA saw."""
        import optuna

        storage_ = self._optuna()
        try:
            study = optuna.load_study(study_name=name, storage=storage_) if storage_ is not None else None
        except KeyError:
            study = None
        if study is None:
            raise NotFound(f"no Optuna study {name!r} in {self.root}/optuna.db")
        trials = [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                   "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())}} for t in study.trials]
        return _finite({"name": name, "direction": study.direction.name.lower(), "trials": trials})

    def downstream(self, uri: str) -> list[dict]:
        """Every model version trained, at any distance, on the artifact ``uri`` (a dataset, a checkpoint)."""
        client, ids = self.client(), self._experiment_ids()
        seen, frontier, versions = set(), [uri], {}
        while frontier:
            needle = frontier.pop().replace("'", "")
            for r in client.search_runs(ids, f"tags.`{Tag.INPUTS}` LIKE '%{needle}%'", max_results=5000):
                if r.info.run_id in seen:
                    continue
                seen.add(r.info.run_id)
                outputs = _json_tag(r.data.tags, Tag.OUTPUTS, {})
                if r.data.tags.get(Tag.STEP) == "register" and outputs.get("version"):
                    versions[(outputs["model_name"], str(outputs["version"]))] = r.info.run_id
                frontier += [v for v in outputs.values() if isinstance(v, str) and "/" in v]
        return [{"name": n, "version": v, "run_id": run} for (n, v), run in sorted(versions.items(), key=lambda kv: int(kv[0][1]))]

    # -- features -------------------------------------------------------------------------------

    def features(self) -> dict:
        """Every Feast store under the home (``<home>/features/<project>/``, see
        :mod:`mlsys.features.store`): its views and service from the files beside it (no Feast import:
        it costs seconds), the last materialization per view and online store, the online tables' rows
        and the feature log's rate per hour; and per model the ``POST /v1/events`` received per hour
        (each pushed to the online store). No stores: no ``features=feast`` run in this home."""
        root = Path(self.root) / "features"
        repos = sorted(p.parent for p in root.glob("*/feature_store.yaml")) if root.is_dir() else []
        return _finite({"stores": [_store(repo) for repo in repos], "events": _event_rates(Path(self.monitor_dir))})

    # -- monitoring ---------------------------------------------------------------------------

    def monitoring(self, name: Optional[str] = None) -> dict:
        """The monitor's folder of ``name``: windows (drift and skew per feature, and the service's health:
        requests, 5xx and 4xx answers, error rate, p50 and p99 latency in ms, None above the last bucket),
        online quality against offline, alerts firing and past, retrains and online updates, and what could
        not be read."""
        from mlsys.monitor.report import counts, read_folder
        from mlsys.monitor.service import ServiceWindow

        folder = read_folder(Path(self.monitor_dir) / (name or self.model))
        return _finite({
            "model": folder.model, "summary": counts(folder),
            "windows": [{"version": r.version, "start": r.start, "end": r.end, "rows": r.rows, "judged": r.judged,
                         "drift": r.drift, "skew": r.skew, "service": ServiceWindow.from_dict(r.service).summary() if r.service else None}
                        for r in folder.reports],
            "quality": [asdict(q) for q in folder.quality],
            "alerts": [{**asdict(a), "state": a.state.value} for a in folder.alerts or []],
            "events": [{**asdict(a), "state": a.state.value, "previous": previous} for a, previous in folder.events],
            "retrains": [asdict(r) for r in folder.retrain.history] if folder.retrain else [],
            "online_updates": (folder.online or {}).get("history", []),
            "unreadable": folder.unreadable,
        })


def statistics(uri: str) -> dict:
    """A :class:`~mlsys.data.statistics.DatasetStatistics` file without its sketches."""
    from mlsys.data.statistics import DatasetStatistics

    if not storage.exists(uri):
        raise NotFound(f"no statistics at {uri}")
    stats = DatasetStatistics.from_json(storage.read_text(uri))
    return _finite({"rows": stats.rows, "name": stats.name,
                    "features": {k: {**{f: v for f, v in asdict(s).items() if f != "sketches"}, "kind": s.kind.value}
                                 for k, s in stats.features.items()}})


def quarantined(uri: str, limit: int = 100) -> dict:
    """How many rows ingest quarantined, by reason, and the first ``limit`` of them."""
    import pyarrow.dataset as pads

    try:
        table = pads.dataset(uri, format="parquet").to_table()
    except (FileNotFoundError, OSError):
        return {"rows": 0, "by_reason": {}, "sample": []}
    frame = table.to_pandas()
    by_reason = frame["reason"].value_counts().to_dict() if "reason" in frame else {}
    return {"rows": len(frame), "by_reason": {str(k): int(v) for k, v in by_reason.items()},
            "sample": json.loads(frame.head(limit).to_json(orient="records"))}


def _store(repo: Path) -> dict:
    """One Feast repo under the home, read from its files."""
    import yaml

    from mlsys.features.definitions import PUSH_SOURCES, RANKING_SERVICE, TIMESTAMP, VIEWS

    config = yaml.safe_load((repo / "feature_store.yaml").read_text()) or {}
    project, online = config.get("project", repo.name), config.get("online_store") or {}
    order = {v: i for i, v in enumerate(VIEWS)}
    paths = sorted((repo / "sources").glob("*.parquet"), key=lambda p: (order.get(p.stem, len(order)), p.stem))
    views = [_view(path, TIMESTAMP, PUSH_SOURCES.get(path.stem)) for path in paths]
    materialized = []
    for path in sorted(repo.glob("watermark-*.json")):  # one per online store (sqlite, redis-<host>-<port>)
        marks = storage.read_json(str(path))
        materialized.append({"online": path.stem.removeprefix("watermark-"), "at": path.stat().st_mtime,
                             "watermarks": {view: _epoch(ts) for view, ts in marks.items()}})
    kind = online.get("type", "sqlite")
    state = (_sqlite_rows(online.get("path"), project) if kind == "sqlite"
             else _redis_rows(online.get("connection_string", ""), project, [v["name"] for v in views]) if kind == "redis" else {})
    return {"project": project, "path": str(repo), "online": {"type": kind, "where": online.get("path") or online.get("connection_string"),
                                                               "rows": None, "complete": True, "error": None, **(state or {})},
            "offline": (config.get("offline_store") or {}).get("type"), "views": views,
            "services": [{"name": RANKING_SERVICE, "views": [v["name"] for v in views]}] if views else [],
            "materialized": materialized, "logging": _log_rates(repo / "feature_log")}


def _view(path: Path, timestamp: str, push: Optional[str]) -> dict:
    """A view from its offline Parquet source: entity key, typed fields, rows, newest row."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from mlsys.data.feature_schema import ITEM, USER

    schema = pq.read_schema(path)
    key = next((k for k in (USER, ITEM) if k in schema.names), None)
    newest = pc.max(pq.read_table(path, columns=[timestamp])[timestamp]).as_py() if timestamp in schema.names else None
    return {"name": path.stem, "entity": key, "source": str(path), "push_source": push,
            "fields": [{"name": f.name, "type": str(f.type)} for f in schema if f.name not in (key, timestamp)],
            "rows": pq.read_metadata(path).num_rows, "newest": newest.timestamp() if newest else None}


def _epoch(iso: str) -> Optional[float]:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return None


def _sqlite_rows(path: Optional[str], project: str) -> Optional[dict]:
    """``{"rows"}``: entity rows per view table of Feast's SQLite online store (``<project>_<view>``), read-only."""
    import sqlite3

    if not path or not Path(path).is_file():
        return None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'") if n.startswith(f"{project}_")]
        return {"rows": {n.removeprefix(f"{project}_"): db.execute(f'SELECT COUNT(DISTINCT entity_key) FROM "{n}"').fetchone()[0]
                         for n in names}}


REDIS_SCAN_LIMIT = 100_000  # entity keys counted per page load at most; past it the counts are lower bounds


def _redis_rows(where: str, project: str, views: list[str], limit: int = REDIS_SCAN_LIMIT) -> dict:
    """``{"rows", "complete", "error"}`` of Feast's Redis online store at ``host:port`` (its layout, see
    :class:`mlsys.features.online.RedisTables`: a hash per entity key ending in the project's name, a
    ``_ts:<view>`` field per view it holds). A bounded SCAN (``complete`` false past ``limit`` keys), read
    only; an unreachable server is said, not raised (the page still shows the rest)."""
    import redis

    host, _, rest = where.partition(":")
    port = rest.split(",")[0]
    rows, scanned = dict.fromkeys(views, 0), 0
    try:
        client = redis.Redis(host=host or "127.0.0.1", port=int(port or 6379), socket_timeout=2, socket_connect_timeout=2)
        batch = []
        for key in client.scan_iter(match=f"*{project}".encode(), count=1000):
            batch.append(key)
            scanned += 1
            if len(batch) == 1000 or scanned >= limit:
                _count_views(client, batch, rows)
                batch = []
            if scanned >= limit:
                break
        _count_views(client, batch, rows)
    except (redis.RedisError, OSError, ValueError) as e:
        return {"rows": None, "complete": False, "error": f"{type(e).__name__}: {e}"}
    return {"rows": rows, "complete": scanned < limit, "error": None}


def _count_views(client, keys: list, rows: dict) -> None:
    if not keys:
        return
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            for view in rows:
                pipe.hexists(key, f"_ts:{view}")
        held = iter(pipe.execute())
    for _ in keys:
        for view in rows:
            rows[view] += bool(next(held))


def _per_hour(times) -> list[dict]:
    """``[{"hour": epoch s, "count": n}]`` of pandas UTC timestamps, oldest first."""
    import pandas as pd

    hours = pd.to_datetime(times, utc=True).dt.floor("h").value_counts().sort_index()
    return [{"hour": t.timestamp(), "count": int(n)} for t, n in hours.items()]


def _log_rates(directory: Path) -> dict:
    """The feature log's logged requests and rows per hour (its ``logged_at`` column only)."""
    import pyarrow.dataset as pads

    files = sorted(str(p) for p in directory.rglob("part-*.parquet")) if directory.is_dir() else []
    if not files:
        return {"rows": 0, "requests": 0, "per_hour": []}
    frame = pads.dataset(files, format="parquet").to_table(columns=["request_id", "logged_at"]).to_pandas()
    first = frame.drop_duplicates("request_id")
    return {"rows": len(frame), "requests": len(first), "per_hour": _per_hour(first["logged_at"])}


def _event_rates(monitor_dir: Path) -> dict:
    """``POST /v1/events`` received per model (each pushed to the online store and kept as a label), per hour."""
    import pandas as pd

    from mlsys.monitor.labels import labels_dir, read_labels

    out = {}
    for model in sorted(p.name for p in monitor_dir.iterdir() if p.is_dir()) if monitor_dir.is_dir() else []:
        labels = read_labels(str(labels_dir(str(monitor_dir), model)))
        if labels is not None:
            out[model] = {"events": len(labels), "per_hour": _per_hour(pd.to_datetime(labels["timestamp"], unit="s", utc=True))}
    return out
