"""What the ``mlsys`` subcommands do, given a composed :class:`MlsysConfig`."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from typing import Callable

from mlsys.cli.config import MlsysConfig
from mlsys.pipeline.runner import PipelineResult


# The config sections pipeline steps may take (bound by type, see mlsys.pipeline.step).
PIPELINE_SECTIONS = ("data", "validation", "features", "model", "train", "registry")


def execute_pipeline(cfg: MlsysConfig, overrides: list[str], echo: Callable[[str], None] = print) -> PipelineResult:
    from mlsys.cluster import connect
    from mlsys.errors import ConfigError
    from mlsys.pipeline.ctr import PIPELINES
    from mlsys.pipeline.runner import PipelineRunner
    from mlsys.registry import mlflow_store
    from mlsys.train import loggers, warm_start

    if cfg.pipeline.name not in PIPELINES:
        raise ConfigError(f"pipeline.name={cfg.pipeline.name!r} is not one of {sorted(PIPELINES)}")
    pipeline = PIPELINES[cfg.pipeline.name]
    if cfg.pipeline.until:
        pipeline = pipeline.until(cfg.pipeline.until)
    sections = {name: getattr(cfg, name) for name in PIPELINE_SECTIONS}
    # Resolved once, before any step runs: the version an alias names now enters the fingerprints.
    sections["warm_start"] = warm_start.resolve(cfg.train.warm_start, mlflow_store.tracking_uri(cfg.home), cfg.model)
    runner = PipelineRunner(
        pipeline,
        sections,
        home=cfg.home.root,
        tracking_uri=mlflow_store.tracking_uri(cfg.home),
        experiment=cfg.pipeline.experiment,
        use_cache=cfg.pipeline.use_cache,
        echo=echo,
        connect=lambda: connect(cfg.cluster),
    )
    result = runner.run(overrides)
    echo(summary(result, runner.tracking_uri))
    steps = [loggers.StepMetrics(r.name, r.metrics) for r in result.steps]
    logged = loggers.log_pipeline(cfg.logger, f"{cfg.pipeline.name}-{result.run_id[:8]}", loggers.plain_config(cfg), steps, runner.home)
    if logged:
        echo(f"[logger] {cfg.logger.name.value} run: {logged}")
    return result


def summary(result: PipelineResult, tracking_uri: str) -> str:
    lines = [f"\n{'step':<10} {'status':<7} {'seconds':>8}  fingerprint"]
    for r in result.steps:
        lines.append(f"{r.name:<10} {r.status:<7} {r.seconds:>8.1f}  {r.fingerprint[:12]}")
    lines.append(f"pipeline wall time {result.seconds:.1f}s")
    for r in result.steps:
        if r.name == "evaluate":
            lines.append("eval: " + ", ".join(f"{n.removeprefix('eval_')} {v:.4f}" for n, v, _ in r.metrics if n != "eval_rows"))
        if r.name == "register":
            lines.append(f"registered model {r.outputs.model_name} version {r.outputs.version}")
    lines += [f"MLflow run id: {result.run_id}", f"tracking store: {tracking_uri}", f"artifacts: {result.home}/artifacts"]
    return "\n".join(lines)


def resolve_model(cfg: MlsysConfig):
    from mlsys.registry import mlflow_store

    return mlflow_store.resolve(mlflow_store.tracking_uri(cfg.home), cfg.serve.model)


def lineage(cfg: MlsysConfig) -> str:
    from mlsys.pipeline.lineage import format_lineage, walk
    from mlsys.registry import mlflow_store

    model = resolve_model(cfg)
    client = mlflow_store.client(mlflow_store.tracking_uri(cfg.home))
    title = f"{model.name} version {model.version} (package {model.source})"
    return format_lineage(title, walk(client, model.run_id))


def start_server(cfg: MlsysConfig, echo: Callable[[str], None] = print) -> str:
    from mlsys.cluster import connect
    from mlsys.serve import app

    model = resolve_model(cfg)
    app.check_port_free(cfg.serve.host, cfg.serve.port)
    store, log_dir = online_features(cfg)
    connect(cfg.cluster)
    url = app.start(cfg.serve, model.source, model.name, model.version, store, log_dir)
    routes = "POST /v1/rank, POST /v1/events, GET /v1/metrics, GET /healthz" if store else "POST /v1/rank, GET /v1/metrics, GET /healthz"
    echo(f"[serve] {model.name} version {model.version} at {url}  ({routes})")
    return url


def online_features(cfg: MlsysConfig):
    """The online store serving reads (None with features=none) and where the feature log goes."""
    from mlsys import storage
    from mlsys.features.feature_log import default_log_dir

    log_dir = cfg.serve.feature_logging.path or default_log_dir(cfg.features.project, cfg.home.root)
    if not cfg.features.enabled:
        return None, log_dir
    from mlsys.features.serving import OnlineStoreSpec, check_online_store

    check_online_store(cfg.features, cfg.home.root)
    home = storage.absolute(cfg.home.root)  # replicas may run in another directory
    return OnlineStoreSpec(cfg.features, home, cfg.data.history_length, cfg.data.click_threshold), log_dir


def serve_forever(cfg: MlsysConfig) -> None:
    from ray import serve

    import signal

    def _stop(signum, frame):
        raise KeyboardInterrupt

    start_server(cfg)
    signal.signal(signal.SIGTERM, _stop)  # after ray.init, which installs its own handlers
    print("[serve] press Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("[serve] shutting down")
    finally:
        serve.shutdown()


def post_json(url: str, body: dict, timeout: float = 30.0) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def demo_requests(result: PipelineResult, users: int = 3, candidates: int = 8) -> list[tuple[dict, set[int]]]:
    """Real requests: a few eval users, each with items they rated in eval, and which they clicked."""
    import pandas as pd

    frame = pd.read_parquet(result.output("transform").eval, columns=["user_id", "item_id", "label"])
    chosen = frame.groupby("user_id").filter(lambda g: g["label"].nunique() == 2)["user_id"].drop_duplicates()
    out = []
    for user in chosen.head(users):
        rows = frame[frame.user_id == user].head(candidates)
        clicked = {int(i) for i in rows.loc[rows.label > 0, "item_id"]}
        out.append(({"user_id": int(user), "candidates": [int(i) for i in rows.item_id], "k": 5}, clicked))
    return out


def demo(cfg: MlsysConfig, overrides: list[str]) -> None:
    import ray
    from ray import serve

    result = execute_pipeline(cfg, overrides)
    # Quiet access logs: the demo prints the answers itself.
    url = start_server(dataclasses.replace(cfg, serve=dataclasses.replace(cfg.serve, log_level="WARNING")))
    try:
        for body, clicked in demo_requests(result):
            answer = post_json(f"{url}/v1/rank", body)
            print(f"\nPOST {url}/v1/rank {json.dumps(body)}")
            for item in answer["items"]:
                mark = "  (clicked: rated >= 4 in the held-out data)" if item["item_id"] in clicked else ""
                print(f"  item {item['item_id']:>5}  score {item['score']:.4f}{mark}")
        print(f"\nMLflow run id: {result.run_id}\nartifacts: {result.home}/artifacts")
        print("Keep a server up with `mlsys serve`; see README.md for the HTTP API.")
    finally:
        serve.shutdown()
        ray.shutdown()
