"""Online statistics: what serving scored, sketched per window with the statistics step's accumulators.

Each ingress replica hands every scored request to a :class:`WindowSketcher`
(the raw feature rows, built lazily, and the scores): ``observe`` samples it by
a hash of the request id and queues it without waiting. A background thread
turns each batch of queued requests (``rows_per_request`` of each request's candidate rows, drawn
at random: :func:`rows_of`) into one Arrow table and folds it into
the accumulators of its (version, window): the same
:func:`~mlsys.data.statistics.block_accumulators` as the offline statistics
step, so online and offline statistics compare like for like. Windows are
aligned to the clock (``start = floor(t / window_s) * window_s``), the same in
every replica; when a window has ended, the replica writes its *part*::

    <dir>/<model>/parts/<version>/<start>/<replica>-<ns>.json   accumulators (sketches in base64)

:func:`merge_windows` (the monitor) merges every part of an ended window
exactly (moments by Chan et al., sketches by their own merge) into one
:class:`Window`, written as ``<dir>/<model>/windows/<version>/<start>.json``
with its :class:`~mlsys.data.statistics.DatasetStatistics`. A part that
arrives after its window was merged is merged in on the next call (the window
names the parts it holds), so a slow replica loses nothing.

Each part also carries the window's service health, of every request, sampled or not
(:class:`~mlsys.monitor.service.ServiceWindow`: answered requests and their latency histogram,
5xx and 4xx answers, events received), recorded by :meth:`WindowSketcher.served`; the replica's
serving metrics call it through :func:`sketcher_of`. The merge adds them up.

    sketcher = WindowSketcher(cfg, "/h/monitor", "ctr", kinds_of=lambda version: {...})
    sketcher.observe(request_id, "3", lambda: frame, scores)
    merged = merge_windows("/h/monitor", "ctr", grace_s=10)
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from mlsys import storage
from mlsys.data.statistics import DatasetStatistics, FeatureAccumulator, FeatureKind, block_accumulators, finalize, infer_kinds, merge_all
from mlsys.features.batcher import Batcher
from mlsys.features.request import as_columns
from mlsys.features.feature_log import arrow_column, sampled  # the same hash: at equal rates, the same requests as the feature log
from mlsys.monitor.config import OnlineStatisticsConfig
from mlsys.monitor.service import ServiceWindow

SCORE = "score"  # the scores' column in a window's statistics (prediction drift)
WINDOW_FORMAT = "mlsys.monitor-window/1"
_IDS = ("user_id", "item_id")
_SKETCHERS: dict[str, "WindowSketcher"] = {}  # model -> the sketcher of this process (one ingress per replica)


def sketcher_of(model: str) -> Optional["WindowSketcher"]:
    """The running :class:`WindowSketcher` of ``model`` in this process, or None (no monitoring here)."""
    return _SKETCHERS.get(model)


def window_start(at: float, window_s: float) -> float:
    """The start of the clock-aligned window holding ``at``.

    >>> window_start(130.0, 60.0)
    120.0
    """
    return math.floor(at / window_s) * window_s


@dataclass
class SketcherCounters:
    """What happened to observed requests (``/v1/metrics``' ``monitoring``)."""

    sampled_out: int = 0
    queued: int = 0
    dropped: int = 0
    sketched_requests: int = 0
    sketched_rows: int = 0
    parts_written: int = 0
    errors: int = 0


def rows_of(request_id: str, n: int, k: int) -> np.ndarray:
    """Which of a request's ``n`` candidate rows are sketched: ``k`` of them drawn without replacement,
    the same for the same request id (0: all). A uniform sample of each request's candidates keeps every
    share (the request's own features are on all its rows alike) at a tenth of the cost: turning the
    rows into Arrow is most of what sketching costs (1 ms for 100 candidates, docs/benchmarks.md).

    >>> rows_of("r", 5, 0).tolist(), len(rows_of("r", 100, 10)), rows_of("r", 100, 10).tolist() == rows_of("r", 100, 10).tolist()
    ([0, 1, 2, 3, 4], 10, True)
    """
    if k <= 0 or n <= k:
        return np.arange(n)
    import random
    import zlib

    return np.sort(np.fromiter(random.Random(zlib.crc32(request_id.encode())).sample(range(n), k), dtype=np.int64, count=k))


@dataclass
class _Observed:
    request_id: str
    version: str
    frame: Callable[[], pd.DataFrame]
    scores: np.ndarray
    at: float


@dataclass
class _Open:
    """One (version, window) being accumulated in this replica."""

    start: float
    accumulators: dict = field(default_factory=dict)
    requests: int = 0
    rows: int = 0


class WindowSketcher:
    """A bounded buffer drained by one sketching thread (a :class:`~mlsys.features.batcher.Batcher`; see the module docstring).

    ``kinds_of(version)``: the feature kinds the version's training statistics use (so a column is
    sketched as offline sketched it), or None; other columns are typed by their Arrow type."""

    def __init__(self, cfg: OnlineStatisticsConfig, directory: str, model: str,
                 kinds_of: Callable[[str], Optional[dict]] = lambda version: None,
                 replica: Optional[str] = None, clock: Callable[[], float] = time.time):
        self.cfg, self.model, self.kinds_of, self.clock = cfg, model, kinds_of, clock
        self.directory = Path(directory)
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}"
        self.counters = SketcherCounters()
        self._kinds: dict[str, dict] = {}
        self._open: dict[tuple[str, float], _Open] = {}
        self._lock = threading.Lock()
        self._service: dict[tuple[str, float], ServiceWindow] = {}  # written by request threads, under _lock
        self._batcher = Batcher("mlsys-online-statistics", self._sketch, capacity=cfg.queue_size, batch_rows=cfg.batch_rows,
                                flush_seconds=cfg.flush_seconds, after=self._write_ended)
        _SKETCHERS[model] = self

    # -- the request's side: never waits --------------------------------------------------

    def observe(self, request_id: str, version: str, frame: Callable[[], pd.DataFrame], scores, at: Optional[float] = None) -> bool:
        if not sampled(request_id, self.cfg.sample_rate):
            self._count("sampled_out")
            return False
        if not self._batcher.offer(_Observed(request_id, str(version), frame, scores, self.clock() if at is None else at), len(scores)):
            self._count("dropped")
            return False
        self._count("queued")
        return True

    def served(self, version: str, latency_ms: Optional[float] = None, status: Optional[int] = None, events: int = 0,
               at: Optional[float] = None) -> None:
        """Count one answered request and its latency (``latency_ms``), or one error answer (``status``),
        or ``events`` received, in the service health of ``version``'s window at ``at`` (default: now)."""
        key = (str(version), window_start(self.clock() if at is None else at, self.cfg.window_s))
        with self._lock:
            window = self._service.setdefault(key, ServiceWindow())
            if latency_ms is not None:
                window.answered(latency_ms)
            if status is not None:
                window.failed(status)
            window.events += events

    def flush(self, timeout: float = 30.0) -> None:
        """Sketch what is queued and write every open window's part now (a window may then have
        several parts from this replica: they merge like any others)."""
        self._batcher.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        if _SKETCHERS.get(self.model) is self:
            del _SKETCHERS[self.model]
        self._batcher.close(timeout)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self.counters, name, getattr(self.counters, name) + n)

    # -- the sketching thread ---------------------------------------------------------------

    def _sketch(self, batch: list[_Observed]) -> None:
        groups: dict[tuple[str, float], list[_Observed]] = {}
        for o in batch:
            groups.setdefault((o.version, window_start(o.at, self.cfg.window_s)), []).append(o)
        for (version, start), items in groups.items():
            try:
                table = self._table(items)
                parts = block_accumulators(table, self._kinds_for(version, table.schema))
            except Exception as e:  # a frame that does not convert: counted and said, never raised
                self._count("errors")
                print(f"[monitor] sketching {len(items)} request(s) of {self.model} version {version} failed: {type(e).__name__}: {e}")
                continue
            window = self._open.setdefault((version, start), _Open(start))
            window.accumulators = merge_all([window.accumulators, parts])
            window.requests += len(items)
            window.rows += table.num_rows
            self._count("sketched_requests", len(items))
            self._count("sketched_rows", table.num_rows)

    def _table(self, items: list[_Observed]) -> pa.Table:
        """The sampled rows of every request and their scores, as one table: gathered column by column
        (no per-request DataFrame), each converted to Arrow once, as the feature log converts them."""
        frames = [as_columns(o.frame()) for o in items]
        picks = [rows_of(o.request_id, len(o.scores), self.cfg.rows_per_request) for o in items]
        columns = {name: np.concatenate([np.asarray(f[name])[rows] for f, rows in zip(frames, picks)]) for name in frames[0]}
        columns[SCORE] = np.concatenate([np.asarray(o.scores, dtype=np.float64)[rows] for o, rows in zip(items, picks)])
        return pa.table({name: arrow_column(values) for name, values in columns.items()})

    def _kinds_for(self, version: str, schema: pa.Schema) -> dict:
        if version not in self._kinds:
            kinds = infer_kinds(schema, categorical=_IDS)
            kinds.update({k: v for k, v in (self.kinds_of(version) or {}).items() if k in kinds})
            kinds[SCORE] = FeatureKind.numeric
            self._kinds[version] = kinds
        return self._kinds[version]

    def _write_ended(self, everything: bool) -> None:
        now = self.clock()
        with self._lock:
            keys = sorted(k for k in {*self._open, *self._service} if everything or k[1] + self.cfg.window_s <= now)
            service = {k: self._service.pop(k) for k in keys if k in self._service}
        for key in keys:
            window = self._open.pop(key, None) or _Open(key[1])
            try:
                self._write_part(key[0], window, service.get(key, ServiceWindow()))
            except Exception as e:  # a full disk must not stop serving; the part is lost and counted
                self._count("errors")
                print(f"[monitor] writing the window part of {self.model} version {key[0]} failed: {type(e).__name__}: {e}")

    def _write_part(self, version: str, window: _Open, service: ServiceWindow) -> None:
        part = {"model": self.model, "version": version, "start": window.start, "window_s": self.cfg.window_s,
                "replica": self.replica, "requests": window.requests, "rows": window.rows, "service": service.to_dict(),
                "accumulators": {k: a.to_dict() for k, a in window.accumulators.items()}}
        path = _parts_dir(self.directory, self.model, version, window.start) / f"{self.replica}-{time.time_ns()}-{uuid.uuid4().hex[:6]}.json"
        storage.write_text(str(path), json.dumps(part))
        self._count("parts_written")


