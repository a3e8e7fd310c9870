"""The point-in-time join core against a brute-force oracle, and leakage tests (no Ray)."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlsys.features.pit import ViewSpec, join_views

NS = 1_000_000_000


def oracle(entities: pd.DataFrame, rows: pd.DataFrame, key: str, feature: str, ttl_s):
    """Row by row: the latest view row of the key with ts < T and (no TTL or ts >= T - ttl)."""
    out = []
    for k, t in zip(entities[key], entities["event_timestamp"]):
        ok = rows[(rows[key] == k) & (rows["event_timestamp"] < t)]
        if ttl_s:
            ok = ok[ok["event_timestamp"] >= t - pd.Timedelta(seconds=ttl_s)]
        out.append(ok.sort_values("event_timestamp")[feature].iloc[-1] if len(ok) else None)
    return out


def _times(rng, n, horizon=2_000):
    return pd.to_datetime(rng.integers(0, horizon, n), unit="s", utc=True)


def random_case(seed: int, n_entities=400, n_rows=300, keys=25):
    rng = np.random.default_rng(seed)
    entities = pd.DataFrame({"user_id": rng.integers(0, keys, n_entities), "item_id": rng.integers(0, keys, n_entities),
                             "event_timestamp": _times(rng, n_entities)})
    users = pd.DataFrame({"user_id": rng.integers(0, keys + 5, n_rows), "event_timestamp": _times(rng, n_rows),
                          "u": rng.normal(size=n_rows)}).drop_duplicates(["user_id", "event_timestamp"])
    items = pd.DataFrame({"item_id": rng.integers(0, keys, n_rows), "event_timestamp": _times(rng, n_rows),
                          "seq": [list(rng.integers(0, 9, rng.integers(0, 4))) for _ in range(n_rows)]}
                         ).drop_duplicates(["item_id", "event_timestamp"])
    return entities, users, items


def _table(df):
    return pa.Table.from_pandas(df, preserve_index=False)


@pytest.mark.parametrize("seed,ttl", [(0, None), (1, 300), (2, 1), (3, 5_000), (4, 60)])
def test_random_data_matches_brute_force_oracle(seed, ttl):
    entities, users, items = random_case(seed)
    views = [ViewSpec("users", "user_id", "-", ("u",), ttl_s=ttl), ViewSpec("items", "item_id", "-", ("seq",), ttl_s=None)]
    got = join_views(_table(entities), {"users": _table(users), "items": _table(items)}, views).to_pandas()
    expected_u = oracle(entities, users, "user_id", "u", ttl)
    assert [None if pd.isna(x) else x for x in got["u"]] == expected_u
    expected_seq = oracle(entities, items, "item_id", "seq", None)
    assert [None if x is None else list(x) for x in got["seq"]] == [None if x is None else list(x) for x in expected_seq]
    assert got[["user_id", "item_id", "event_timestamp"]].equals(entities)  # row order and entity columns kept
    assert sum(x is not None for x in expected_u) >= 3  # the case exercises matches, not only nulls


def test_a_row_at_the_event_time_is_not_seen_strictly_before():
    """A feature row stamped at the label's own second (e.g. an aggregate counting the label) must not leak."""
    t = pd.Timestamp("2024-01-01", tz="UTC")
    entities = pd.DataFrame({"user_id": [1], "event_timestamp": [t]})
    rows = pd.DataFrame({"user_id": [1, 1], "event_timestamp": [t - pd.Timedelta(seconds=1), t], "clicks": [3.0, 4.0]})
    got = join_views(_table(entities), {"v": _table(rows)}, [ViewSpec("v", "user_id", "-", ("clicks",))]).to_pandas()
    assert got["clicks"].tolist() == [3.0]


def test_a_future_value_does_not_change_the_answer():
    """Leakage: a row stamped at (or after) an event's time never reaches it, even at the same second."""
    entities, users, _ = random_case(7)
    view = [ViewSpec("users", "user_id", "-", ("u",), ttl_s=600)]
    before = join_views(_table(entities), {"users": _table(users)}, view).to_pandas()["u"]
    # per user, a huge value at the second of its latest event: the future (or the present) of every event
    latest = entities.groupby("user_id", as_index=False)["event_timestamp"].max().assign(u=1e9)
    with_future = pd.concat([users.merge(latest[["user_id", "event_timestamp"]], how="left", indicator=True)
                             .query("_merge == 'left_only'").drop(columns="_merge"), latest])
    after = join_views(_table(entities), {"users": _table(with_future)}, view).to_pandas()["u"]
    assert before.fillna(-1).tolist() == after.fillna(-1).tolist()
    # the same rows do reach events one second later: the future value would have changed the answer
    later = join_views(_table(entities.assign(event_timestamp=entities["event_timestamp"] + pd.Timedelta(seconds=1))),
                       {"users": _table(with_future)}, view).to_pandas()["u"]
    assert (later == 1e9).sum() == entities["user_id"].nunique()


def test_ttl_boundary_is_inclusive():
    t = pd.Timestamp("2024-01-01", tz="UTC")
    entities = pd.DataFrame({"user_id": [1, 2], "event_timestamp": [t, t]})
    rows = pd.DataFrame({"user_id": [1, 2], "event_timestamp": [t - pd.Timedelta(seconds=10), t - pd.Timedelta(seconds=11)], "f": [1.0, 2.0]})
    got = join_views(_table(entities), {"v": _table(rows)}, [ViewSpec("v", "user_id", "-", ("f",), ttl_s=10)]).to_pandas()
    assert got["f"].fillna(-1).tolist() == [1.0, -1]
