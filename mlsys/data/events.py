"""Per-user event logic, plain pandas: splits, behaviour sequences, joins.

Events are sorted by (timestamp, item_id) within a user. "Before" an event
means a strictly earlier timestamp, so events in the same second never see
each other: no leakage from the future, ties included.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EVENT_ORDER = ["timestamp", "item_id"]


def split_user_events(events: pd.DataFrame, eval_fraction: float) -> pd.DataFrame:
    """Mark the last ``floor(n * eval_fraction)`` events of one user as ``eval``.

    >>> split_user_events(pd.DataFrame({"timestamp": [3, 1, 2, 4, 5], "item_id": [1] * 5}), 0.2).split.tolist()
    ['train', 'train', 'train', 'train', 'eval']
    """
    df = events.sort_values(EVENT_ORDER, kind="stable")
    n_eval = int(len(df) * eval_fraction)
    split = np.full(len(df), "train", dtype=object)
    if n_eval:
        split[-n_eval:] = "eval"
    return df.assign(split=split)


def add_history(events: pd.DataFrame, length: int) -> pd.DataFrame:
    """Add ``history``: the last ``length`` clicked items strictly before each event.

    ``events`` hold one user's events with ``timestamp``, ``item_id``, ``label``.
    """
    df = events.sort_values(EVENT_ORDER, kind="stable")
    ts = df["timestamp"].to_numpy()
    clicked = df["label"].to_numpy() > 0
    clicked_ts, clicked_items = ts[clicked], df["item_id"].to_numpy()[clicked]
    n_before = np.searchsorted(clicked_ts, ts, side="left")  # clicks with earlier timestamps
    history = [clicked_items[max(0, n - length) : n] for n in n_before]
    return df.assign(history=history)


def last_clicks(events: pd.DataFrame, length: int) -> list:
    """The user's last ``length`` clicked items over all of ``events`` (for serving)."""
    df = events[events["label"] > 0].sort_values(EVENT_ORDER, kind="stable")
    items = df["item_id"].to_numpy()
    return items[len(items) - length :].tolist() if length > 0 else []


def join_features(events: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Attach user and item attributes; unknown ids keep nulls (the OOV path)."""
    return events.merge(users, on="user_id", how="left").merge(items, on="item_id", how="left")
