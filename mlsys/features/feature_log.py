"""Feature logging: what serving actually used, written asynchronously to Parquet.

The ranking service hands each scored request to a :class:`FeatureLogger`:
the raw feature rows it built from the online store (one per candidate, the
columns the preprocessor reads), the model name and version, the scores and
the request id. ``log`` samples the request (``sample_rate``, decided by a
hash of the request id, so a replay samples the same requests), and puts it
on a bounded buffer without waiting (:class:`~mlsys.features.batcher.Batcher`); a full buffer
drops the request and counts it. A background thread drains it in batches and writes one Parquet
file per batch under ``<directory>/date=YYYY-MM-DD/``. A failed write is
counted, never raised: logging never slows or fails a request.

:func:`join_labels` turns the log and clicks that arrive later into training
rows: the logged features exactly as served, plus the label.

>>> logger = FeatureLogger(FeatureLoggingConfig(sample_rate=1.0), "/tmp/log")  # doctest: +SKIP
>>> logger.log(LoggedRequest("req-1", "ctr", "3", frame, scores))              # doctest: +SKIP
True
>>> logger.close(); rows = join_labels(read_feature_log("/tmp/log"), clicks)    # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from mlsys.features.batcher import Batcher
from mlsys.features.request import Rows, as_columns

# Columns every log row has besides the raw feature columns.
LOG_COLUMNS = ("request_id", "logged_at", "model", "model_version", "position", "score")


@dataclass
class FeatureLoggingConfig:
    """``serve.feature_logging.sample_rate=0.1 serve.feature_logging.queue_size=1000``."""

    enabled: bool = True
    # Fraction of requests logged (all their candidates), by a hash of the request id.
    sample_rate: float = 1.0
    # Requests waiting to be written; beyond this, requests are dropped (and counted).
    queue_size: int = 10000
    # A batch is written when it has this many rows, or after `flush_seconds`.
    batch_rows: int = 5000
    flush_seconds: float = 2.0
    # Where the Parquet files go; empty: `<home>/features/feature_log`.
    path: str = ""

    def __post_init__(self):
        from mlsys.config import require

        require(0.0 <= self.sample_rate <= 1.0, "serve.feature_logging.sample_rate", self.sample_rate, "between 0 and 1")
        require(self.queue_size >= 1, "serve.feature_logging.queue_size", self.queue_size, ">= 1")
        require(self.batch_rows >= 1, "serve.feature_logging.batch_rows", self.batch_rows, ">= 1")
        require(self.flush_seconds > 0, "serve.feature_logging.flush_seconds", self.flush_seconds, "> 0")


@dataclass(frozen=True)
class LoggedRequest:
    """One scored request: ``frame`` has one raw feature row per candidate (a DataFrame, or its
    columns: :func:`~mlsys.features.request.as_columns`), ``scores`` aligned with it. ``frame`` may
    be a function returning it: serving passes one, so the rows are built on the writer's thread,
    not on the request's path."""

    request_id: str
    model: str
    model_version: str | None
    frame: "Rows | Callable[[], Rows]"
    scores: np.ndarray
    logged_at: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))

    def features(self) -> Rows:
        return self.frame() if callable(self.frame) else self.frame

    def rows(self) -> pd.DataFrame:
        """This request's log rows, as :func:`read_feature_log` reads them back."""
        return log_table([self]).to_pandas()


def log_table(requests: list[LoggedRequest]) -> pa.Table:
    """The log rows of ``requests`` as one Arrow table: the :data:`LOG_COLUMNS`, then the feature
    columns (their union, in first-seen order; a column a request lacks is null in its rows).

    Built column by column, each in a few short calls: the writer thread shares the GIL with the
    request loop, and one long conversion (pandas' of 5,000 list cells took ~40 ms) is a stall of
    every request waiting behind it."""
    frames = [as_columns(r.features()) for r in requests]
    counts = np.array([len(r.scores) for r in requests], dtype=np.int64)
    if any(len(column) != n for f, n in zip(frames, counts) for column in f.values()):
        raise ValueError("a logged request's scores and feature rows differ in length")

    owner = pa.array(np.repeat(np.arange(len(requests)), counts))  # each row's request

    def each(values, type=None) -> pa.Array:  # one value per request, repeated over its rows
        return pa.array(values, type=type).take(owner)

    columns = {
        "request_id": each([r.request_id for r in requests], pa.string()),
        "logged_at": each([_utc_us(r.logged_at) for r in requests], pa.timestamp("us", tz="UTC")),
        "model": each([r.model for r in requests], pa.string()),
        "model_version": each([None if r.model_version is None else str(r.model_version) for r in requests], pa.string()),
        "position": pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in counts])),
        "score": pa.array(np.concatenate([np.asarray(r.scores, dtype=np.float32).reshape(-1) for r in requests])),
    }
    names = list(dict.fromkeys(name for f in frames for name in f if name not in columns))
    for name in names:
        columns[name] = arrow_column(np.concatenate([
            f[name] if name in f else np.full(n, None, dtype=object) for f, n in zip(frames, counts)]))
    return pa.table(columns)


def arrow_column(values: np.ndarray) -> pa.Array:
    """A column as Arrow, as ``pa.Table.from_pandas`` converts it (NaN and None are null). An object
    column converts each distinct object once: a request's history is one list repeated on every
    candidate's row, so 100 candidates cost one conversion, not 100."""
    if values.dtype != object or len(values) == 0:
        return pa.array(values, from_pandas=True)
    ids = np.fromiter(map(id, values), dtype=np.uint64, count=len(values))
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    if len(first) == len(values):
        return pa.array(values, from_pandas=True)
    return pa.array(values[first], from_pandas=True).take(pa.array(inverse.reshape(-1)))


