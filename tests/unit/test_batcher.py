"""mlsys.features.batcher: the background batching under the feature log and the online statistics."""

from __future__ import annotations

import threading
import time

from mlsys.features.batcher import Batcher


class Seen:
    def __init__(self):
        self.batches, self.wakes = [], []
        self.handled = threading.Event()

    def handle(self, items):
        self.batches.append(list(items))
        self.handled.set()

    def after(self, everything):
        self.wakes.append(everything)


def test_the_thread_wakes_once_per_full_batch_not_once_per_item():
    seen = Seen()
    batcher = Batcher("test", seen.handle, capacity=100, batch_rows=10, flush_seconds=60, after=seen.after)
    for i in range(9):
        assert batcher.offer(i, rows=1)
    time.sleep(0.3)
    assert seen.wakes == [] and seen.batches == []  # nine offers: the thread slept through them
    assert batcher.offer(9, rows=1)
    assert seen.handled.wait(10)
    assert seen.batches == [list(range(10))] and seen.wakes == [False]
    batcher.close()
    assert seen.wakes == [False, True]


def test_a_partial_batch_goes_after_flush_seconds_at_a_flush_and_at_the_close():
    seen = Seen()
    batcher = Batcher("test", seen.handle, capacity=100, batch_rows=1000, flush_seconds=0.2, after=seen.after)
    batcher.offer("a", rows=3)
    assert seen.handled.wait(10) and seen.batches == [["a"]]  # its deadline passed: written without a flush
    batcher.offer("b", rows=3)
    batcher.flush()
    assert seen.batches == [["a"], ["b"]] and seen.wakes[-1] is True
    batcher.offer("c", rows=3)
    batcher.close()
    assert seen.batches[-1] == ["c"] and not batcher._thread.is_alive()


def test_a_full_buffer_refuses_without_waiting_and_keeps_what_it_took():
    release = threading.Event()
    seen = Seen()

    def slow(items):
        release.wait(10)
        seen.handle(items)

    batcher = Batcher("test", slow, capacity=3, batch_rows=1, flush_seconds=60)
    taken = [batcher.offer(i, rows=1) for i in range(3)]
    time.sleep(0.2)  # the thread took the first three and is stuck writing them
    started = time.perf_counter()
    later = [batcher.offer(i, rows=1) for i in range(3, 1000)]
    assert time.perf_counter() - started < 0.5
    release.set()
    batcher.close()
    kept = [i for batch in seen.batches for i in batch]
    assert all(taken) and sum(later) == len(kept) - 3 < len(later) and kept == sorted(kept) and kept[:3] == [0, 1, 2]
