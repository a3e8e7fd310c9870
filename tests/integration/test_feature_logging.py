"""The serving app logs what it scored; joined with later clicks, the log gives training rows
that are exactly what serving saw (same features, same scores from the packaged model)."""

import time

import numpy as np
import pandas as pd
import pytest
import requests

import mlsys
from mlsys.api import serving as commands
from mlsys.api.config import compose_config
from mlsys.features.feature_log import join_labels, read_feature_log, sampled
from tests.integration.test_online_features import fill_online_store

SAMPLE_RATE = 0.5


@pytest.fixture(scope="module")
def logging_service(trained, tmp_path_factory, serve_port):
    from ray import serve

    home, overrides, result = trained
    log_dir = tmp_path_factory.mktemp("feature_log")
    cfg = compose_config(
        [
            *overrides,
            "features=feast",
            "features.project=feature_logging",
            f"serve.port={serve_port}",
            "serve.model=ctr/1",
            f"serve.feature_logging.sample_rate={SAMPLE_RATE}",
            "serve.feature_logging.flush_seconds=0.2",
            f"serve.feature_logging.path={log_dir}",
        ]
    )
    offline = mlsys.load_model("models:/ctr/1", tracking_uri=f"sqlite:///{home}/mlflow.db")
    fill_online_store(cfg.features, str(home), offline.package)
    url = commands.start_server(cfg)
    yield url, offline, result, log_dir
    serve.delete(cfg.serve.app_name)


def _wait_for_log(log_dir, request_ids, timeout=30.0) -> pd.DataFrame:
    deadline = time.monotonic() + timeout
    while True:
        log = read_feature_log(str(log_dir))
        if set(request_ids) <= set(log.request_id) or time.monotonic() > deadline:
            return log
        time.sleep(0.2)


def test_logged_rows_join_labels_into_what_serving_saw(logging_service):
    url, offline, result, log_dir = logging_service
    frame = pd.read_parquet(result.output("transform").eval, columns=["user_id", "item_id", "label"])
    users = list(frame.groupby("user_id"))[:12]
    served = {}

    def rank(request_id, user, candidates):
        answer = requests.post(f"{url}/v1/rank", json={"user_id": user, "candidates": candidates, "request_id": request_id}, timeout=30)
        assert answer.status_code == 200 and answer.json()["request_id"] == request_id
        served[request_id] = {i["item_id"]: i["score"] for i in answer.json()["items"]}

    for n, (user, group) in enumerate(users):
        rank(f"req-{n}", int(user), [int(i) for i in group["item_id"].head(15)])
    # A fresh click, then the same user again: the log keeps both histories, as each was served.
    first_user, first_items = int(users[0][0]), [int(i) for i in users[0][1]["item_id"].head(15)]
    requests.post(f"{url}/v1/events", json={"user_id": first_user, "item_id": 50, "rating": 5}, timeout=30)
    after = next(r for r in (f"after-{k}" for k in range(100)) if sampled(r, SAMPLE_RATE))
    rank(after, first_user, first_items)
    expected_ids = [r for r in served if sampled(r, SAMPLE_RATE)]
    assert 0 < len(expected_ids) < len(served)  # the sample is neither empty nor everything
    log = _wait_for_log(log_dir, expected_ids)
    assert sorted(log.request_id.unique()) == sorted(expected_ids)
    assert set(log.model) == {"ctr"} and set(log.model_version) == {"1"}
    for request_id, rows in log.groupby("request_id"):
        assert dict(zip(rows.item_id, rows.score.astype(float))) == pytest.approx(served[request_id], abs=1e-7)

    # Clicks arrive later (labels with no request id): join by (user, item) within a day of serving.
    clicks = log[["user_id", "item_id"]].drop_duplicates().iloc[::3].assign(timestamp=pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=5), label=1)
    rows = join_labels(log, clicks)
    assert rows.label.sum() == len(clicks) and len(rows) == len(log)
    # The training rows, through the packaged preprocessor and model, give exactly the logged scores.
    np.testing.assert_allclose(offline.score_frame(rows), rows.score.to_numpy(), atol=1e-6)
    # And their features are what the store held when each request was served, not what it holds now.
    for request_id, request_rows in rows.groupby("request_id"):
        user = int(request_rows.user_id.iloc[0])
        logged = list(request_rows.history.iloc[0])
        before_push = list(offline.request_frame(user, [1])[0].history.iloc[0])  # what the store was filled with
        assert logged == ((before_push + [50])[-offline.package.preprocessor.history_length :] if request_id == after else before_push)
    assert after in set(rows.request_id)


def test_metrics_count_the_feature_log(logging_service):
    url, *_ = logging_service
    requests.post(f"{url}/v1/rank", json={"user_id": 1, "candidates": [1, 2, 3]}, timeout=30)
    body = requests.get(f"{url}/v1/metrics", timeout=10).json()
    log = body["feature_log"]
    assert log["queued"] + log["sampled_out"] + log["dropped"] == body["requests"] > 0
    assert log["dropped"] == 0 and log["write_errors"] == 0
    assert body["gc_frozen_objects"] > 10_000  # the loaded version and libraries: out of the collector's full passes
