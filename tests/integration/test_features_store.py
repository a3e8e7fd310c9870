"""Feast store under MLSYS_HOME: generated config, apply, incremental materialization, online reads.

Run on SQLite and on a real redis-server (tests/redis_server.py); no fake Redis.
"""

import threading
import uuid

import numpy as np
import pandas as pd
import pytest

from mlsys.data.config import HistoryOf
from mlsys.data.feature_schema import Feature, FeatureSchema, Kind, Table
from mlsys.features import FeaturesConfig, RANKING_SERVICE, open_store, stored_schema
from mlsys.features.materialize import materialize, read_watermarks
from mlsys.features.store import store_paths
from mlsys.features.training import write_offline_sources
from tests.schemas import movielens_like

DAY = 86_400
T0 = 880_000_000  # 1997-11-20


def _tables(n_users=3, n_items=4):
    users = pd.DataFrame({"user_id": np.arange(1, n_users + 1, dtype=np.int64), "age": np.float32(30.0),
                          "gender": "F", "occupation": "writer"})
    items = pd.DataFrame({"item_id": np.arange(1, n_items + 1, dtype=np.int64), "year": np.float32(1995.0),
                          "genres": [["Drama"]] * n_items})
    return users, items


def _events(rows):
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    return df.assign(label=(df["rating"] >= 4).astype(np.float32))


@pytest.fixture(params=["sqlite", "redis"])
def cfg(request):
    project = f"t{uuid.uuid4().hex[:10]}"  # its own tables / keys on the shared redis-server
    if request.param == "sqlite":
        return FeaturesConfig(name="feast", project=project)
    server = request.getfixturevalue("redis_server")
    return FeaturesConfig(name="feast", project=project, online="redis", redis_host=server.host, redis_port=server.port)


def _online(cfg, home, rows):
    store = open_store(cfg, str(home))
    return store.get_online_features(features=store.get_feature_service(RANKING_SERVICE), entity_rows=rows).to_dict()


def test_generated_config_and_online_reads_after_materialize(cfg, tmp_path):
    users, items = _tables()
    events = _events([(1, 1, T0, 5), (1, 2, T0 + DAY, 2), (1, 3, T0 + 2 * DAY, 4), (2, 1, T0, 3)])
    write_offline_sources(cfg, str(tmp_path), movielens_like(history_length=2), events, users, items)
    yaml_text = open(store_paths(cfg, str(tmp_path)).repo_config).read()
    assert f"project: {cfg.project}" in yaml_text and f"type: {cfg.online.value}" in yaml_text
    report = materialize(cfg, str(tmp_path))
    assert {i.view for i in report.intervals} == {"user_profile", "item_profile", "user_aggregates", "user_sequence"}
    got = _online(cfg, tmp_path, [{"user_id": 1, "item_id": 3}, {"user_id": 2, "item_id": 1}, {"user_id": 99, "item_id": 98}])
    assert got["history"][0] == [1, 3] and got["history"][1] is None  # user 2 never clicked
    assert got["clicks_7d"][:2] == [2.0, 0.0] and got["events_7d"][:2] == [3.0, 1.0]
    assert got["mean_rating_7d"][0] == pytest.approx(11 / 3)
    assert got["genres"][0] == ["Drama"] and got["age"][0] == 30.0
    assert got["age"][2] is None and got["history"][2] is None  # unknown ids: nulls, no error


def test_materialization_is_incremental_and_idempotent(cfg, tmp_path):
    users, items = _tables()
    first = [(1, 1, T0, 5), (2, 2, T0, 5)]
    write_offline_sources(cfg, str(tmp_path), movielens_like(history_length=3), _events(first), users, items)
    assert materialize(cfg, str(tmp_path)).rows == 2 + 2 + 3 + 4  # aggregates, sequences, user and item profiles
    again = materialize(cfg, str(tmp_path))
    assert again.rows == 0 and again.intervals == ()  # nothing new: nothing done
    marks = read_watermarks(store_paths(cfg, str(tmp_path)).watermark)

    # a new day of events for user 1 only: only its two new rows (aggregate + sequence) are materialized
    write_offline_sources(cfg, str(tmp_path), movielens_like(history_length=3), _events(first + [(1, 4, T0 + DAY, 4)]), users, items)
    report = materialize(cfg, str(tmp_path))
    assert {(i.view, i.rows) for i in report.intervals} == {("user_aggregates", 1), ("user_sequence", 1)}
    assert all(i.start > marks[i.view].isoformat() for i in report.intervals)
    got = _online(cfg, tmp_path, [{"user_id": 1, "item_id": 1}, {"user_id": 2, "item_id": 2}])
    assert got["history"] == [[1, 4], [2]] and got["clicks_30d"] == [2.0, 1.0]
    assert materialize(cfg, str(tmp_path)).rows == 0


