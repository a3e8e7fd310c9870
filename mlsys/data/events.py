"""Per-user event logic, plain NumPy over pandas or pyarrow: splits, behaviour sequences, joins.

Events are ordered by (user, timestamp, item_id). "Before" an event means a
strictly earlier timestamp of the same user, so events in the same second
never see each other: no leakage from the future, ties included.

Each function takes any number of whole users at once (all of a user's
events, in any order) and is vectorised over them: the data steps call it on
a partition of users, in one process or in a Ray task, and the result is the
same however users are grouped into calls. The pandas forms
(:func:`split_user_events`, :func:`add_history`, :func:`last_clicks`,
:func:`join_features`) state the contract; the ``*_table`` forms are the same
computation on ``pyarrow.Table`` blocks, which is what the steps run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

EVENT_ORDER = ["timestamp", "item_id"]
# Ingest's row order: a user's events by time, then columns that make the order total,
# so the written partitions are the same bytes whatever order rows arrived in.
TIEBREAK = ("label", "rating")


# -- the core: positions over rows sorted by (user, timestamp, item) ---------------------


def _column(frame, name: str) -> np.ndarray:
    column = frame[name] if isinstance(frame, pd.DataFrame) else frame.column(name)
    return column.to_numpy()


def _users(frame) -> np.ndarray:
    """``user_id``, or one user when the frame has none (a single user's events)."""
    names = frame.columns if isinstance(frame, pd.DataFrame) else frame.column_names
    return _column(frame, "user_id") if "user_id" in names else np.zeros(len(frame), dtype=np.int64)


def event_order(frame, tiebreak: tuple[str, ...] = ()) -> np.ndarray | None:
    """Row positions sorting ``frame`` by (user, timestamp, item_id, *tiebreak), stable;
    None when it is sorted already (as the files ingest writes are: no copy needed)."""
    present = set(frame.columns if isinstance(frame, pd.DataFrame) else frame.column_names)
    order = ["user_id", "timestamp", "item_id", *tiebreak]
    order = [c for c in order if c in present or c == "user_id"]  # no user_id: one user (constant key)
    keys = [_users(frame) if c == "user_id" else _column(frame, c) for c in order]
    if _is_sorted(keys):
        return None
    if isinstance(frame, pd.DataFrame):
        return np.lexsort(keys[::-1])
    # Arrow's multi-key sort (stable, as lexsort) took about a third of lexsort's time on 500k rows.
    return pc.sort_indices(frame, sort_keys=[(c, "ascending") for c in order if c in present]).to_numpy()


def _is_sorted(keys: list[np.ndarray]) -> bool:
    """Rows already in the lexicographic order of ``keys`` (most significant first)? One O(n) pass."""
    tied = np.ones(max(0, len(keys[0]) - 1), dtype=bool)
    for k in keys:
        before, after = k[:-1], k[1:]
        if (tied & (before > after)).any():
            return False
        tied &= before == after
    return True


def _in_order(frame, tiebreak: tuple[str, ...] = ()):
    order = event_order(frame, tiebreak)
    if order is None:
        return frame
    return frame.iloc[order] if isinstance(frame, pd.DataFrame) else frame.take(order)


def _new_runs(*sorted_keys: np.ndarray) -> np.ndarray:
    n = len(sorted_keys[0])
    new = np.zeros(n, dtype=bool)
    new[:1] = True
    for k in sorted_keys:
        new[1:] |= k[1:] != k[:-1]
    return new


def _starts(new: np.ndarray) -> np.ndarray:
    return np.maximum.accumulate(np.where(new, np.arange(len(new)), 0))


def eval_mask(users: np.ndarray, eval_fraction: float) -> np.ndarray:
    """Rows sorted by user: True for each user's last ``floor(n * eval_fraction)`` rows."""
    new = _new_runs(users)
    run = np.cumsum(new) - 1
    size = np.bincount(run)[run] if len(users) else np.zeros(0, dtype=np.int64)
    n_eval = (size * eval_fraction).astype(np.int64)  # int(n * f), as floor for n >= 0
    return np.arange(len(users)) - _starts(new) >= size - n_eval


def history_bounds(users: np.ndarray, ts: np.ndarray, clicked: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by (user, timestamp): each row's history is ``clicked_items[lo:hi]``,
    where ``clicked_items`` are the items of the clicked rows in that order."""
    before = np.concatenate([[0], np.cumsum(clicked)])  # clicks at positions < k
    hi = before[_starts(_new_runs(users, ts))]  # clicks of earlier seconds (same user: see lo)
    lo = np.maximum(before[_starts(_new_runs(users))], hi - length)
    return lo, hi


def last_click_bounds(users: np.ndarray, clicked: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by user: ``(first row of each user, lo, hi)`` of the user's last ``length`` clicked items."""
    before = np.concatenate([[0], np.cumsum(clicked)])
    new = _new_runs(users)
    first = np.flatnonzero(new)
    ends = np.r_[first[1:], len(users)]
    hi = before[ends]
    return first, np.maximum(before[first], hi - length), hi


def _list_column(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> pa.ListArray:
    """``[values[lo[i]:hi[i]] for i]`` as an Arrow list column, without a Python loop."""
    lengths = hi - lo
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    take = np.repeat(lo - offsets[:-1], lengths) + np.arange(offsets[-1])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values[take]))


# -- pyarrow blocks: what the data steps run ----------------------------------------------


def split_table(events: pa.Table, eval_fraction: float) -> pa.Table:
    """:func:`split_user_events` on a block of whole users: rows in (user, time, item, label, rating) order."""
    events = _in_order(events, TIEBREAK)
    mask = eval_mask(_users(events), eval_fraction)
    return events.append_column("split", pc.if_else(pa.array(mask, pa.bool_()), "eval", "train"))


def _sequence_rows(events, every_event: bool) -> np.ndarray:
    """The rows whose items make behaviour sequences: clicked ones, or with ``every_event`` all of them."""
    if every_event:
        return np.ones(len(events), dtype=bool)
    return _column(events, "label") > 0


def history_table(events: pa.Table, length: int, every_event: bool = False) -> pa.Table:
    """:func:`add_history` on a block of whole users: a ``list<int64>`` ``history`` column."""
    events = _in_order(events)
    clicked = _sequence_rows(events, every_event)
    lo, hi = history_bounds(_users(events), _column(events, "timestamp"), clicked, length)
    items = _column(events, "item_id")[clicked].astype(np.int64)
    return events.append_column("history", _list_column(items, lo, hi))


def last_clicks_table(events: pa.Table, length: int, every_event: bool = False) -> pa.Table:
    """Each user's last ``length`` clicked items (``every_event``: items) over all their events: ``user_id``, ``history``."""
    events = _in_order(events.select(["user_id", "item_id", "timestamp", "label"]))
    users, clicked = _column(events, "user_id"), _sequence_rows(events, every_event)
    first, lo, hi = last_click_bounds(users, clicked, length)
    items = _column(events, "item_id")[clicked].astype(np.int64)
    return pa.table({"user_id": pa.array(users[first]), "history": _list_column(items, lo, hi)})


def latest_given_table(events: pa.Table) -> pa.Table:
    """Each user's given behaviour sequence (a ``history`` column) at their last event: ``user_id``, ``history``."""
    events = _in_order(events)
    users = _users(events)
    last = np.flatnonzero(np.r_[users[1:] != users[:-1], True]) if len(users) else np.zeros(0, dtype=np.int64)
    return pa.table({"user_id": pa.array(users[last]), "history": events.column("history").take(pa.array(last))})


def _attach(events: pa.Table, key: str, attributes: pa.Table) -> pa.Table:
    index = pd.Index(attributes.column(key).to_numpy(zero_copy_only=False))
    if not index.is_unique:
        raise ValueError(f"the {key.removesuffix('_id')} table names some {key} more than once; give each one row")
    position = index.get_indexer(events.column(key).to_numpy(zero_copy_only=False))
    rows = attributes.drop_columns([key]).take(pa.array(position, mask=position < 0))  # unknown ids: nulls
    for name, column in zip(rows.column_names, rows.columns):
        events = events.append_column(name, column)
    return events


def join_table(events: pa.Table, users: pa.Table, items: pa.Table) -> pa.Table:
    """Attach user and item attributes; unknown ids keep nulls (the OOV path)."""
    return _attach(_attach(events, "user_id", users), "item_id", items)


# -- pandas: the contract -----------------------------------------------------------------


def split_user_events(events: pd.DataFrame, eval_fraction: float) -> pd.DataFrame:
    """Mark each user's last ``floor(n * eval_fraction)`` events (by time, then item) as ``eval``.

    Rows come back in event order, with their index. Without ``user_id``, all rows are one user.

    >>> split_user_events(pd.DataFrame({"timestamp": [3, 1, 2, 4, 5], "item_id": [1] * 5}), 0.2).split.tolist()
    ['train', 'train', 'train', 'train', 'eval']
    """
    df = _in_order(events)
    return df.assign(split=np.where(eval_mask(_users(df), eval_fraction), "eval", "train").astype(object))


def add_history(events: pd.DataFrame, length: int, every_event: bool = False) -> pd.DataFrame:
    """Add ``history``: the last ``length`` items the user clicked (``every_event``: had an event
    with) strictly before each event.

    ``events`` hold ``timestamp``, ``item_id``, ``label`` (and ``user_id``, else one user).
    """
    df = _in_order(events)
    clicked = _sequence_rows(df, every_event)
    lo, hi = history_bounds(_users(df), df["timestamp"].to_numpy(), clicked, length)
    items = df["item_id"].to_numpy()[clicked]
    return df.assign(history=[items[a:b] for a, b in zip(lo, hi)])


def last_clicks(events: pd.DataFrame, length: int, every_event: bool = False) -> list:
    """One user's last ``length`` clicked items (``every_event``: items) over all of ``events`` (for serving)."""
    df = _in_order(events.assign(user_id=0))
    items = df["item_id"].to_numpy()[_sequence_rows(df, every_event)]
    return items[max(0, len(items) - length) :].tolist() if length > 0 else []


def join_features(events: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Attach user and item attributes; unknown ids keep nulls (the OOV path)."""
    def table(df: pd.DataFrame) -> pa.Table:
        return pa.Table.from_pandas(df, preserve_index=False)

    return join_table(table(events), table(users), table(items)).to_pandas()
