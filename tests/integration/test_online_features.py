"""Serving reads the Feast online store (SQLite and a real Redis), and pushed events change the next ranking.

The store is filled by Feast's own write path (``write_to_online_store``) with
the registered model package's tables, so a ranking served from the store must
equal the same model ranking from the package's tables.
"""

import numpy as np
import pandas as pd
import pytest
import requests

import mlsys
from mlsys.api import serving as commands
from mlsys.api.config import compose_config
from mlsys.features import apply, build_definitions, open_store, store_paths
from mlsys.features.online import EntityKeys, OnlineFeatureReader
from mlsys.features.push import Interaction, push_event


def fill_online_store(cfg, home: str, package) -> None:
    """Apply the definitions of the package's feature schema and write its users (profile, history)
    and items with Feast, as the offline sources hold them."""
    from mlsys.data.feature_schema import Table
    from mlsys.features.definitions import profile_views
    from mlsys.features.sources import profile_rows

    schema = package.preprocessor.schema
    store = apply(cfg, home, build_definitions(cfg, store_paths(cfg, home).sources, schema))
    at = pd.Timestamp("1998-04-23", tz="UTC")
    users, items = package.users, package.items
    for view, table, frame in (("user_profile", Table.users, users), ("item_profile", Table.items, items)):
        if view in profile_views(schema):
            store.write_to_online_store(view, profile_rows(frame, schema, table, 0).assign(event_timestamp=at))
    store.write_to_online_store("user_sequence", users[["user_id"]].assign(event_timestamp=at, history=[[int(i) for i in h] for h in users.history]))


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def online(request, trained, serve_port):
    from ray import serve

    home, overrides, result = trained
    backend = [f"features.online={request.param}", f"features.project=online_{request.param}"]
    if request.param == "redis":
        backend.append(f"features.redis_port={request.getfixturevalue('redis_server').port}")
    cfg = compose_config([*overrides, "features=feast", *backend, f"serve.port={serve_port}", "serve.model=ctr/1"])
    offline = mlsys.load_model("models:/ctr/1", tracking_uri=f"sqlite:///{home}/mlflow.db")
    fill_online_store(cfg.features, str(home), offline.package)
    url = commands.start_server(cfg)
    yield url, cfg, offline, result
    serve.delete(cfg.serve.app_name)


