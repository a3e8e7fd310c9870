"""mlsys.data.events on Arrow blocks of many users: the same results as the per-user pandas contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlsys.data.events import (
    add_history, history_table, join_features, join_table, last_clicks, last_clicks_table, split_table, split_user_events,
)


def _events(seed: int, users: int, n: int) -> pd.DataFrame:
    """Many users' events, shuffled, with same-second ties and repeated items."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": rng.integers(1, users + 1, n).astype(np.int64),
            "item_id": rng.integers(1, 12, n).astype(np.int64),
            "timestamp": (1_000 + rng.integers(0, max(2, n // (3 * users)), n)).astype(np.int64),
            "label": (rng.random(n) < 0.5).astype(np.float32),
        }
    )


def _per_user(df: pd.DataFrame, fn) -> pd.DataFrame:
    return pd.concat([fn(g) for _, g in df.groupby("user_id", sort=True)])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_split_table_equals_split_user_events_per_user(seed, fraction):
    df = _events(seed, users=9, n=300)
    got = split_table(pa.Table.from_pandas(df, preserve_index=False), fraction).to_pandas()
    key = ["user_id", "timestamp", "item_id", "label"]
    # split_table breaks (time, item) ties by label; split_user_events keeps the input's order.
    expected = _per_user(df.sort_values(key, kind="stable"), lambda g: split_user_events(g, fraction))
    assert sorted(map(tuple, got[key + ["split"]].values.tolist())) == sorted(map(tuple, expected[key + ["split"]].values.tolist()))
    assert got["user_id"].is_monotonic_increasing  # rows come back in user order


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("length", [1, 5, 50])
def test_history_table_equals_add_history_per_user(seed, length):
    df = _events(seed, users=7, n=250)
    got = history_table(pa.Table.from_pandas(df, preserve_index=False), length)
    assert got.schema.field("history").type == pa.list_(pa.int64())
    expected = _per_user(df, lambda g: add_history(g, length))
    assert got.column("user_id").to_pylist() == expected["user_id"].tolist()
    assert got.column("timestamp").to_pylist() == expected["timestamp"].tolist()
    assert got.column("history").to_pylist() == [list(h) for h in expected["history"]]


def test_add_history_of_many_users_never_sees_another_users_clicks():
    df = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [10, 11, 20, 21], "timestamp": [1, 2, 1, 3], "label": [1.0] * 4})
    out = add_history(df, 5)
    assert [list(h) for h in out.history] == [[], [10], [], [20]]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("length", [1, 3, 20, 200])
def test_last_clicks_table_equals_last_clicks_per_user(seed, length):
    df = _events(seed, users=6, n=200)
    got = last_clicks_table(pa.Table.from_pandas(df, preserve_index=False), length).to_pandas()
    expected = {u: last_clicks(g, length) for u, g in df.groupby("user_id")}
    assert got["user_id"].tolist() == sorted(expected)
    assert [list(h) for h in got["history"]] == [expected[u] for u in got["user_id"]]


def test_last_clicks_keeps_every_click_when_there_are_fewer_than_length():
    # Fewer clicks than `length` but more than half of it: all of them (an earlier version kept only the last length - n).
    events = pd.DataFrame({"timestamp": [1, 2, 3], "item_id": [7, 8, 9], "label": [1.0, 1.0, 1.0]})
    assert last_clicks(events, 5) == [7, 8, 9]
    assert last_clicks_table(pa.Table.from_pandas(events.assign(user_id=1)), 5).column("history").to_pylist() == [[7, 8, 9]]


def test_join_table_keeps_unknown_ids_with_nulls_and_refuses_duplicate_ids():
    events = pa.table({"user_id": [1, 2], "item_id": [10, 99], "timestamp": [1, 2], "label": [1.0, 0.0]})
    users = pa.table({"user_id": [1], "age": pa.array([30.0], pa.float32()), "gender": ["F"], "occupation": ["x"]})
    items = pa.table({"item_id": [10], "year": pa.array([1999.0], pa.float32()), "genres": [["a", "b"]]})
    out = join_table(events, users, items)
    assert out.column_names == ["user_id", "item_id", "timestamp", "label", "age", "gender", "occupation", "year", "genres"]
    assert out.column("genres").to_pylist() == [["a", "b"], None] and out.column("gender").to_pylist() == ["F", None]
    with pytest.raises(ValueError, match="more than once"):
        join_table(events, pa.concat_tables([users, users]), items)


def test_join_features_equals_a_pandas_left_merge():
    events = _events(3, users=5, n=40).assign(item_id=lambda d: d.item_id + 5)
    users = pd.DataFrame({"user_id": [1, 2, 3], "age": np.array([20, 30, 40], np.float32), "gender": ["F", "M", "F"], "occupation": list("abc")})
    items = pd.DataFrame({"item_id": np.arange(8, 14), "year": np.arange(1990, 1996, dtype=np.float32), "genres": [["g"]] * 6})
    got = join_features(events, users, items)
    expected = events.merge(users, on="user_id", how="left").merge(items, on="item_id", how="left")
    for c in ("gender", "occupation"):  # a missing string is None from Arrow, NaN from a merge
        expected[c] = expected[c].astype(object).where(expected[c].notna(), None)
    pd.testing.assert_frame_equal(got.drop(columns="genres"), expected.drop(columns="genres"))
    assert [None if g is None else list(g) for g in got.genres] == [g if isinstance(g, list) else None for g in expected.genres]
