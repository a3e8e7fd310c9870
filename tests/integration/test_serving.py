"""The registered model served by Ray Serve over HTTP: scores equal the offline model's."""

import subprocess

import numpy as np
import pandas as pd
import pytest
import requests

import mlsys
from mlsys.api import serving as commands
from mlsys.api.config import compose_config
from tests.conftest import MLSYS, REPO, free_port


@pytest.fixture(scope="module")
def served(trained):
    home, overrides, result = trained
    port = free_port()
    cfg = compose_config([*overrides, f"serve.port={port}", "serve.model=ctr/1"])
    url = commands.start_server(cfg)
    yield url, home, result
    from ray import serve

    serve.delete(cfg.serve.app_name)


def _requests(result, n_users=5):
    frame = pd.read_parquet(result.output("transform").eval, columns=["user_id", "item_id"])
    for user, group in list(frame.groupby("user_id"))[:n_users]:
        yield int(user), [int(i) for i in group["item_id"].head(20)]


def test_healthz(served):
    url, _, _ = served
    body = requests.get(f"{url}/healthz", timeout=10).json()
    assert body == {"status": "ok", "model": "ctr", "version": "1"}


def test_served_scores_equal_offline_model(served):
    url, home, result = served
    offline = mlsys.load_model("models:/ctr/1", engine="torch", tracking_uri=f"sqlite:///{home}/mlflow.db")
    for user, candidates in _requests(result):
        answer = requests.post(f"{url}/v1/rank", json={"user_id": user, "candidates": candidates}, timeout=30).json()
        served_scores = {i["item_id"]: i["score"] for i in answer["items"]}
        expected = offline.rank(user, candidates)
        assert [i.item_id for i in expected.items] == [i["item_id"] for i in answer["items"]]
        np.testing.assert_allclose([served_scores[i.item_id] for i in expected.items], [i.score for i in expected.items], atol=1e-5)
        scores = [i["score"] for i in answer["items"]]
        assert scores == sorted(scores, reverse=True)


def test_top_k_and_unknown_ids(served):
    url, _, _ = served
    answer = requests.post(f"{url}/v1/rank", json={"user_id": 10**9, "candidates": [1, 2, 10**9], "k": 2}, timeout=30)
    assert answer.status_code == 200
    body = answer.json()
    assert len(body["items"]) == 2 and body["unknown_user"] is True and body["unknown_items"] == 1


def test_bad_request_names_the_field(served):
    url, _, _ = served
    answer = requests.post(f"{url}/v1/rank", json={"user_id": 1, "candidates": []}, timeout=30)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "candidates"]


def test_port_in_use_is_one_clear_line(served, trained):
    url, home, _ = served
    port = url.rsplit(":", 1)[1]
    proc = subprocess.run(
        [MLSYS, "serve", f"home.root={home}", f"serve.port={port}"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("mlsys: error: Port") and "Traceback" not in proc.stderr