def _utc_us(at: pd.Timestamp) -> int:
    at = pd.Timestamp(at)
    return (at if at.tzinfo is not None else at.tz_localize("UTC")).value // 1000


def sampled(request_id: str, sample_rate: float) -> bool:
    """Whether a request is logged: deterministic in the request id.

    >>> sampled("any", 1.0), sampled("any", 0.0)
    (True, False)
    """
    return zlib.crc32(request_id.encode()) < sample_rate * 2**32


@dataclass
class LoggerCounters:
    """What happened to logged requests (exported as service metrics)."""

    sampled_out: int = 0
    queued: int = 0
    dropped: int = 0
    written_rows: int = 0
    written_files: int = 0
    write_errors: int = 0


class FeatureLogger:
    """A bounded buffer drained by one writer thread (see the module docstring)."""

    def __init__(self, config: FeatureLoggingConfig, directory: str):
        self.config = config
        self.directory = Path(directory)
        self.counters = LoggerCounters()
        self._lock = threading.Lock()
        self._batcher = Batcher("mlsys-feature-log", self._write, capacity=config.queue_size,
                                batch_rows=config.batch_rows, flush_seconds=config.flush_seconds)

    def log(self, request: LoggedRequest) -> bool:
        """Queue ``request`` if sampled; never blocks. True if queued."""
        if not sampled(request.request_id, self.config.sample_rate):
            self._count("sampled_out")
            return False
        if not self._batcher.offer(request, len(request.scores)):
            self._count("dropped")
            return False
        self._count("queued")
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and stop the writer."""
        self._batcher.close(timeout)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self.counters, name, getattr(self.counters, name) + n)

    def _write(self, batch: list[LoggedRequest]) -> None:
        from mlsys import storage

        try:
            table = log_table(batch)
            day = batch[0].logged_at.strftime("%Y-%m-%d")
            storage.write_table(table, str(self.directory / f"date={day}" / f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"))
        except Exception as e:  # never let a bad batch stop the writer
            self._count("write_errors")
            print(f"[feature-log] write failed, {len(batch)} request(s) lost: {type(e).__name__}: {e}")
            return
        self._count("written_rows", table.num_rows)
        self._count("written_files")


def read_feature_log(directory: str) -> pd.DataFrame:
    """Every logged row under ``directory``, in request order (empty frame if none)."""
    import pyarrow.dataset as ds

    files = sorted(str(p) for p in Path(directory).rglob("part-*.parquet"))
    if not files:
        return pd.DataFrame(columns=list(LOG_COLUMNS))
    frame = ds.dataset(files, format="parquet").to_table().to_pandas()
    return frame.sort_values(["logged_at", "request_id", "position"], kind="stable").reset_index(drop=True)


def join_labels(log: pd.DataFrame, labels: pd.DataFrame, window: pd.Timedelta = pd.Timedelta(days=1)) -> pd.DataFrame:
    """Training rows: each logged (request, candidate) with its label.

    ``labels`` has ``user_id``, ``item_id``, ``timestamp`` (epoch seconds or
    datetimes) and ``label``, and optionally ``request_id``. With a request id
    a label joins its (request, item); without one (no column, or a null) it joins the latest logged
    row of the same (user, item) served at most ``window`` before it (the
    impression it answers). A logged row with no label is a negative (label 0):
    shown, not clicked.

    >>> log = pd.DataFrame({"request_id": ["r"], "logged_at": [pd.Timestamp(100, unit="s", tz="UTC")],
    ...                     "user_id": [1], "item_id": [7], "score": [0.5]})
    >>> join_labels(log, pd.DataFrame({"user_id": [1], "item_id": [7], "timestamp": [160], "label": [1]})).label.tolist()
    [1.0]
    """
    labels = labels.assign(timestamp=_utc(labels["timestamp"]))
    by_request = labels["request_id"].notna() if "request_id" in labels.columns else pd.Series(False, index=labels.index)
    keys = ["request_id", "item_id"]
    hits = [log[keys].reset_index().merge(labels.loc[by_request, [*keys, "label"]], on=keys)] if by_request.any() else []
    if not by_request.all():  # labels without a request id: the latest impression of the same user and item
        keys = ["user_id", "item_id"]
        events = labels.loc[~by_request, [*keys, "timestamp", "label"]].reset_index(names="event")
        near = log[[*keys, "logged_at"]].reset_index().merge(events, on=keys)
        near = near[(near["timestamp"] >= near["logged_at"]) & (near["timestamp"] <= near["logged_at"] + window)]
        hits.append(near.sort_values("logged_at", kind="stable").groupby("event").tail(1))
    label = pd.concat([h[["index", "label"]] for h in hits]).groupby("index")["label"].max() if hits else pd.Series(dtype=np.float64)
    out = log.copy()
    out["label"] = label.reindex(out.index).fillna(0).to_numpy(dtype=np.float64)
    return out


def _utc(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values):
        return pd.to_datetime(values, unit="s", utc=True)
    return pd.to_datetime(values, utc=True)


def default_log_dir(project: str, home: str) -> str | None:
    """``<home>/features/<project>/feature_log`` beside the offline store; None for a remote home."""
    if "://" in home and not home.startswith("file://"):
        return None
    return str(Path(home.removeprefix("file://")).resolve() / "features" / project / "feature_log")
