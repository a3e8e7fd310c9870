"""Offline source tables of the feature views, from ingested events (plain pandas/NumPy).

Every row carries ``event_timestamp`` (UTC), the time from which its values hold.
Aggregate and sequence rows are stamped at one of the user's event times and
*include* the events at that time; the point-in-time join (strictly earlier
rows only) is what keeps a label event from seeing itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlsys.data.feature_schema import KEY_OF, FeatureSchema, Kind, Table, as_text
from mlsys.features.definitions import HISTORY, ITEM_KEY, TIMESTAMP, USER_KEY

DAY_S = 86_400
_SHIFT = np.int64(1) << 34  # per-user offset in the combined (user, second) sort key; seconds < 2**34


def to_timestamp(seconds) -> pd.Series:
    """Unix seconds -> ``datetime64[ns, UTC]``."""
    return pd.to_datetime(np.asarray(seconds, dtype=np.int64), unit="s", utc=True)


def profile_column(values: pd.Series, kind: Kind):
    """A side-table column as its view stores it: categorical values as text (one Feast dtype
    whatever the file held), numbers as float32, multi-hot values as lists of text; nulls stay null."""
    if kind is Kind.numeric:
        return values.to_numpy(dtype=np.float32, na_value=np.nan)
    if kind is Kind.multi_hot:
        return [None if v is None or (np.ndim(v) == 0 and pd.isna(v)) else [str(x) for x in v] for v in values]
    return [as_text(v.item() if isinstance(v, np.generic) else v) for v in values]


def profile_rows(attributes: pd.DataFrame, schema: FeatureSchema, table: Table, valid_from_s: int) -> pd.DataFrame:
    """A side table (users or items, keyed by ``user_id``/``item_id``) as its profile view's rows:
    the key, the schema's features of that table, all stamped at ``valid_from_s``.

    >>> from mlsys.data.feature_schema import Feature
    >>> s = FeatureSchema((Feature("brand", Kind.categorical, Table.items),), {})
    >>> rows = profile_rows(pd.DataFrame({"item_id": [1], "brand": [7]}), s, Table.items, 0)
    >>> rows.brand.tolist(), rows.event_timestamp.iloc[0].year
    (['7'], 1970)
    """
    key = KEY_OF[table]
    out = {key: attributes[key].to_numpy(dtype=np.int64)}
    for name in schema.table_features(table):
        out[name] = profile_column(attributes[name], schema.kind(name))
    out[TIMESTAMP] = to_timestamp(np.full(len(attributes), valid_from_s))
    return pd.DataFrame(out)


def _sorted_events(events: pd.DataFrame) -> pd.DataFrame:
    return events.sort_values([USER_KEY, "timestamp", ITEM_KEY], kind="stable").reset_index(drop=True)


def _combined_key(users: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    codes = np.unique(users, return_inverse=True)[1].astype(np.int64)
    return codes * _SHIFT + seconds.astype(np.int64)


def user_aggregate_rows(events: pd.DataFrame, window_days: list[int], ctr_window_days: int) -> pd.DataFrame:
    """One row per (user, distinct event second): counts over the windows ``(t - W days, t]``.

    ``clicks_{W}d``, ``events_{W}d``, ``mean_rating_{W}d`` (null without events
    or a ``rating`` column) and ``ctr_{C}d`` = clicks/events over ``C`` days.

    >>> e = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [5, 6, 7], "timestamp": [0, 86_400, 10 * 86_400],
    ...                   "label": [1.0, 0.0, 1.0], "rating": [5.0, 2.0, 4.0]})
    >>> user_aggregate_rows(e, [7], 7)[["clicks_7d", "events_7d", "mean_rating_7d"]].values.tolist()
    [[1.0, 1.0, 5.0], [1.0, 2.0, 3.5], [1.0, 1.0, 4.0]]
    """
    df = _sorted_events(events)
    key = _combined_key(df[USER_KEY].to_numpy(), df["timestamp"].to_numpy())
    last = np.r_[key[1:] != key[:-1], True]  # the last event of each (user, second)
    hi = np.flatnonzero(last) + 1  # events [user start, hi) are at or before t
    user_start = np.searchsorted(key, (key[last] // _SHIFT) * _SHIFT, side="left")
    clicks = np.r_[0.0, np.cumsum(df["label"].to_numpy(dtype=np.float64) > 0)]
    has_rating = "rating" in df and df["rating"].notna().any()
    ratings = df["rating"].to_numpy(dtype=np.float64) if has_rating else np.zeros(len(df))
    rating_sum = np.r_[0.0, np.cumsum(np.nan_to_num(ratings))]
    rating_n = np.r_[0.0, np.cumsum(~np.isnan(ratings))] if has_rating else np.zeros(len(df) + 1)
    out = {USER_KEY: df[USER_KEY].to_numpy()[last], TIMESTAMP: to_timestamp(df["timestamp"].to_numpy()[last])}
    for w in sorted(window_days):
        lo = np.maximum(np.searchsorted(key, key[last] - w * DAY_S, side="right"), user_start)
        n_events, n_clicks = (hi - lo).astype(np.float64), clicks[hi] - clicks[lo]
        n_rated = rating_n[hi] - rating_n[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_rating = np.where(n_rated > 0, (rating_sum[hi] - rating_sum[lo]) / n_rated, np.nan)
        out[f"clicks_{w}d"], out[f"events_{w}d"], out[f"mean_rating_{w}d"] = n_clicks, n_events, mean_rating
        if w == ctr_window_days:
            out[f"ctr_{w}d"] = n_clicks / np.maximum(n_events, 1.0)
    frame = pd.DataFrame(out)
    return frame.astype({c: np.float32 for c in frame.columns if c not in (USER_KEY, TIMESTAMP)})


def user_sequence_rows(events: pd.DataFrame, length: int, every_event: bool = False) -> pd.DataFrame:
    """One row per (user, distinct click second): ``history``, the last ``length`` clicks up to then;
    with ``every_event``, per distinct event second, the items of the last ``length`` events.

    >>> e = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [5, 6, 7], "timestamp": [1, 2, 3], "label": [1.0, 0.0, 1.0]})
    >>> user_sequence_rows(e, 2)["history"].tolist(), user_sequence_rows(e, 2, every_event=True)["history"].tolist()
    ([[5], [5, 7]], [[5], [5, 6], [6, 7]])
    """
    df = _sorted_events(events)
    if not every_event:
        df = df[df["label"].to_numpy() > 0]
    key = _combined_key(df[USER_KEY].to_numpy(), df["timestamp"].to_numpy())
    last = np.flatnonzero(np.r_[key[1:] != key[:-1], True]) if len(key) else np.array([], dtype=np.int64)
    user_start = np.searchsorted(key, (key[last] // _SHIFT) * _SHIFT, side="left")
    items = df[ITEM_KEY].to_numpy(dtype=np.int64)
    history = [items[max(s, e + 1 - length) : e + 1].tolist() for s, e in zip(user_start, last)]
    return pd.DataFrame({USER_KEY: df[USER_KEY].to_numpy()[last], TIMESTAMP: to_timestamp(df["timestamp"].to_numpy()[last]),
                         HISTORY: history})
