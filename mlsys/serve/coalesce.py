"""Dynamic batching without a timer: the requests that reach a replica in one turn of its event loop
are scored in one call.

A caller's items join the pending list and it awaits its future; the first of a turn schedules the
flush for the loop's next turn (``loop.call_soon``), so everything that arrives before the flush runs
is in it. A lone request therefore waits one turn of the loop (microseconds), never a batch window;
under load, the requests that arrived while the loop was busy scoring are the next batch. This is
what the fused graph's ingress uses (``serve.batching``): behind HAProxy's direct ingress a handler
runs straight to its scoring call, so ``@serve.batch``'s window either never sees a second request
(scored at once) or makes every request wait ``wait_s`` for a batch that does not fill.

    coalescer = Coalescer(score, max_callers=16)   # score(keys, items) -> one result per item
    scores = await coalescer.submit(keys, items)  # this caller's results, in its order

``score`` may return an exception for an item (a failing version's requests, the others scored):
that caller gets it raised. An exception raised by ``score`` itself goes to every caller of the call.
Plain asyncio, tested without Ray (tests/unit/test_coalesce.py).
"""

from __future__ import annotations

import asyncio
from typing import Callable


class Coalescer:
    """One ``score(keys, items)`` call for the callers of one event-loop turn, at most ``max_callers``
    callers a call (more are scored in further calls of the same flush)."""

    def __init__(self, score: Callable[[list, list], list], max_callers: int):
        if max_callers < 1:
            raise ValueError(f"max_callers must be >= 1, got {max_callers}")
        self._score, self.max_callers = score, max_callers
        self._pending: list = []  # (keys, items, future) per caller, in arrival order

    async def submit(self, keys: list, items: list) -> list:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((keys, items, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for at in range(0, len(pending), self.max_callers):
            self._call(pending[at:at + self.max_callers])

    def _call(self, callers: list) -> None:
        keys = [k for ks, _, _ in callers for k in ks]
        items = [i for _, its, _ in callers for i in its]
        try:
            results = self._score(keys, items)
        except Exception as e:  # noqa: BLE001 - raised to every caller of this call
            for _, _, future in callers:
                if not future.done():  # a caller that went away (its request cancelled) is skipped
                    future.set_exception(e)
            return
        at = 0
        for _, its, future in callers:
            mine, at = results[at:at + len(its)], at + len(its)
            if future.done():
                continue
            failed = next((r for r in mine if isinstance(r, BaseException)), None)
            if failed is not None:
                future.set_exception(failed)
            else:
                future.set_result(mine)
