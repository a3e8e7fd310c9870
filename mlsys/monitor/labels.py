"""Delayed labels: clicks that arrive after the answer, kept for online quality and online learning.

Each ingress replica appends the labels it receives through ``POST /v1/events`` to its own JSON
Lines file under ``<monitor dir>/<model>/labels/`` (one line per event, written and flushed before
the event is answered: an accepted label is not lost with the replica). A label carries the
request id of the answer it is about when the client sends it (``request_id`` from ``/v1/rank``),
else it is attributed to the latest impression of the same user and item
(:func:`mlsys.features.feature_log.join_labels`). A label file or table from elsewhere (Parquet,
CSV or JSON Lines with the same columns) is read the same way::

    log = LabelLog("/h/monitor", "ctr")
    log.append(Label(user_id=7, item_id=50, label=1, timestamp=time.time(), request_id="9f3c..."))
    read_labels("/h/monitor/ctr/labels")  # user_id, item_id, timestamp, label, request_id
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

LABEL_COLUMNS = ("user_id", "item_id", "timestamp", "label", "request_id")


def labels_dir(directory: str, model: str) -> Path:
    """Where the ingress replicas of ``model`` append the labels of ``POST /v1/events``."""
    return Path(directory) / model / "labels"


@dataclass(frozen=True)
class Label:
    user_id: int
    item_id: int
    label: int  # 1: clicked; 0: shown and explicitly not clicked
    timestamp: float  # epoch seconds, when the user acted
    request_id: Optional[str] = None  # the answer it is about (``/v1/rank``'s request_id)


class LabelLog:
    """One replica's append-only label file (a file per replica and day: replicas never share one)."""

    def __init__(self, directory: str, model: str, replica: Optional[str] = None):
        self.root = labels_dir(directory, model)
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}"
        self.written = 0
        self._lock = threading.Lock()  # the events route runs on Serve's thread pool

    def append(self, label: Label) -> None:
        """Write and flush one line; raises OSError (the event is refused, not silently dropped)."""
        line = json.dumps(asdict(label), separators=(",", ":")) + "\n"
        day = time.strftime("%Y-%m-%d", time.gmtime(label.timestamp))
        path = self.root / f"date={day}" / f"{self.replica}.jsonl"
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(line)
            self.written += 1


def read_labels(path: str) -> Optional[pd.DataFrame]:
    """Every label in a file or folder (Parquet, CSV or JSON Lines), or None when there is none.

    >>> read_labels("/nonexistent") is None
    True
    """
    root = Path(path)
    suffixes = (".parquet", ".csv", ".jsonl")
    files = sorted(p for p in root.rglob("*") if p.suffix in suffixes) if root.is_dir() else [root] if root.is_file() else []
    frames = []
    for f in files:
        if f.suffix == ".parquet":
            frames.append(pd.read_parquet(f))
        elif f.suffix == ".csv":
            frames.append(pd.read_csv(f))
        elif f.stat().st_size:
            frames.append(_read_jsonl(f))
    frames = [f for f in frames if not f.empty]
    if not frames:
        return None
    out = pd.concat(frames, ignore_index=True)
    if "request_id" in out.columns and out["request_id"].isna().all():
        out = out.drop(columns="request_id")  # labels without request ids join by user and item
    return out


def _read_jsonl(path: Path) -> pd.DataFrame:
    """A replica's file; a last line cut short by a crash is skipped (it was never acknowledged)."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
