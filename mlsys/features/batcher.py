"""A bounded buffer drained in batches by one background thread: the feature log's writer and the
online statistics' sketcher (:class:`~mlsys.features.feature_log.FeatureLogger`,
:class:`~mlsys.monitor.online.WindowSketcher`).

The request's side only appends (``offer``: a lock and a deque, never a wait). The thread is woken
once per batch (``batch_rows`` rows offered), by ``flush``/``close``, or by its own clock every
``flush_seconds``, not once per request as a ``queue.Queue`` woke it (two thread switches a request
for each of the two users, in a serving replica whose requests share the GIL with them). A batch is
handled once it has ``batch_rows`` rows, or ``flush_seconds`` after its first item arrived, or at
``flush``/``close``.

    batcher = Batcher("mlsys-feature-log", write, capacity=10_000, batch_rows=5_000, flush_seconds=2.0)
    batcher.offer(item, rows=100)   # False when full: the caller counts the drop
    batcher.close()                 # handles what is left, then the thread ends
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Optional

_STOP = object()


class Batcher:
    """``handle(items)`` runs on the thread for each batch; ``after(everything)`` (optional) after each
    wake, ``everything`` True at a flush or the close. Neither may raise (the thread would end)."""

    def __init__(self, name: str, handle: Callable[[list], None], capacity: int, batch_rows: int, flush_seconds: float,
                 after: Optional[Callable[[bool], None]] = None):
        self.capacity, self.batch_rows, self.flush_seconds = capacity, batch_rows, flush_seconds
        self._handle, self._after = handle, after
        self._items: deque = deque()  # (item, rows)
        self._control: list = []  # flush Events and _STOP, taken by the thread at its next wake
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._rows_since_wake = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def offer(self, item: Any, rows: int) -> bool:
        """Append ``item`` (of ``rows`` rows) unless ``capacity`` items wait already; never blocks."""
        with self._lock:
            if len(self._items) >= self.capacity:
                return False
            self._items.append((item, rows))
            self._rows_since_wake += rows
            full = self._rows_since_wake >= self.batch_rows
            if full:
                self._rows_since_wake = 0
        if full:
            self._wake.set()
        return True

    def flush(self, timeout: float = 30.0) -> None:
        """Handle everything offered so far (and call ``after(True)``) before returning, or after ``timeout``."""
        done = threading.Event()
        self._signal(done)
        done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Handle everything offered, then stop the thread."""
        self._signal(_STOP)
        self._thread.join(timeout)

    def _signal(self, control) -> None:
        with self._lock:
            self._control.append(control)
        self._wake.set()

    def _run(self) -> None:
        batch: list = []
        rows, deadline = 0, None
        while True:
            self._wake.wait(self.flush_seconds if deadline is None else max(0.0, deadline - time.monotonic()))
            self._wake.clear()
            with self._lock:
                control, self._control = self._control, []
                taken = [self._items.popleft() for _ in range(len(self._items))]
                self._rows_since_wake = 0
            for item, n in taken:
                batch.append(item)
                rows += n
                deadline = deadline or time.monotonic() + self.flush_seconds
                if rows >= self.batch_rows:
                    self._handle(batch)
                    batch, rows, deadline = [], 0, None
            if batch and (control or time.monotonic() >= deadline):
                self._handle(batch)
                batch, rows, deadline = [], 0, None
            if self._after is not None:
                self._after(bool(control))
            for c in control:
                if c is not _STOP:
                    c.set()
            if _STOP in control:
                return
