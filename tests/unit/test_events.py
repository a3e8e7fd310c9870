"""mlsys.data.events: per-user split and behaviour sequences, against brute-force oracles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mlsys.data.events import add_history, join_features, last_clicks, split_user_events


def _user_events(seed: int, n: int) -> pd.DataFrame:
    """One user's events, shuffled, with many same-second timestamps."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": np.full(n, 7, dtype=np.int64),
            "item_id": rng.integers(1, 15, n).astype(np.int64),
            "timestamp": (1_000 + rng.integers(0, max(2, n // 3), n)).astype(np.int64),
            "label": (rng.random(n) < 0.5).astype(np.float32),
        }
    )


def _ordered_records(df: pd.DataFrame) -> list[tuple]:
    """(timestamp, item_id, original position, label) in event order; ties keep input order."""
    recs = [(int(t), int(i), pos, float(y)) for pos, (t, i, y) in enumerate(zip(df.timestamp, df.item_id, df.label))]
    return sorted(recs, key=lambda r: (r[0], r[1], r[2]))


# -- split_user_events ----------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.2, 0.5, 0.99, 1.0])
def test_split_marks_latest_floor_fraction_as_eval(seed, fraction):
    n = 5 + 7 * seed
    events = _user_events(seed, n)
    out = split_user_events(events, fraction)
    n_eval = math.floor(n * fraction)
    assert len(out) == n
    assert (out["split"] == "eval").sum() == n_eval
    assert set(out["split"]) <= {"train", "eval"}
    # The eval rows are exactly the last n_eval rows in (timestamp, item_id) order.
    order = _ordered_records(events)
    expected_eval = {pos for _, _, pos, _ in order[len(order) - n_eval :]}
    got_eval = {events.index.get_loc(i) for i in out.index[out["split"] == "eval"]}
    assert got_eval == expected_eval


def test_split_never_puts_a_train_event_after_an_eval_event():
    events = _user_events(11, 40)
    out = split_user_events(events, 0.3)
    key = list(zip(out.timestamp, out.item_id))
    last_train = max(k for k, s in zip(key, out.split) if s == "train")
    first_eval = min(k for k, s in zip(key, out.split) if s == "eval")
    assert last_train <= first_eval


def test_split_orders_by_timestamp_then_item():
    events = pd.DataFrame({"timestamp": [5, 5, 1, 5], "item_id": [9, 2, 4, 5], "label": [1.0, 0.0, 1.0, 0.0]})
    out = split_user_events(events, 0.5)
    assert out[out.split == "eval"]["item_id"].tolist() == [5, 9]
    assert out[out.split == "train"]["item_id"].tolist() == [4, 2]
    # The input rows are kept (same index, same values), only reordered.
    assert sorted(out.index) == sorted(events.index)
    assert out.loc[0, "item_id"] == 9


def test_split_docstring_example():
    df = pd.DataFrame({"timestamp": [3, 1, 2, 4, 5], "item_id": [1] * 5})
    assert split_user_events(df, 0.2).split.tolist() == ["train", "train", "train", "train", "eval"]


# -- add_history ------------------------------------------------------------


def brute_history(df: pd.DataFrame, length: int) -> dict[int, list[int]]:
    """Original position -> the last ``length`` clicked items with a strictly earlier timestamp."""
    order = _ordered_records(df)
    out = {}
    for t, _, pos, _ in order:
        before = [item for (t2, item, _, y) in order if y > 0 and t2 < t]
        out[pos] = before[-length:] if length else []
    return out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("length", [1, 3, 20])
def test_add_history_matches_oracle(seed, length):
    events = _user_events(seed, 10 + 6 * seed)
    out = add_history(events, length)
    expected = brute_history(events, length)
    assert len(out) == len(events)
    for idx, hist in zip(out.index, out["history"]):
        assert list(hist) == expected[events.index.get_loc(idx)], f"row {idx}"


def test_add_history_same_second_events_do_not_see_each_other():
    events = pd.DataFrame(
        {
            "timestamp": [10, 10, 10, 11, 12],
            "item_id": [3, 1, 2, 4, 5],
            "label": [1.0, 1.0, 1.0, 1.0, 0.0],
        }
    )
    out = add_history(events, 10).set_index("item_id")["history"].map(list)
    assert out[1] == [] and out[2] == [] and out[3] == []  # ties: nothing before them
    assert out[4] == [1, 2, 3]  # clicks at t=10, in (timestamp, item_id) order
    assert out[5] == [1, 2, 3, 4]


@pytest.mark.parametrize("seed", range(6))
def test_add_history_has_no_leakage(seed):
    events = _user_events(seed, 30)
    out = add_history(events, 50)
    clicked = events[events.label > 0]
    for t, hist in zip(out.timestamp, out.history):
        # Every history item has a click strictly before t ...
        allowed = clicked[clicked.timestamp < t]
        for item in hist:
            assert item in set(allowed.item_id), f"item {item} at t={t} leaks"
        # ... and the multiset of items is exactly the earlier clicks (L is large).
        assert sorted(hist) == sorted(allowed.item_id.tolist())


def test_add_history_keeps_only_clicked_items():
    events = pd.DataFrame({"timestamp": [1, 2, 3, 4], "item_id": [10, 20, 30, 40], "label": [0.0, 1.0, 0.0, 0.0]})
    out = add_history(events, 5)
    assert [list(h) for h in out.history] == [[], [], [20], [20]]


def test_add_history_keeps_the_last_l_clicks():
    events = pd.DataFrame({"timestamp": [1, 2, 3, 4, 5, 6], "item_id": [1, 2, 3, 4, 5, 6], "label": [1.0] * 6})
    out = add_history(events, 2)
    assert [list(h) for h in out.history] == [[], [1], [1, 2], [2, 3], [3, 4], [4, 5]]


def test_add_history_length_zero_is_empty():
    events = _user_events(3, 12)
    assert all(len(h) == 0 for h in add_history(events, 0).history)


# -- last_clicks --------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("length", [1, 4, 100])
def test_last_clicks_matches_oracle(seed, length):
    events = _user_events(seed, 25)
    clicked = [item for _, item, _, y in _ordered_records(events) if y > 0]
    assert last_clicks(events, length) == clicked[-length:]


def test_last_clicks_includes_the_final_second_and_skips_non_clicks():
    events = pd.DataFrame({"timestamp": [5, 1, 5, 3], "item_id": [8, 2, 7, 3], "label": [1.0, 1.0, 1.0, 0.0]})
    assert last_clicks(events, 10) == [2, 7, 8]
    assert last_clicks(events, 2) == [7, 8]
    assert last_clicks(events.iloc[[3]], 5) == []
    assert all(isinstance(v, int) for v in last_clicks(events, 10))


def test_last_clicks_length_zero_returns_nothing():
    events = pd.DataFrame({"timestamp": [1, 2], "item_id": [5, 6], "label": [1.0, 1.0]})
    assert last_clicks(events, 0) == []


# -- join_features ----------------------------------------------------------------


def test_join_features_keeps_unknown_ids_with_nulls():
    events = pd.DataFrame({"user_id": [1, 2], "item_id": [10, 99], "timestamp": [1, 2], "label": [1.0, 0.0]})
    users = pd.DataFrame({"user_id": [1], "age": [30.0], "gender": ["F"], "occupation": ["x"]})
    items = pd.DataFrame({"item_id": [10], "year": [1999.0], "genres": [["a"]]})
    out = join_features(events, users, items)
    assert len(out) == 2
    row1, row2 = out.iloc[0], out.iloc[1]
    assert row1.gender == "F" and row1.year == 1999.0 and list(row1.genres) == ["a"]
    assert pd.isna(row2.gender) and pd.isna(row2.age) and pd.isna(row2.year)
