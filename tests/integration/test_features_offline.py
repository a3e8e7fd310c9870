"""The point-in-time join on Ray against the brute-force oracle, and the pipeline's
PIT training set (features=feast) against the pipeline's own sequence logic."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlsys.features.pit import ViewSpec
from tests.unit.test_pit_join import oracle, random_case


def _plain(x):
    """A list value as a list; a null (None, NaN or pd.NA) as None."""
    return list(x) if hasattr(x, "__len__") else None


@pytest.mark.parametrize("broadcast_rows", [0, 10_000], ids=["shuffle", "broadcast"])
def test_ray_join_matches_the_oracle_across_partitions_and_keys(ray_local, tmp_path, broadcast_rows):
    entities, users, items = random_case(11, n_entities=600)
    pq.write_table(pa.Table.from_pandas(users, preserve_index=False), tmp_path / "users.parquet")
    pq.write_table(pa.Table.from_pandas(items, preserve_index=False), tmp_path / "items.parquet")
    views = [ViewSpec("users", "user_id", str(tmp_path / "users.parquet"), ("u",), ttl_s=400),
             ViewSpec("items", "item_id", str(tmp_path / "items.parquet"), ("seq",))]
    from mlsys.features.offline import get_historical_features

    source = ray_local.data.from_pandas(entities.assign(row=np.arange(len(entities)))).repartition(3)
    got = get_historical_features(source, views, partitions=3, broadcast_rows=broadcast_rows).to_pandas().sort_values("row").reset_index(drop=True)
    assert len(got) == len(entities)
    assert [None if pd.isna(x) else x for x in got["u"]] == oracle(entities, users, "user_id", "u", 400)
    expected = oracle(entities, items, "item_id", "seq", None)
    assert [_plain(x) for x in got["seq"]] == [_plain(x) for x in expected]


def test_missing_join_key_is_a_clear_error(ray_local):
    from mlsys.features.offline import get_historical_features

    ds = ray_local.data.from_pandas(pd.DataFrame({"user_id": [1], "event_timestamp": pd.to_datetime([0], utc=True)}))
    with pytest.raises(ValueError, match=r"lack the columns \['item_id'\]"):
        get_historical_features(ds, [ViewSpec("items", "item_id", "-", ("f",))])


def test_pipeline_trains_from_the_pit_training_set(ray_local, tmp_path):
    """features=feast on a small synthetic log: the training set's inputs come from the views,
    equal to the pipeline's own strictly-before sequences, and the aggregates to a brute-force count."""
    import mlsys
    from mlsys import storage
    from mlsys.data.events import add_history
    from mlsys.data.preprocessor import CtrPreprocessor

    overrides = [f"home.root={tmp_path}", "data=synthetic", "data.rows=4000", "data.users=60", "data.items=300",
                 "data.blocks=2", "features=feast", "pipeline.until=transform"]
    result = mlsys.run_pipeline(overrides)
    assert [r.name for r in result.steps][-3:] == ["features", "materialize", "transform"]
    training = pd.read_parquet(result.output("features").training_set)
    events = pd.read_parquet(result.output("ingest").events)
    assert len(training) == len(events)

    expected = pd.concat([add_history(g, 20) for _, g in events.groupby("user_id")])
    key = ["user_id", "item_id", "timestamp"]
    both = training.merge(expected[key + ["history"]], on=key, suffixes=("", "_expected"))
    assert len(both) == len(events.drop_duplicates(key))
    assert all(list(a if a is not None else []) == list(b) for a, b in zip(both["history"], both["history_expected"]))

    sample = training.sample(150, random_state=0)
    for row in sample.itertuples():
        mine = events[(events.user_id == row.user_id) & (events.timestamp < row.timestamp)]
        if mine.empty or row.timestamp - mine.timestamp.max() > 30 * 86_400:
            assert np.isnan(row.clicks_30d)  # no row within the aggregates' TTL
            continue
        t = mine.timestamp.max()  # the newest aggregate row strictly before the event
        window = mine[mine.timestamp > t - 30 * 86_400]
        assert row.clicks_30d == (window.label > 0).sum() and row.events_30d == len(window)

    pre = CtrPreprocessor.from_json(json.dumps(storage.read_json(result.output("transform").preprocessor)))
    assert pre.input_spec().numeric_fields[:3] == ("age", "year", "clicks_7d")  # the aggregates are model inputs


def test_own_columns_feature_store_follows_the_declared_schema(ray_local, tmp_path):
    """features=feast on a click log with its own columns and no user table: the views are the
    declared item features (no user profile), the label events keep the request context."""
    import mlsys
    from mlsys import storage
    from mlsys.api.config import compose_config
    from mlsys.data.feature_schema import FeatureSchema
    from mlsys.data.preprocessor import CtrPreprocessor
    from mlsys.features import open_store, stored_schema
    from mlsys.features.definitions import aggregate_columns
    from tests.integration.test_own_data import write_click_log

    declared = [o for o in write_click_log(tmp_path) if not o.startswith("data.user_table.")]
    overrides = [f"home.root={tmp_path / 'home'}", *declared, "features=feast", "pipeline.until=transform"]
    result = mlsys.run_pipeline(overrides)
    cfg = compose_config(overrides)
    training = pd.read_parquet(result.output("features").training_set)
    aggregates = aggregate_columns(cfg.features)
    assert {"user_id", "item_id", "timestamp", "label", "split", "device", "price", "tags", "brand", "history", *aggregates} \
        == set(training.columns) - {"event_timestamp"}
    assert set(training.brand.dropna()) == {"acme", "globex", "initech"}
    assert len(training) == len(pd.read_parquet(result.output("ingest").events))

    store = open_store(cfg.features, cfg.home.root)
    assert sorted(v.name for v in store.list_feature_views()) == ["item_profile", "user_aggregates", "user_sequence"]
    assert stored_schema(cfg.features, cfg.home.root) == FeatureSchema.of(cfg.data)
    pre = CtrPreprocessor.from_json(json.dumps(storage.read_json(result.output("transform").preprocessor)))
    assert pre.input_spec().numeric_fields == ("price", *aggregates)
