"""Offline source tables of the feature views, from ingested events (plain pandas/NumPy).

Every row carries ``event_timestamp`` (UTC), the time from which its values hold.
Aggregate and sequence rows are stamped at one of the user's event times and
*include* the events at that time; the point-in-time join (strictly earlier
rows only) is what keeps a label event from seeing itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlsys.features.definitions import HISTORY, ITEM_KEY, TIMESTAMP, USER_KEY

DAY_S = 86_400
_SHIFT = np.int64(1) << 34  # per-user offset in the combined (user, second) sort key; seconds < 2**34


def to_timestamp(seconds) -> pd.Series:
    """Unix seconds -> ``datetime64[ns, UTC]``."""
    return pd.to_datetime(np.asarray(seconds, dtype=np.int64), unit="s", utc=True)


def profile_rows(table: pd.DataFrame, valid_from_s: int) -> pd.DataFrame:
    """A static attribute table (users or items) stamped at ``valid_from_s``.

    >>> profile_rows(pd.DataFrame({"item_id": [1], "year": [1995.0]}), 0).event_timestamp.iloc[0].year
    1970
    """
    return table.assign(**{TIMESTAMP: to_timestamp(np.full(len(table), valid_from_s))})


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


def user_sequence_rows(events: pd.DataFrame, length: int) -> pd.DataFrame:
    """One row per (user, distinct click second): ``history``, the last ``length`` clicks up to then.

    >>> e = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [5, 6, 7], "timestamp": [1, 2, 3], "label": [1.0, 0.0, 1.0]})
    >>> user_sequence_rows(e, 2)["history"].tolist()
    [[5], [5, 7]]
    """
    df = _sorted_events(events)
    df = df[df["label"].to_numpy() > 0]
    key = _combined_key(df[USER_KEY].to_numpy(), df["timestamp"].to_numpy())
    last = np.flatnonzero(np.r_[key[1:] != key[:-1], True]) if len(key) else np.array([], dtype=np.int64)
    user_start = np.searchsorted(key, (key[last] // _SHIFT) * _SHIFT, side="left")
    items = df[ITEM_KEY].to_numpy(dtype=np.int64)
    history = [items[max(s, e + 1 - length) : e + 1].tolist() for s, e in zip(user_start, last)]
    return pd.DataFrame({USER_KEY: df[USER_KEY].to_numpy()[last], TIMESTAMP: to_timestamp(df["timestamp"].to_numpy()[last]),
                         HISTORY: history})
