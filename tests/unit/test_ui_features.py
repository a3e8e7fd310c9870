"""The dashboard's Features read (`GET /api/features`) over a real Feast store (SQLite online) built and
materialized as the pipeline does, a feature log written by the serving logger and labels written as
`POST /v1/events` does: views with their fields, freshness, online rows, logging and event rates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from mlsys.api.config import compose_config
from mlsys.features.feature_log import FeatureLogger, FeatureLoggingConfig, LoggedRequest, default_log_dir
from mlsys.monitor.labels import Label, LabelLog
from mlsys.ui.app import build_app
from tests.stores import T0, small_store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
HOUR = pd.Timestamp("2026-12-01 10:00", tz="UTC")


def _app(home):
    cfg = compose_config([f"home.root={home}", "ui.token=t"])
    return TestClient(build_app(cfg, "t")), cfg


def test_a_home_without_a_store_says_so(tmp_path):
    client, _ = _app(tmp_path)
    assert client.get("/api/features").json() == {"stores": [], "events": {}}


def test_views_freshness_online_rows_and_rates_of_a_materialized_store(tmp_path):
    small_store(str(tmp_path), "shop")
    logger = FeatureLogger(FeatureLoggingConfig(flush_seconds=0.05), default_log_dir("shop", str(tmp_path)))
    for i, at in enumerate([HOUR, HOUR + pd.Timedelta(minutes=5), HOUR + pd.Timedelta(hours=1)]):
        logger.log(LoggedRequest(f"r{i}", "ctr", "1", pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2]}), np.array([0.5, 0.4]), logged_at=at))
    logger.close()
    client, cfg = _app(tmp_path)
    labels = LabelLog(str(tmp_path / "monitor"), "ctr")
    for t in (HOUR.timestamp(), HOUR.timestamp() + 10):
        labels.append(Label(user_id=1, item_id=2, label=1, timestamp=t))

    got = client.get("/api/features").json()
    [store] = got["stores"]
    assert store["project"] == "shop" and store["online"]["type"] == "sqlite" and store["online"]["where"].endswith("shop/online.db")
    views = {v["name"]: v for v in store["views"]}
    assert list(views) == ["user_profile", "item_profile", "user_aggregates", "user_sequence"]  # the definitions' order
    assert {f["name"] for f in views["user_profile"]["fields"]} == {"age", "gender", "occupation"} and views["user_profile"]["entity"] == "user_id"
    assert views["item_profile"]["entity"] == "item_id" and views["item_profile"]["rows"] == 4
    assert views["user_sequence"]["push_source"] == "user_sequence_push" and views["user_profile"]["push_source"] is None
    assert store["services"] == [{"name": "ranking", "views": list(views)}]
    assert store["online"]["rows"] == {"user_profile": 3, "item_profile": 4, "user_aggregates": 2, "user_sequence": 2}
    [marks] = store["materialized"]
    assert marks["online"] == "sqlite" and marks["watermarks"]["user_aggregates"] == views["user_aggregates"]["newest"] == T0 + 120
    assert store["logging"] == {"rows": 6, "requests": 3, "per_hour": [{"hour": HOUR.timestamp(), "count": 2},
                                                                       {"hour": HOUR.timestamp() + 3600, "count": 1}]}
    assert got["events"] == {"ctr": {"events": 2, "per_hour": [{"hour": HOUR.timestamp(), "count": 2}]}}


def test_a_redis_online_store_is_counted_per_view_and_an_unreachable_one_is_said(tmp_path, redis_server):
    """Feast's Redis layout read directly (a hash per entity key, a ``_ts:<view>`` field per view it holds),
    on a real redis-server; another project's keys in the same Redis are not counted."""
    from mlsys.ui.read import _redis_rows

    small_store(str(tmp_path / "a"), "shop", online="redis", redis_port=redis_server.port)
    small_store(str(tmp_path / "b"), "other", online="redis", redis_port=redis_server.port)
    client, _ = _app(tmp_path / "a")
    [store] = client.get("/api/features").json()["stores"]
    assert store["online"]["type"] == "redis" and store["online"]["where"] == f"127.0.0.1:{redis_server.port}"
    assert store["online"]["rows"] == {"user_profile": 3, "item_profile": 4, "user_aggregates": 2, "user_sequence": 2}
    assert store["online"]["complete"] and store["online"]["error"] is None
    capped = _redis_rows(f"127.0.0.1:{redis_server.port}", "shop", ["item_profile"], limit=2)
    assert not capped["complete"] and capped["rows"]["item_profile"] <= 2
    from tests.redis_server import _free_port

    gone = _redis_rows(f"127.0.0.1:{_free_port()}", "shop", ["item_profile"])
    assert gone["rows"] is None and "ConnectionError" in gone["error"]