def test_reads_during_materialization_succeed(cfg, tmp_path):
    rng = np.random.default_rng(0)
    users, items = _tables(n_users=3000, n_items=50)
    n = 30_000
    events = _events(list(zip(rng.integers(1, 3001, n), rng.integers(1, 51, n), T0 + rng.integers(0, 60 * DAY, n), rng.integers(1, 6, n))))
    events = events.sort_values("timestamp", kind="stable").reset_index(drop=True)  # the first 100 are the oldest
    write_offline_sources(cfg, str(tmp_path), movielens_like(history_length=5), events[:100], users, items)
    materialize(cfg, str(tmp_path))  # a first, small state readers can see
    write_offline_sources(cfg, str(tmp_path), movielens_like(history_length=5), events, users, items)

    rows = [{"user_id": int(u), "item_id": 1} for u in events["user_id"][:20]]
    reads, errors, done = [], [], threading.Event()

    def reader():
        while not done.is_set():
            try:
                reads.append(_online(cfg, tmp_path, rows)["user_id"])
            except Exception as e:  # the test fails on any read error
                errors.append(repr(e))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        report = materialize(cfg, str(tmp_path))
    finally:
        done.set()
        thread.join()
    assert report.rows > 30_000 and not errors
    assert len(reads) >= 2  # reads ran while the writer did
    assert _online(cfg, tmp_path, rows)["history"][0] is not None


def _labelled(history_of=HistoryOf.clicks, *features):
    """A schema of another data set: a 0/1 label (no rating), other column names."""
    return FeatureSchema(tuple(features), {"user_id": "uid", "item_id": "sku", "timestamp": "ts", "label": "clicked"},
                         history_length=3, history_of=history_of)


def test_views_of_another_schema_replace_the_store(cfg, tmp_path):
    """The same home and project rebuilt from another data set's schema: other views, its own
    schema saved beside the store, old online rows and watermarks gone, everything materialized again."""
    users, items = _tables()
    write_offline_sources(cfg, str(tmp_path), movielens_like(history_length=3), _events([(1, 1, T0, 5), (2, 2, T0, 5)]), users, items)
    materialize(cfg, str(tmp_path))
    assert stored_schema(cfg, str(tmp_path)) == movielens_like(history_length=3)

    schema = _labelled(HistoryOf.events, Feature("device", Kind.categorical, Table.users), Feature("hour", Kind.categorical, Table.events))
    devices = pd.DataFrame({"user_id": np.array([1, 2], dtype=np.int64), "device": [3, "ios"]})
    no_items = pd.DataFrame({"item_id": pd.Series(dtype="int64")})
    events = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [7, 8, 7], "timestamp": [5, 6, 5], "label": np.float32([0, 1, 0]),
                           "hour": ["1", "2", "3"]})
    rows = write_offline_sources(cfg, str(tmp_path), schema, events, devices, no_items)
    assert set(rows) == {"user_profile", "user_aggregates", "user_sequence"}
    assert stored_schema(cfg, str(tmp_path)) == schema
    store = open_store(cfg, str(tmp_path))
    assert sorted(v.name for v in store.list_feature_views()) == ["user_aggregates", "user_profile", "user_sequence"]
    assert [f.name for f in store.get_feature_view("user_profile").features] == ["device"]
    # timestamps older than the first store's watermark: a full materialization all the same
    assert materialize(cfg, str(tmp_path)).rows == sum(rows.values())
    got = _online(cfg, tmp_path, [{"user_id": 1, "item_id": 7}, {"user_id": 2, "item_id": 7}])
    assert got["device"] == ["3", "ios"] and got["history"] == [[7, 8], [7]]  # every event's item (history_of=events)
    assert got["mean_rating_7d"] == [None, None] and got["clicks_7d"] == [1.0, 0.0]  # no rating column
    assert "age" not in got and "year" not in got


def test_pushes_follow_the_stores_schema(cfg, tmp_path):
    from mlsys.features.push import Interaction, push_event

    events = pd.DataFrame({"user_id": [1], "item_id": [7], "timestamp": [T0], "label": np.float32([0])})
    no_users, no_items = pd.DataFrame({"user_id": pd.Series(dtype="int64")}), pd.DataFrame({"item_id": pd.Series(dtype="int64")})
    write_offline_sources(cfg, str(tmp_path), _labelled(HistoryOf.events), events, no_users, no_items)
    materialize(cfg, str(tmp_path))
    at = pd.Timestamp(T0 + 10, unit="s", tz="UTC").to_pydatetime()
    pushed = push_event(cfg, str(tmp_path), Interaction(1, 8, clicked=False, timestamp=at))
    assert pushed.clicked is False and pushed.history == [7, 8]  # history_of=events: a non-click is in the sequence
    for item in (9, 10):
        pushed = push_event(cfg, str(tmp_path), Interaction(1, item, clicked=True, timestamp=at))
    assert pushed.history == [8, 9, 10]  # the store's history_length (3)
    assert pushed.aggregates["mean_rating_7d"] is None and pushed.aggregates["clicks_7d"] == 2.0


def test_each_online_store_has_its_own_watermark(tmp_path):
    """Switching features.online in the same home must fill the new store, not find "nothing new"."""
    sqlite = store_paths(FeaturesConfig(online="sqlite"), str(tmp_path))
    redis = store_paths(FeaturesConfig(online="redis", redis_port=6390), str(tmp_path))
    other = store_paths(FeaturesConfig(online="redis", redis_port=6391), str(tmp_path))
    assert sqlite.root == redis.root
    assert len({sqlite.watermark, redis.watermark, other.watermark}) == 3
