"""Infra validation on Ray Serve: a package deployed in a sandbox app, called over HTTP, before a push.

The sandbox is the production app (:func:`mlsys.serve.app.build_app`, the builder ``mlsys serve``
and Serve config files use) under its own application name and route prefix, one replica per
deployment, no feature log, features from the package's tables. Where this Ray has no Serve yet
(the embedded default) Serve starts on a free port for the sandbox and stops after it; on a
cluster whose Serve already runs production, the sandbox is another application on the same
proxy, beside production, under ``/sandbox/<model>/<version>``. Canned requests drawn from the
eval data go to it over HTTP and its answers are judged against the offline scorer (the
package's preprocessor on raw feature rows, :mod:`mlsys.evaluate.infra`).

>>> validate_in_sandbox(source, "ctr", "4", eval_uri, cfg.serve, cfg.evaluate.infra).line()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import socket
import time

import numpy as np
import pandas as pd

from mlsys.evaluate.config import InfraValidationConfig
from mlsys.evaluate.infra import InfraValidation, judge, refused
from mlsys.serve.config import DeploymentConfig, ServeConfig


def canned_requests(eval_uri: str | None, package, requests: int, candidates: int) -> list[dict]:
    """``/v1/rank`` bodies: the first ``requests`` eval users with their eval items (and the first
    row's request context, where the schema has one). Without eval data (``eval_uri`` None or gone):
    the package's first users, each with its first items."""
    from mlsys import storage

    context = tuple(package.preprocessor.schema.context)
    if not eval_uri or not storage.exists(eval_uri):
        items = [int(i) for i in package.items["item_id"].head(candidates)]
        return [{"user_id": int(u), "candidates": items} for u in package.users["user_id"].head(requests)]
    frame = pd.read_parquet(eval_uri, columns=["user_id", "item_id", *context])
    bodies = []
    for user, rows in frame.groupby("user_id", sort=True):
        rows = rows.drop_duplicates("item_id").head(candidates)
        body = {"user_id": int(user), "candidates": [int(i) for i in rows.item_id]}
        if context:
            first = rows.iloc[0]
            body["context"] = {c: _json(first[c]) for c in context}
        bodies.append(body)
        if len(bodies) == requests:
            break
    return bodies


def _json(value):
    if isinstance(value, (list, np.ndarray)):
        return [_json(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def offline_scores(model, bodies: list[dict]) -> list[dict[int, float]]:
    """Item -> score per request, from raw feature rows through the package's preprocessor (the evaluate path)."""
    out = []
    for body in bodies:
        frame, _, _ = model.request_frame(body["user_id"], body["candidates"], body.get("context"))
        out.append(dict(zip(body["candidates"], (float(s) for s in model.score_frame(frame)))))
    return out


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _sandbox_config(cfg: ServeConfig, model_name: str, version: str) -> ServeConfig:
    one = DeploymentConfig(num_replicas=1)
    return dataclasses.replace(
        cfg, app_name=f"sandbox-{model_name}-{version}", route_prefix=f"/sandbox/{model_name}/{version}", log_level="WARNING",
        ingress=dataclasses.replace(cfg.ingress, num_replicas=1, autoscaling=one.autoscaling),
        embedding=dataclasses.replace(cfg.embedding, num_replicas=1, autoscaling=one.autoscaling),
        dense=dataclasses.replace(cfg.dense, num_replicas=1, autoscaling=one.autoscaling),
        feature_logging=dataclasses.replace(cfg.feature_logging, enabled=False),
        monitoring=dataclasses.replace(cfg.monitoring, enabled=False))  # canned requests are not traffic


def _call(session, url: str, body: dict, timeout: float) -> tuple[dict[int, float] | str, float]:
    t0 = time.perf_counter()
    try:
        r = session.post(url, json=body, timeout=timeout)
        answer = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
    except Exception as e:  # a dropped connection is a failed request too
        return f"{type(e).__name__}: {e}", (time.perf_counter() - t0) * 1000
    ms = (time.perf_counter() - t0) * 1000
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {answer}", ms
    return {int(i["item_id"]): float(i["score"]) for i in answer["items"]}, ms


def _answers(session, url: str, timeout_s: float) -> bool:
    """Poll until ``url`` answers 200: ``serve.run`` returns when the app's replicas run, which can be
    before the HTTP proxy listens (seen on a loaded 2-CPU machine: every request refused)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if session.get(url, timeout=10).status_code == 200:
                return True
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    return False


def validate_in_sandbox(package_uri: str, model_name: str, version: str, eval_uri: str, serve_cfg: ServeConfig,
                        cfg: InfraValidationConfig, echo=print) -> InfraValidation:
    """Deploy ``package_uri`` in a sandbox app, send ``cfg.requests`` canned requests, judge the answers."""
    import requests
    from ray import serve

    from mlsys.registry.package import read_package
    from mlsys.serve import app
    from mlsys.serve.ranker import RankingModel

    try:
        model = RankingModel(read_package(package_uri), version=version)
    except Exception as e:  # the package itself: a checksum, a missing file, a graph ONNX Runtime refuses
        return refused(f"the package does not load: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    bodies = canned_requests(eval_uri, model.package, cfg.requests, cfg.candidates)
    try:
        expected = offline_scores(model, bodies)
    except Exception as e:  # it loads but cannot score: what every replica would answer
        return refused(f"the package does not score offline: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    sandbox = _sandbox_config(serve_cfg, model_name, version)
    port = app.running_serve_port()
    started = port is None
    if started:
        port = _free_port(serve_cfg.host)
        serve.start(http_options={"host": serve_cfg.host, "port": port}, logging_config={"log_level": "WARNING"})
    url = f"http://{serve_cfg.host}:{port}{sandbox.route_prefix}"
    echo(f"[infra] deploying {model_name} version {version} in a sandbox app at {url}")
    try:
        try:
            serve.run(app.build_app(sandbox, package_uri, model_name, version), name=sandbox.app_name, route_prefix=sandbox.route_prefix)
        except Exception as e:  # Serve's DeploymentFailed and friends: the replica could not start
            return refused(f"the sandbox app did not deploy: {type(e).__name__}: {str(e).splitlines()[0][:300]}", url)
        session = requests.Session()
        if not _answers(session, f"{url}/healthz", cfg.timeout_s):
            return refused(f"the sandbox app deployed but {url}/healthz did not answer within evaluate.infra.timeout_s="
                           f"{cfg.timeout_s:g} s", url)
        for body in bodies[:3]:  # warm-up: first calls load lazily; not timed
            _call(session, f"{url}/v1/rank", body, cfg.timeout_s)
        served, latencies = zip(*(_call(session, f"{url}/v1/rank", body, cfg.timeout_s) for body in bodies))
        return judge(expected, list(served), list(latencies), cfg, url)
    finally:
        try:
            serve.delete(sandbox.app_name)
        except Exception as e:  # never hide the verdict behind a cleanup error
            echo(f"[infra] could not delete the sandbox app {sandbox.app_name}: {e}")
        if started:
            app.shutdown_serve()  # Serve keeps the HTTP port of its first start: leave none behind
