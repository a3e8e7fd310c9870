"""Fresh features: a new interaction updates the user's online features at once.

:class:`FeaturePusher` reads the user's current ``user_sequence`` and
``user_aggregates`` rows (the serving read path), applies the event and
writes both rows back through Feast's push sources
(``store.push(..., to=PushMode.ONLINE)``); the next ranking request reads them.

- behaviour sequence: a click (an explicit ``clicked``, else ``rating >= data.click_threshold``)
  appends the item, or with ``data.history_of=events`` every event does; the last
  ``data.history_length`` items are kept, oldest first, as the offline view builds them;
- aggregates, for every window: ``events += 1``, ``clicks += clicked``, the
  mean rating takes the new rating in (weighted by the window's events), and
  the click-through rate is recomputed. Events leaving a window are not
  subtracted online: the next materialization recomputes the windows exactly.

A row is stamped at the event time, or just after the stored row's time if
that is later (Feast's Redis store ignores writes older than what it holds).
Updates of one user are serialised within a process; the serving app pushes
from its replica. The threshold, the length and what the sequence holds are the store's
feature schema (:func:`~mlsys.features.store.stored_schema`), the one its views were built from.

>>> push_event(cfg, home, Interaction(user_id=7, item_id=50, rating=5.0))  # doctest: +SKIP
PushResult(user_id=7, clicked=True, history=[..., 50], aggregates={'clicks_7d': 3.0, ...})
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pandas as pd

from mlsys.data.config import HistoryOf
from mlsys.data.feature_schema import FeatureSchema
from mlsys.features.config import FeaturesConfig
from mlsys.features.definitions import HISTORY, PUSH_SOURCES, TIMESTAMP, USER_AGGREGATES, USER_KEY, USER_SEQUENCE
from mlsys.features.online import OnlineFeatureReader


@dataclass(frozen=True)
class Interaction:
    """A user's rating (or click) of an item; ``timestamp`` defaults to now (UTC)."""

    user_id: int
    item_id: int
    rating: float | None = None
    clicked: bool | None = None  # default: rating >= the click threshold
    timestamp: datetime | None = None


@dataclass(frozen=True)
class PushResult:
    user_id: int
    clicked: bool
    history: list[int]
    aggregates: dict[str, float | None]


def updated_aggregates(current: dict, windows: list[int], ctr_window: int, clicked: bool, rating: float | None) -> dict:
    """The aggregates row after one more event in every window.

    >>> updated_aggregates({}, [7], 7, True, 5.0)
    {'clicks_7d': 1.0, 'events_7d': 1.0, 'mean_rating_7d': 5.0, 'ctr_7d': 1.0}
    """
    out = {}
    for w in sorted(windows):
        events = current.get(f"events_{w}d") or 0.0
        mean = current.get(f"mean_rating_{w}d")
        out[f"clicks_{w}d"] = (current.get(f"clicks_{w}d") or 0.0) + float(clicked)
        out[f"events_{w}d"] = events + 1.0
        if rating is None:
            out[f"mean_rating_{w}d"] = mean
        else:
            out[f"mean_rating_{w}d"] = float(rating) if mean is None else (mean * events + rating) / (events + 1.0)
    out[f"ctr_{ctr_window}d"] = out[f"clicks_{ctr_window}d"] / out[f"events_{ctr_window}d"]
    return out


class FeaturePusher:
    """Applies interactions to the online store of ``store`` (a ``feast.FeatureStore`` built from ``schema``)."""

    def __init__(self, store, cfg: FeaturesConfig, schema: FeatureSchema, reader: OnlineFeatureReader | None = None):
        self.store = store
        self.cfg = cfg
        self.history_length = schema.history_length
        self.click_threshold = schema.click_threshold
        self.every_event = HistoryOf(schema.history_of) is HistoryOf.events
        self.reader = reader or OnlineFeatureReader.from_store(store)
        self._lock = threading.Lock()

    def push(self, event: Interaction) -> PushResult:
        from feast.data_source import PushMode

        if event.rating is None and event.clicked is None:
            raise ValueError("an interaction needs a rating or clicked")
        clicked = bool(event.clicked) if event.clicked is not None else event.rating >= self.click_threshold
        at = event.timestamp or datetime.now(timezone.utc)
        at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
        with self._lock:
            sequence, aggregates = self.reader.read_many([(USER_SEQUENCE, [event.user_id]), (USER_AGGREGATES, [event.user_id])])
            history = list(sequence[HISTORY][0] or [])
            if clicked or self.every_event:
                history = (history + [int(event.item_id)])[-self.history_length :]
            current = {k: v[0] for k, v in aggregates.items() if k != "_found"}
            new = updated_aggregates(current, list(self.cfg.window_days), self.cfg.ctr_window_days, clicked, event.rating)
            for view, row in ((USER_SEQUENCE, {HISTORY: [history]}), (USER_AGGREGATES, {k: [v] for k, v in new.items()})):
                frame = pd.DataFrame({USER_KEY: [int(event.user_id)], TIMESTAMP: [self._stamp(view, event.user_id, at)], **row})
                self.store.push(PUSH_SOURCES[view], frame, to=PushMode.ONLINE)
        return PushResult(int(event.user_id), clicked, history, new)

    def _stamp(self, view: str, user_id: int, at: datetime) -> pd.Timestamp:
        stored = self.reader.timestamp(view, user_id)
        if stored is not None and stored >= at:
            at = stored + timedelta(microseconds=1)
        return pd.Timestamp(at)


def push_event(cfg: FeaturesConfig, home: str, event: Interaction) -> PushResult:
    """The Python call: apply one interaction to the online store under ``home`` (its own schema)."""
    from mlsys.features.store import open_store, stored_schema

    return FeaturePusher(open_store(cfg, home), cfg, stored_schema(cfg, home)).push(event)
