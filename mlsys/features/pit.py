"""Point-in-time (as-of) join of label events with feature rows: the plain core.

Semantics (the same as :func:`mlsys.data.events.add_history`): an event at time
``T`` sees, per view, the latest row of its key with timestamp **strictly
before** ``T`` (``ts < T``) and, for a view with a TTL, not older than it
(``ts >= T - ttl``); otherwise the view's features are null. Feast's offline
stores use ``ts <= T``: a row stamped at the event's own time (an aggregate
that counts the event itself) would leak the label. See docs/features.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa

ENTITY_TIMESTAMP = "event_timestamp"


@dataclass(frozen=True)
class ViewSpec:
    """One feature view as the join needs it (see :func:`mlsys.features.offline.view_specs`)."""

    name: str
    key: str  # join key column, in both the entity rows and the view rows
    path: str  # Parquet source
    features: tuple[str, ...]
    timestamp: str = "event_timestamp"
    ttl_s: Optional[int] = None  # None: no TTL


def timestamps_ns(column) -> np.ndarray:
    """An Arrow/pandas timestamp column as int64 nanoseconds since the epoch (UTC)."""
    if isinstance(column, (pa.ChunkedArray, pa.Array)):
        column = column.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
        return column.to_numpy()
    return pd.to_datetime(column, utc=True).astype("datetime64[ns, UTC]").to_numpy().astype("datetime64[ns]").view(np.int64)


def _dense_ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks of the distinct values (equal values, equal ranks), by one sort."""
    order = np.argsort(values)
    ordered = values[order]
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
    return ranks


def asof_indices(entity_keys: np.ndarray, entity_ts: np.ndarray, view_keys: np.ndarray, view_ts: np.ndarray,
                 ttl_ns: Optional[int]) -> np.ndarray:
    """For each entity row, the index of its view row (strictly earlier, within TTL), or -1.

    Keys become dense codes and timestamps ranks over both sides, so ``(code, rank)``
    packs into one int64 and the as-of lookup is one ``searchsorted`` over the view
    rows sorted by it. Among view rows with the same key and time, the last one wins.

    >>> asof_indices(np.array([1, 1, 2]), np.array([5, 9, 5]), np.array([1, 1]), np.array([5, 7]), None).tolist()
    [-1, 1, -1]
    """
    out = np.full(len(entity_ts), -1, dtype=np.int64)
    if len(view_ts) == 0 or len(entity_ts) == 0:
        return out
    n = len(view_ts)
    code = _dense_ranks(np.concatenate([view_keys, entity_keys]))  # a key only the entities have matches no row
    rank = _dense_ranks(np.concatenate([view_ts, entity_ts]))
    view_code, entity_code = code[:n], code[n:]
    view_packed, entity_packed = (view_code << 32) | rank[:n], (entity_code << 32) | rank[n:]
    order = np.argsort(view_packed, kind="stable")
    needles = np.argsort(entity_packed)  # sorted needles: searchsorted walks memory in order
    pos = np.empty(len(entity_ts), dtype=np.int64)
    pos[needles] = np.searchsorted(view_packed[order], entity_packed[needles], side="left") - 1  # last (code, t) < (code, T)
    candidate = order[np.maximum(pos, 0)]
    ok = (pos >= 0) & (view_code[candidate] == entity_code)
    if ttl_ns:
        ok &= view_ts[candidate] >= entity_ts - ttl_ns
    out[ok] = candidate[ok]
    return out


def join_view(entities: pa.Table, rows: pa.Table, view: ViewSpec) -> pa.Table:
    """``entities`` with ``view.features`` appended (null where no row qualifies)."""
    if rows.num_rows == 0 or entities.num_rows == 0:
        idx = np.full(entities.num_rows, -1, dtype=np.int64)
    else:
        idx = asof_indices(entities[view.key].to_numpy(), timestamps_ns(entities[ENTITY_TIMESTAMP]),
                           rows[view.key].to_numpy(), timestamps_ns(rows[view.timestamp]),
                           None if not view.ttl_s else view.ttl_s * 1_000_000_000)
    take = pa.array(idx, mask=idx < 0)
    for name in view.features:
        entities = entities.append_column(name, rows[name].take(take))
    return entities


def join_views(entities: pa.Table, rows: dict[str, pa.Table], views: list[ViewSpec]) -> pa.Table:
    """All ``views`` joined onto ``entities`` (rows by view name)."""
    for view in views:
        entities = join_view(entities, rows[view.name], view)
    return entities
