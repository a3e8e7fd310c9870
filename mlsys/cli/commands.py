"""What the ``mlsys`` subcommands do, given a composed :class:`MlsysConfig`."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Callable

from mlsys.cli.config import MlsysConfig
from mlsys.pipeline.runner import PipelineResult


def execute_pipeline(cfg: MlsysConfig, overrides: list[str], echo: Callable[[str], None] = print) -> PipelineResult:
    from mlsys.cluster import connect
    from mlsys.errors import ConfigError
    from mlsys.pipeline.ctr import PIPELINES
    from mlsys.pipeline.runner import PipelineRunner
    from mlsys.registry import mlflow_store

    if cfg.pipeline.name not in PIPELINES:
        raise ConfigError(f"pipeline.name={cfg.pipeline.name!r} is not one of {sorted(PIPELINES)}")
    sections = {name: getattr(cfg, name) for name in ("data", "model", "train", "registry")}
    runner = PipelineRunner(
        PIPELINES[cfg.pipeline.name],
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


def start_server(cfg: MlsysConfig, echo: Callable[[str], None] = print) -> str:
    from mlsys.cluster import connect
    from mlsys.serve import app

    model = resolve_model(cfg)
    app.check_port_free(cfg.serve.host, cfg.serve.port)
    connect(cfg.cluster)
    url = app.start(cfg.serve, model.source, model.name, model.version)
    echo(f"[serve] {model.name} version {model.version} at {url}  (POST /v1/rank, GET /healthz)")
    return url


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


def demo_requests(result: PipelineResult, users: int = 3, candidates: int = 8) -> list[dict]:
    """Real requests: a few eval users, each with the items they rated in eval."""
    import pandas as pd

    frame = pd.read_parquet(result.output("transform").eval, columns=["user_id", "item_id", "label"])
    chosen = frame.groupby("user_id").filter(lambda g: g["label"].nunique() == 2)["user_id"].drop_duplicates()
    out = []
    for user in chosen.head(users):
        items = frame.loc[frame.user_id == user, "item_id"].head(candidates).tolist()
        out.append({"user_id": int(user), "candidates": [int(i) for i in items], "k": 5})
    return out


def demo(cfg: MlsysConfig, overrides: list[str]) -> None:
    import ray
    from ray import serve

    result = execute_pipeline(cfg, overrides)
    url = start_server(cfg)
    try:
        for body in demo_requests(result):
            answer = post_json(f"{url}/v1/rank", body)
            print(f"\nPOST {url}/v1/rank {json.dumps(body)}")
            for item in answer["items"]:
                print(f"  item {item['item_id']:>5}  score {item['score']:.4f}")
        print(f"\nMLflow run id: {result.run_id}\nartifacts: {result.home}/artifacts")
        print("Keep a server up with `mlsys serve`; see README.md for the HTTP API.")
    finally:
        serve.shutdown()
        ray.shutdown()