# -- the monitor's side: merging parts into windows ------------------------------------------


@dataclass
class Window:
    """One model version's traffic in one window, merged from every replica's part."""

    model: str
    version: str
    start: float
    end: float
    requests: int
    rows: int
    replicas: list[str]
    parts: list[str]
    statistics: DatasetStatistics
    accumulators: dict = field(default_factory=dict, repr=False)  # name -> FeatureAccumulator: what a late part merges into
    service: ServiceWindow = field(default_factory=ServiceWindow)  # every request's, where `requests` counts the sketched

    def to_dict(self) -> dict:
        meta = {k: getattr(self, k) for k in ("model", "version", "start", "end", "requests", "rows", "replicas", "parts")}
        return {"format": WINDOW_FORMAT, **meta, "statistics": self.statistics.to_dict(), "service": self.service.to_dict(),
                "accumulators": {k: a.to_dict() for k, a in self.accumulators.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Window":
        if d.get("format") != WINDOW_FORMAT:
            raise ValueError(f"not a {WINDOW_FORMAT} file (format={d.get('format')!r})")
        fields = {k: d[k] for k in ("model", "version", "start", "end", "requests", "rows", "replicas", "parts")}
        return cls(**fields, statistics=DatasetStatistics.from_dict(d["statistics"]),  # accumulators: read by merge only
                   service=ServiceWindow.from_dict(d.get("service")))

    @property
    def label(self) -> str:
        return f"{self.model} v{self.version} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.start))}"


def _model_dir(directory, model: str) -> Path:
    return Path(directory) / model


def _parts_dir(directory, model: str, version: str, start: float) -> Path:
    return _model_dir(directory, model) / "parts" / str(version) / f"{start:.0f}"


def window_path(directory, model: str, version: str, start: float) -> Path:
    return _model_dir(directory, model) / "windows" / str(version) / f"{start:.0f}.json"


def merge_windows(directory, model: str, grace_s: float = 10.0, now: Optional[float] = None) -> list[Window]:
    """Merge the parts of every window that ended at least ``grace_s`` ago into its window file;
    returns the windows written (new, or grown by a late part), oldest first.

    The window file keeps the merged accumulators and the names of the parts it holds, so a late
    part merges in exactly and a part is removed only once a written window holds it (a crash in
    between leaves a part the next call recognises and removes, not one counted twice)."""
    now = time.time() if now is None else now
    merged: list[Window] = []
    root = _model_dir(directory, model) / "parts"
    for version_dir in sorted(root.iterdir()) if root.exists() else ():
        for start_dir in sorted(version_dir.iterdir(), key=lambda p: float(p.name)):
            files = sorted(start_dir.glob("*.json"))
            if not files:
                continue
            parts = {f.name: json.loads(f.read_text()) for f in files}
            first = next(iter(parts.values()))
            start, window_s = float(first["start"]), float(first["window_s"])
            if start + window_s + grace_s > now:
                continue
            out = window_path(directory, model, version_dir.name, start)
            held = json.loads(out.read_text()) if out.exists() else None
            new = {name: p for name, p in parts.items() if held is None or name not in held["parts"]}
            if new:
                window = _merged(model, version_dir.name, start, window_s, held, list(new.values()))
                window.parts = sorted((held["parts"] if held else []) + list(new))
                storage.write_text(str(out), json.dumps(window.to_dict()))
                merged.append(window)
            for f in files:
                f.unlink(missing_ok=True)
    return sorted(merged, key=lambda w: (w.start, w.version))


def _merged(model: str, version: str, start: float, window_s: float, held: Optional[dict], parts: list[dict]) -> "Window":
    sides = [{k: FeatureAccumulator.from_dict(a) for k, a in p["accumulators"].items()} for p in [*([held] if held else []), *parts]]
    window = Window(model, version, start, start + window_s,
                    sum(p["requests"] for p in parts) + (held["requests"] if held else 0),
                    sum(p["rows"] for p in parts) + (held["rows"] if held else 0),
                    sorted({p["replica"] for p in parts} | set(held["replicas"] if held else ())), [], DatasetStatistics(0, {}))
    window.accumulators = merge_all(sides)
    window.statistics = finalize(window.accumulators, name=window.label)
    for p in [*([held] if held else []), *parts]:
        window.service = window.service.merge(ServiceWindow.from_dict(p.get("service")))
    return window


def read_windows(directory, model: str, version: Optional[str] = None) -> list[Window]:
    """Every merged window of ``model`` (of one ``version``), oldest first."""
    root = _model_dir(directory, model) / "windows"
    files = sorted(root.glob(f"{version}/*.json" if version is not None else "*/*.json"))
    windows = [Window.from_dict(json.loads(f.read_text())) for f in files if f.stem.isdigit()]
    return sorted(windows, key=lambda w: (w.start, w.version))


def previous_window(directory, model: str, window: Window) -> Optional[Window]:
    """The merged window of ``window``'s version just before it (None for its first)."""
    root = window_path(directory, model, window.version, 0).parent
    starts = [float(f.stem) for f in root.glob("*.json") if f.stem.replace(".", "").isdigit() and float(f.stem) < window.start]
    if not starts:
        return None
    return Window.from_dict(json.loads(window_path(directory, model, window.version, max(starts)).read_text()))