def _rank(url, user, candidates, **extra):
    answer = requests.post(f"{url}/v1/rank", json={"user_id": user, "candidates": candidates, **extra}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _eval_requests(result, n_users=4):
    frame = pd.read_parquet(result.output("transform").eval, columns=["user_id", "item_id"])
    for user, group in list(frame.groupby("user_id"))[:n_users]:
        yield int(user), [int(i) for i in group["item_id"].head(30)]


def test_rankings_from_the_store_equal_the_package_tables(online):
    url, _, offline, result = online
    assert requests.get(f"{url}/v1/metrics", timeout=10).json()["feature_source"] == "online_store"
    for user, candidates in _eval_requests(result):
        body = _rank(url, user, candidates)
        expected = offline.rank(user, candidates)
        assert [i["item_id"] for i in body["items"]] == [i.item_id for i in expected.items]
        np.testing.assert_allclose([i["score"] for i in body["items"]], [i.score for i in expected.items], atol=1e-6)
        assert body["unknown_user"] is False and body["unknown_items"] == 0


def test_unknown_ids_get_defaults_and_are_counted(online):
    url, _, offline, _ = online
    before = requests.get(f"{url}/v1/metrics", timeout=10).json()
    body = _rank(url, 10**9, [1, 2, 10**9, 10**9 + 1])
    assert body["unknown_user"] is True and body["unknown_items"] == 2
    expected = offline.rank(10**9, [1, 2, 10**9, 10**9 + 1])  # the package path's defaults: same scores
    np.testing.assert_allclose(sorted(i["score"] for i in body["items"]), sorted(i.score for i in expected.items), atol=1e-6)
    after = requests.get(f"{url}/v1/metrics", timeout=10).json()
    assert after["unknown_users"] == before["unknown_users"] + 1
    assert after["unknown_items"] == before["unknown_items"] + 2
    assert after["requests"] == before["requests"] + 1


def test_reader_equals_feast_get_online_features(online):
    _, cfg, _, _ = online
    store = open_store(cfg.features, cfg.home.root)
    reader = OnlineFeatureReader.from_store(store)
    items = list(range(1, 101)) + [10**9]
    ours = reader.read_many([("user_profile", [1]), ("user_sequence", [1]), ("item_profile", items)])
    feast = store.get_online_features(
        features=store.get_feature_service("ranking"), entity_rows=[{"user_id": 1, "item_id": i} for i in items]
    ).to_dict()
    user = {f: v[0] for answer in ours[:2] for f, v in answer.items() if f != "_found"}
    assert user == {f: feast[f][0] for f in user}
    assert ours[2]["year"] == feast["year"] and ours[2]["genres"] == feast["genres"]
    assert ours[2]["_found"] == [True] * 100 + [False]


def test_entity_keys_are_feasts():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    keys = EntityKeys("item_id")
    for value in (0, 1, 1682, -5, 2**40):
        assert keys.encode(value) == serialize_entity_key(EntityKey(join_keys=["item_id"], entity_values=[Value(int64_val=value)]), 3)


def test_a_pushed_click_changes_the_next_ranking(online):
    url, cfg, offline, result = online
    user, candidates = next(_eval_requests(result, 1))
    before = _rank(url, user, candidates)
    reader = OnlineFeatureReader.from_store(open_store(cfg.features, cfg.home.root))
    old_history = reader.read("user_sequence", [user])["history"][0]
    clicked_item = candidates[-1]
    answer = requests.post(f"{url}/v1/events", json={"user_id": user, "item_id": clicked_item, "rating": 5}, timeout=30)
    assert answer.status_code == 200, answer.text
    event = answer.json()
    assert event["clicked"] is True and event["history"] == (old_history + [clicked_item])[-cfg.data.history_length :]
    assert event["aggregates"]["events_7d"] == 1.0 and event["aggregates"]["clicks_30d"] == 1.0
    after = _rank(url, user, candidates)
    assert after["items"] != before["items"]
    # The new scores are the model's on the pushed history.
    frame, _, _ = offline.request_frame(user, candidates)
    frame["history"] = [event["history"]] * len(frame)
    scores = dict(zip(candidates, offline.score_frame(frame).tolist()))
    np.testing.assert_allclose([i["score"] for i in after["items"]], [scores[i["item_id"]] for i in after["items"]], atol=1e-6)


def test_python_push_event_is_seen_over_http(online):
    url, cfg, _, result = online
    user, candidates = next(_eval_requests(result, 2))
    before = _rank(url, user, candidates)
    pushed = push_event(cfg.features, cfg.home.root, Interaction(user, candidates[0], rating=1.0))
    assert pushed.clicked is False  # a low rating: aggregates move, the sequence does not
    events = push_event(cfg.features, cfg.home.root, Interaction(user, candidates[1], clicked=True))
    assert events.history[-1] == candidates[1] and events.aggregates["events_30d"] == pushed.aggregates["events_30d"] + 1
    assert _rank(url, user, candidates)["items"] != before["items"]


def test_events_need_a_rating_or_click(online):
    url, _, _, _ = online
    answer = requests.post(f"{url}/v1/events", json={"user_id": 1, "item_id": 2}, timeout=30)
    assert answer.status_code == 422 and "rating" in answer.text


# Redis end to end is slow (a second pipeline run); Redis reads, pushes and parity run above on every suite.
@pytest.fixture(scope="module", params=["sqlite", pytest.param("redis", marks=pytest.mark.slow)])
def from_pipeline(request, ray_local, tmp_path_factory, serve_port):
    """features=feast end to end on a small synthetic log: PIT training set, materialize, register, serve."""
    from ray import serve

    home = tmp_path_factory.mktemp(f"pipeline_{request.param}")
    overrides = [f"home.root={home}", "data=synthetic", "data.rows=4000", "data.users=60", "data.items=300", "data.blocks=2",
                 "features=feast", f"features.online={request.param}", "train.max_epochs=1"]
    if request.param == "redis":
        overrides.append(f"features.redis_port={request.getfixturevalue('redis_server').port}")
    result = mlsys.run_pipeline(overrides)
    cfg = compose_config([*overrides, f"serve.port={serve_port}", "serve.model=ctr/1", "serve.app_name=ranking-pipeline",
                          "serve.route_prefix=/pipeline"])
    url = commands.start_server(cfg)
    yield url, cfg, result
    serve.delete(cfg.serve.app_name)


def test_the_pipeline_model_serves_from_the_materialized_store(from_pipeline):
    from mlsys.data.events import last_clicks
    from mlsys.features.serving import OnlineFeatures
    from mlsys.serve.ranker import RankingModel

    url, cfg, result = from_pipeline
    events = pd.read_parquet(result.output("ingest").events)
    user = int(events.user_id.value_counts().index[0])
    candidates = [int(i) for i in events.item_id.drop_duplicates().head(25)]
    source = OnlineFeatures(OnlineFeatureReader.from_store(open_store(cfg.features, cfg.home.root)))
    seen = source.fetch(user, candidates).frame
    # The store holds the latest offline values: the user's last clicks, and aggregates.
    assert list(seen.history.iloc[0]) == last_clicks(events[events.user_id == user], cfg.data.history_length)
    assert seen.events_30d.iloc[0] >= 1 and not seen.year.isna().any()
    body = _rank(url, user, candidates)
    assert body["unknown_user"] is False and body["unknown_items"] == 0
    # Served (ONNX, over HTTP) equals the packaged torch model on the same store features.
    offline = mlsys.load_model("models:/ctr/1", engine="torch", tracking_uri=f"sqlite:///{cfg.home.root}/mlflow.db")
    expected = RankingModel(offline.package, engine="torch", features=source).rank(user, candidates)
    assert [i["item_id"] for i in body["items"]] == [i.item_id for i in expected.items]
    np.testing.assert_allclose([i["score"] for i in body["items"]], [i.score for i in expected.items], atol=1e-5)
    # A pushed click moves the sequence and the aggregates the next request reads.
    pushed = requests.post(f"{url}/v1/events", json={"user_id": user, "item_id": candidates[0], "rating": 5}, timeout=30).json()
    assert pushed["history"][-1] == candidates[0] and pushed["aggregates"]["events_30d"] == seen.events_30d.iloc[0] + 1
    assert _rank(url, user, candidates)["items"] != body["items"]
