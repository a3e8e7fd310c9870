"""The Feast definitions and offline sources are generated from the declared feature schema:
any column names, any kinds, tables without features (no Ray, no `feast apply`)."""

import numpy as np
import pandas as pd
import pytest

from mlsys.data.config import HistoryOf
from mlsys.data.feature_schema import Feature, FeatureSchema, Kind, Table
from mlsys.features import FeaturesConfig, build_definitions
from mlsys.features.definitions import RANKING_SERVICE, aggregate_columns, numeric_features
from mlsys.features.sources import profile_rows, user_aggregate_rows, user_sequence_rows
from mlsys.features.training import label_columns
from tests.schemas import movielens_like

CFG = FeaturesConfig(name="feast")
LABELLED = {"user_id": "uid", "item_id": "sku", "timestamp": "ts", "label": "clicked"}


def _schema(*features: Feature, **kw) -> FeatureSchema:
    return FeatureSchema(tuple(features), LABELLED, **kw)


def _fields(view) -> dict[str, str]:
    return {f.name: str(f.dtype) for f in view.features}


def test_views_hold_exactly_the_declared_features_typed_by_kind(tmp_path):
    from feast.types import Array, String

    schema = _schema(Feature("device", Kind.categorical, Table.users), Feature("brand", Kind.categorical, Table.items),
                     Feature("tags", Kind.multi_hot, Table.items), Feature("hour", Kind.categorical, Table.events))
    defs = build_definitions(CFG, str(tmp_path), schema)
    assert [v.name for v in defs.views] == ["user_profile", "item_profile", "user_aggregates", "user_sequence"]
    assert _fields(defs.view("user_profile")) == {"device": str(String)}
    assert _fields(defs.view("item_profile")) == {"brand": str(String), "tags": str(Array(String))}
    assert list(_fields(defs.view("user_aggregates"))) == list(aggregate_columns(CFG))
    assert list(_fields(defs.view("user_sequence"))) == ["history"]
    assert defs.view("user_profile").entities == ["user"] and defs.view("item_profile").entities == ["item"]
    # the event feature is request context: in no view
    assert all("hour" not in _fields(v) for v in defs.views)
    assert defs.service.name == RANKING_SERVICE
    assert [p.name for p in defs.service.feature_view_projections] == [v.name for v in defs.views]
    assert numeric_features(CFG, schema) == aggregate_columns(CFG)  # no numeric feature declared
    assert defs.schema == schema


def test_numeric_features_are_float32_and_model_inputs(tmp_path):
    from feast.types import Float32

    schema = _schema(Feature("price", Kind.numeric, Table.items), Feature("dwell", Kind.numeric, Table.events))
    defs = build_definitions(CFG, str(tmp_path), schema)
    assert _fields(defs.view("item_profile")) == {"price": str(Float32)}
    assert numeric_features(CFG, schema) == ("price", "dwell", *aggregate_columns(CFG))


def test_a_table_without_features_has_no_view_and_no_source(tmp_path):
    schema = _schema(Feature("device", Kind.categorical, Table.users), Feature("order_dow", Kind.categorical, Table.events))
    defs = build_definitions(CFG, str(tmp_path), schema)
    assert [v.name for v in defs.views] == ["user_profile", "user_aggregates", "user_sequence"]
    assert not any(s.name.startswith("item_profile") for s in defs.sources)
    bare = build_definitions(CFG, str(tmp_path), _schema(Feature("order_dow", Kind.categorical, Table.events)))
    assert [v.name for v in bare.views] == ["user_aggregates", "user_sequence"]
    assert {s.name for s in bare.sources} == {"user_aggregates_source", "user_sequence_source",
                                              "user_aggregates_push", "user_sequence_push"}


def test_movielens_like_schema_gives_the_former_views(tmp_path):
    defs = build_definitions(CFG, str(tmp_path), movielens_like())
    assert list(_fields(defs.view("user_profile"))) == ["gender", "occupation", "age"]
    assert list(_fields(defs.view("item_profile"))) == ["year", "genres"]


def test_profile_rows_store_categorical_values_as_text():
    schema = _schema(Feature("brand", Kind.categorical, Table.items), Feature("price", Kind.numeric, Table.items),
                     Feature("tags", Kind.multi_hot, Table.items))
    items = pd.DataFrame({"item_id": [1, 2, 3], "brand": [7, None, 9], "price": [1.5, np.nan, 3.0],
                          "tags": [["a", "b"], None, np.array(["c"])]})
    rows = profile_rows(items, schema, Table.items, 100)
    assert list(rows.columns) == ["item_id", "brand", "price", "tags", "event_timestamp"]
    assert rows.brand.tolist() == ["7", None, "9"]
    assert rows.price.dtype == np.float32 and np.isnan(rows.price[1])
    assert rows.tags.tolist() == [["a", "b"], None, ["c"]]
    assert (rows.event_timestamp == pd.Timestamp(100, unit="s", tz="UTC")).all()


def test_aggregates_without_a_rating_column_have_null_mean_rating():
    events = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 5], "timestamp": [0, 10, 0], "label": [1.0, 0.0, 1.0]})
    rows = user_aggregate_rows(events, [7], 7)
    assert rows["clicks_7d"].tolist() == [1.0, 1.0, 1.0] and rows["events_7d"].tolist() == [1.0, 2.0, 1.0]
    assert rows["mean_rating_7d"].isna().all() and rows["ctr_7d"].tolist() == [1.0, 0.5, 1.0]


@pytest.mark.parametrize("history_of", list(HistoryOf))
def test_sequence_rows_follow_history_of(history_of):
    from mlsys.data.events import add_history

    rng = np.random.default_rng(3)
    n = 300
    events = pd.DataFrame({"user_id": rng.integers(1, 6, n), "item_id": rng.integers(1, 40, n),
                           "timestamp": rng.integers(0, 60, n), "label": rng.integers(0, 2, n).astype(np.float32)})
    every = history_of is HistoryOf.events
    rows = user_sequence_rows(events, 4, every_event=every)
    # the row strictly before each event is what the pipeline's own sequence gives it
    expected = add_history(events, 4, every_event=every)
    for e in expected.itertuples():
        mine = rows[(rows.user_id == e.user_id) & (rows.event_timestamp < pd.Timestamp(e.timestamp, unit="s", tz="UTC"))]
        got = mine.history.iloc[-1] if len(mine) else []
        assert list(got) == list(e.history)


def test_label_events_keep_the_request_context():
    schema = _schema(Feature("device", Kind.categorical, Table.users), Feature("hour", Kind.categorical, Table.events),
                     Feature("dwell", Kind.numeric, Table.events))
    assert label_columns(schema) == ["user_id", "item_id", "timestamp", "label", "split", "hour", "dwell"]
