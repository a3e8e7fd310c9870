"""mlsys.serve.graph and mlsys.serve.config: the graph's stages without a cluster, and what `auto` picks."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from fastapi import FastAPI, HTTPException, Request  # module level: the test app's annotations are strings

from mlsys.data.preprocessor import CtrPreprocessor
from mlsys.errors import ConfigError, VersionMismatchError
from mlsys.registry.package import read_package, write_package
from mlsys.registry.scoring import PackageScorer
from mlsys.serve.config import AutoscalingConfig, DeploymentConfig, Graph, ServeConfig
from mlsys.serve.graph import DenseStage, Embedded, EmbeddingStage, FusedStage, concat_rows, package_identity, split_rows
from tests.schemas import movielens_like
from tests.unit.test_package import ITEMS, MODEL_CONFIG, USERS, _model, _train_frame

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    pre = CtrPreprocessor(movielens_like(history_length=3, multi_hot_length=2), min_count=1).fit_frame(_train_frame())
    directory = write_package(tmp_path_factory.mktemp("pkg") / "p", model=_model(pre), model_config=MODEL_CONFIG,
                              preprocessor=pre, users=USERS, items=ITEMS, lineage={})
    return read_package(str(directory))


def _requests(package, n=3):
    frame = _train_frame(40)
    pre = package.preprocessor
    return [pre.transform_batch(frame.iloc[i * 7 : i * 7 + 3 + i]) for i in range(n)]


def test_split_stages_score_a_batch_of_requests_as_the_fused_graph(package):
    requests = _requests(package)
    embedded = [EmbeddingStage(package)(r) for r in requests]
    split = DenseStage(package).score(embedded)
    fused = FusedStage(PackageScorer(package)).score(requests)
    assert [len(s) for s in split] == [len(next(iter(r.values()))) for r in requests]
    for a, b in zip(split, fused):
        np.testing.assert_allclose(a, b, atol=1e-5)
    one_by_one = [FusedStage(PackageScorer(package)).score([r])[0] for r in requests]
    for a, b in zip(fused, one_by_one):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_the_dense_half_refuses_rows_embedded_by_another_version(package, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(package.path, other)
    manifest = dict(package.manifest, files={**package.manifest["files"], "x": "0" * 64})
    assert package_identity(package) != package_identity(type(package)(**{**package.__dict__, "manifest": manifest}))
    embedded = EmbeddingStage(package)(_requests(package, 1)[0])
    stranger = Embedded("0123456789abcdef", embedded.tensors)
    with pytest.raises(VersionMismatchError, match="move together"):
        DenseStage(package).score([embedded, stranger])


def test_rows_stack_and_split_back():
    parts = [{"a": np.arange(2)}, {"a": np.arange(3)}, {"a": np.arange(1)}]
    stacked, sizes = concat_rows(parts)
    assert sizes == [2, 3, 1] and stacked["a"].tolist() == [0, 1, 0, 1, 2, 0]
    assert [s.tolist() for s in split_rows(stacked["a"], sizes)] == [[0, 1], [0, 1, 2], [0]]


def test_auto_is_split_only_with_a_gpu_for_the_dense_part():
    assert ServeConfig().resolved_graph() is Graph.fused
    assert ServeConfig(dense=DeploymentConfig(num_gpus=1)).resolved_graph() is Graph.split
    assert ServeConfig(graph="split").resolved_graph() is Graph.split
    assert ServeConfig(graph="fused", dense=DeploymentConfig(num_gpus=1)).resolved_graph() is Graph.fused


def test_deployment_options_come_from_config():
    assert DeploymentConfig(num_replicas=2, num_cpus=1).options() == {
        "num_replicas": 2, "max_ongoing_requests": 64, "ray_actor_options": {"num_cpus": 1, "num_gpus": 0.0}}
    auto = DeploymentConfig(autoscaling=AutoscalingConfig(min_replicas=1, max_replicas=4)).options()
    assert auto["autoscaling_config"]["max_replicas"] == 4 and "num_replicas" not in auto
    from ray.serve.config import AutoscalingConfig as ServeAutoscaling

    quick = DeploymentConfig(autoscaling=AutoscalingConfig(max_replicas=4, look_back_period_s=10)).options()
    assert ServeAutoscaling(**quick["autoscaling_config"]).look_back_period_s == 10  # every key is one Serve takes
    with pytest.raises(ConfigError, match="serve.dense.autoscaling.look_back_period_s"):
        ServeConfig(dense=DeploymentConfig(autoscaling=AutoscalingConfig(max_replicas=2, look_back_period_s=0)))
    with pytest.raises(ConfigError, match="serve.embedding.autoscaling.min_replicas"):
        ServeConfig(embedding=DeploymentConfig(autoscaling=AutoscalingConfig(min_replicas=5, max_replicas=2)))
    with pytest.raises(ConfigError, match="serve.dense.num_gpus"):
        ServeConfig(dense=DeploymentConfig(num_gpus=-1))
    with pytest.raises(ValueError):
        ServeConfig(graph="sideways")


def test_replicas_memory_and_custom_resources_come_from_config():
    from mlsys.serve.sandbox import _sandbox_config

    dense = DeploymentConfig(num_gpus=1, memory=2**30, resources={"gpu_node": 1})
    assert dense.options()["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 1, "memory": 2**30, "resources": {"gpu_node": 1}}
    assert "resources" not in DeploymentConfig().options()["ray_actor_options"]
    sandboxed = _sandbox_config(ServeConfig(dense=dense), "ctr", "3").dense  # infra validation: where serving would run
    assert (sandboxed.memory, sandboxed.resources, sandboxed.num_replicas) == (2**30, {"gpu_node": 1}, 1)
    with pytest.raises(ConfigError, match=r"serve.dense.resources.GPU=1 must be set by serve.dense.num_gpus instead"):
        ServeConfig(dense=DeploymentConfig(resources={"GPU": 1}))
    with pytest.raises(ConfigError, match=r"serve.ingress.resources.worker=-1 must be >= 0"):
        ServeConfig(ingress=DeploymentConfig(resources={"worker": -1}))
    with pytest.raises(ConfigError, match=r"serve.embedding.memory=0 must be > 0 bytes"):
        ServeConfig(embedding=DeploymentConfig(memory=0))


@pytest.mark.parametrize("preset, expected", [(None, "1"), ("0", "0")])
def test_haproxy_brings_serves_throughput_optimized_mode_to_the_ray_it_starts(monkeypatch, preset, expected):
    """serve.proxy=haproxy sets both of Serve's variables for an embedded Ray; an explicit
    RAY_SERVE_THROUGHPUT_OPTIMIZED=0 is kept; a Ray already running, or the default proxy, is left alone."""
    from mlsys.serve.app import HAPROXY_ENV, THROUGHPUT_ENV, choose_proxy
    from mlsys.serve.config import Proxy

    for name in (HAPROXY_ENV, THROUGHPUT_ENV):  # set first so that monkeypatch restores them as they were: absent or not
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    choose_proxy(ServeConfig(proxy=Proxy.haproxy), starts_ray=False)
    choose_proxy(ServeConfig(), starts_ray=True)
    assert HAPROXY_ENV not in os.environ and THROUGHPUT_ENV not in os.environ
    if preset is not None:
        monkeypatch.setenv(THROUGHPUT_ENV, preset)
    choose_proxy(ServeConfig(proxy=Proxy.haproxy), starts_ray=True)
    assert (os.environ[HAPROXY_ENV], os.environ[THROUGHPUT_ENV]) == ("1", expected)


def test_the_apps_guard_refuses_oversized_bodies_answers_bugs_as_json_and_counts_the_answering_variants_errors():
    """mlsys.serve.app.Guard, the plain-ASGI outer layer of the serving app, on a small app of its own."""
    from fastapi.testclient import TestClient

    from mlsys.serve.app import Guard
    from mlsys.serve.metrics import REPLICA

    class Seen:  # where the guard counts: the variant's ServingMetrics in the app
        def __init__(self):
            self.counted = []

        def count(self, name, n=1, route="", status=""):
            self.counted.append((name, route, status))

    variant, replica = Seen(), Seen()
    app = FastAPI()
    app.add_middleware(Guard)

    @app.post("/v1/rank")
    async def rank(request: Request):
        request.state.metrics = variant
        body = await request.json()
        if body.get("fail"):
            raise RuntimeError("a bug")
        if body.get("refuse"):
            raise HTTPException(status_code=409, detail="refused")
        return {"ok": True}

    @app.post("/v2/models/ctr/infer")
    async def infer():
        raise ValueError("another bug")

    saved = REPLICA.max_body_bytes, REPLICA.metrics
    REPLICA.max_body_bytes, REPLICA.metrics = 100, replica
    try:
        client = TestClient(app)
        assert client.post("/v1/rank", json={}).json() == {"ok": True}
        answer = client.post("/v1/rank", json={"fail": True})
        assert answer.status_code == 500 and answer.json()["detail"].startswith("internal error (RuntimeError)")
        assert client.post("/v1/rank", json={"refuse": True}).status_code == 409
        answer = client.post("/v2/models/ctr/infer", json={})
        assert answer.status_code == 500 and answer.json()["error"].startswith("internal error (ValueError)")
        answer = client.post("/v1/rank", content=b"[" + b"1," * 100 + b"1]", headers={"content-type": "application/json"})
        assert answer.status_code == 413 and "serve.max_body_bytes=100" in answer.json()["detail"]
        assert client.get("/nowhere").status_code == 404
    finally:
        REPLICA.max_body_bytes, REPLICA.metrics = saved
    # Each error is counted once, with the metrics of the variant that answered where the handler named one.
    assert variant.counted == [("errors", "/v1/rank", "500"), ("errors", "/v1/rank", "409")]
    assert replica.counted == [("errors", "/v2/infer", "500"), ("errors", "/v1/rank", "413"), ("errors", "other", "404")]
