"""Freshness signals: how old what the service stands on is, in seconds, for alert rules.

- ``freshness.materialized_s``: since the online store last received rows (the materialization
  watermark file's write; features=feast only). Stale online features serve yesterday's users.
- ``freshness.window_s``: since the newest merged window ended. Serving stopped sketching (or has
  no traffic): the drift rules see nothing.
- ``freshness.model_s``: since the serving version was registered (the model itself ages).
- ``freshness.labels_s``: since the newest label (``POST /v1/events`` or the label files): online
  quality and online learning starve without them.

A time that is unknown (no online store, no window yet) gives no signal, so no rule fires on it::

    freshness_signals(now, materialized_at=1.7e9, last_window_end=None, model_created_at=1.6e9)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def freshness_signals(now: float, materialized_at: Optional[float] = None, last_window_end: Optional[float] = None,
                      model_created_at: Optional[float] = None, last_label_at: Optional[float] = None) -> dict[str, float]:
    """
    >>> freshness_signals(100.0, materialized_at=40.0, last_window_end=None)
    {'freshness.materialized_s': 60.0}
    """
    times = {"materialized_s": materialized_at, "window_s": last_window_end, "model_s": model_created_at, "labels_s": last_label_at}
    return {f"freshness.{name}": max(0.0, now - t) for name, t in times.items() if t is not None}


def modified_at(path: Optional[str]) -> Optional[float]:
    """A local file's last write (epoch s), or None."""
    try:
        return os.path.getmtime(path) if path else None
    except OSError:
        return None


def last_window_end(root: Path) -> Optional[float]:
    """The end of the newest window judged under a model's monitor folder (``windows/<version>/*.report.json``)."""
    import json

    newest = max(root.glob("windows/*/*.report.json"), key=lambda p: float(p.name.split(".")[0]), default=None)
    return float(json.loads(newest.read_text())["end"]) if newest is not None else None
