"""What the ``mlsys`` subcommands do beyond calling :mod:`mlsys.api`: stay up until a signal, the demo."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request

from mlsys.api.config import MlsysConfig
from mlsys.api.pipeline import execute_pipeline
from mlsys.api.serving import start_server
from mlsys.pipeline.runner import PipelineResult


def serve_forever(cfg: MlsysConfig) -> None:
    """``mlsys serve``: the ranking app until Ctrl-C or SIGTERM, then removed."""
    start_server(cfg)
    _until_stopped("serve", lambda: stop_serving(cfg, cfg.serve.app_name))


def ui(cfg: MlsysConfig) -> None:
    """``mlsys ui``: the dashboard in this process, or on a cluster as a Serve application until Ctrl-C
    or SIGTERM, then removed (``ui.mode``)."""
    from mlsys.ui import app

    if not app.on_serve(cfg):
        app.serve_forever(cfg)
        return
    app.deploy(cfg)
    _until_stopped("ui", lambda: stop_serving(cfg, app.APP_NAME))


def _until_stopped(tag: str, stop) -> None:
    import signal

    def _stop(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own handlers
        signal.signal(sig, _stop)
    print(f"[{tag}] press Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print(f"[{tag}] shutting down")
    finally:
        stop()


def stop_serving(cfg: MlsysConfig, app_name: str) -> None:
    """Remove the app: on a cluster, delete ``app_name`` (other apps of its Serve keep serving); on the
    embedded Ray, end that Ray.

    On the embedded Ray ``serve.shutdown()`` adds nothing but Ray's ``Task
    ServeController.graceful_shutdown failed ... killed by ray.kill`` warning
    (the controller kills itself while its task is awaited); ``ray.shutdown()``
    stops the proxy, the replicas and the controller with the cluster.
    """
    import ray

    if cfg.cluster.address != "local":
        from ray import serve

        serve.delete(app_name)
    ray.shutdown()


def predict(cfg: MlsysConfig, model: str | None, input: str | None, output: str | None) -> None:
    """``mlsys predict``: the flags, where given, replace ``predict.model``/``input``/``output`` (paths need no Hydra quoting)."""
    from mlsys.api.predict import predict as run_predict

    given = {k: v for k, v in (("model", model), ("input", input), ("output", output)) if v is not None}
    run_predict(dataclasses.replace(cfg, predict=dataclasses.replace(cfg.predict, **given)))


def release(cfg: MlsysConfig, args) -> str:
    """``mlsys release canary|status|promote|rollback``: one line (or the status table) to print."""
    from mlsys.api import releases

    if args.action == "canary":
        return releases.start(cfg, args.model, args.version, "shadow" if args.shadow else "canary", args.percent or 0.0)
    return getattr(releases, args.action)(cfg, args.model)


def model(cfg: MlsysConfig, args) -> str:
    """``mlsys model history|push|rollback``."""
    from mlsys.api import models

    if args.action == "push":
        return models.push(cfg, args.model, args.version)
    if args.action == "rollback":
        return models.rollback(cfg, args.model, args.to)
    return models.history(cfg, args.model)


def monitor(cfg: MlsysConfig, args) -> None:
    """``mlsys monitor tick|run|start|stop|status|spans|report``."""
    from mlsys.api import monitor as api_monitor

    if args.action == "run":
        api_monitor.run_forever(cfg, args.model)
    elif args.action == "start":
        print(api_monitor.start(cfg, args.overrides, args.model))
    elif args.action == "spans":
        print(api_monitor.spans(cfg, args.feature))
    elif args.action == "report":
        print(api_monitor.report(cfg, args.model, args.out))
    else:
        print(getattr(api_monitor, args.action)(cfg, args.model))


def post_json(url: str, body: dict, timeout: float = 30.0) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def demo_requests(result: PipelineResult, context: tuple[str, ...] = (), users: int = 3, candidates: int = 8) -> list[tuple[dict, set[int]]]:
    """Real requests: a few eval users, each with items of their eval events (and the first one's
    ``context`` features), and which of them they clicked."""
    import numpy as np
    import pandas as pd

    frame = pd.read_parquet(result.output("transform").eval, columns=["user_id", "item_id", "label", *context])
    chosen = frame.groupby("user_id").filter(lambda g: g["label"].nunique() == 2)["user_id"].drop_duplicates()
    out = []
    for user in chosen.head(users):
        rows = frame[frame.user_id == user].head(candidates)
        clicked = {int(i) for i in rows.loc[rows.label > 0, "item_id"]}
        body = {"user_id": int(user), "candidates": [int(i) for i in rows.item_id], "k": 5}
        if context:
            first = rows.iloc[0]
            values = {c: list(first[c]) if isinstance(first[c], (list, np.ndarray)) else first[c] for c in context}
            body["context"] = {c: None if isinstance(v, float) and np.isnan(v) else (v.item() if hasattr(v, "item") else v)
                               for c, v in values.items()}
        out.append((body, clicked))
    return out


def demo(cfg: MlsysConfig, overrides: list[str]) -> None:
    from mlsys.data.feature_schema import FeatureSchema

    result = execute_pipeline(cfg, overrides)
    # Quiet access logs: the demo prints the answers itself.
    url = start_server(dataclasses.replace(cfg, serve=dataclasses.replace(cfg.serve, log_level="WARNING")))
    try:
        schema = FeatureSchema.of(cfg.data)
        target, column = schema.label_source
        why = f"{column} >= {schema.click_threshold:g}" if target == "rating" else f"{column} = 1"
        for body, clicked in demo_requests(result, schema.context):
            answer = post_json(f"{url}/v1/rank", body)
            print(f"\nPOST {url}/v1/rank {json.dumps(body)}")
            for item in answer["items"]:
                mark = f"  (clicked: {why} in the held-out data)" if item["item_id"] in clicked else ""
                print(f"  item {item['item_id']:>5}  score {item['score']:.4f}{mark}")
        print(f"\nMLflow run id: {result.run_id}\nartifacts: {result.home}/artifacts")
        print("Keep a server up with `mlsys serve`; see README.md for the HTTP API.")
    finally:
        stop_serving(cfg, cfg.serve.app_name)
