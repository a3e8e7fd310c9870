"""Service health of one model version in one window: requests answered, errors, events received, and a
latency histogram over fixed buckets, mergeable across replicas by adding (plain Python, no Ray).

The ingress replicas record it beside the online statistics (:class:`~mlsys.monitor.online.WindowSketcher`
writes it in each window part, :func:`~mlsys.monitor.online.merge_windows` adds the parts up), and the
release's per-variant windows (:class:`mlsys.serve.release.VariantWindow`) use the same buckets and quantile.

>>> w = ServiceWindow()
>>> for ms in (3.0, 4.0, 40.0):
...     w.answered(ms)
>>> w.failed(500); w.failed(422)
>>> w.summary()["p50_ms"], w.summary()["errors"], w.summary()["error_rate"]
(5.0, 1, 0.2)
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# Latency buckets (ms, upper edges; the last bucket is everything above the last edge).
LATENCY_EDGES_MS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000, 2000, 5000)


def latency_bucket(ms: float) -> int:
    """The bucket of ``ms``: the first edge >= it (``len(LATENCY_EDGES_MS)``: above them all).

    >>> latency_bucket(0.4), latency_bucket(5.0), latency_bucket(5.1), latency_bucket(9000)
    (0, 3, 4, 20)
    """
    return bisect.bisect_left(LATENCY_EDGES_MS, ms)


def latency_quantile(counts: list[int], q: float) -> float:
    """The upper edge of the bucket holding the ``q`` quantile of a histogram over :data:`LATENCY_EDGES_MS`
    (0 when empty; infinity when it falls above the last edge).

    >>> latency_quantile([0, 0, 3, 1] + [0] * 17, 0.5), latency_quantile([0] * 21, 0.99)
    (3.0, 0.0)
    """
    total = sum(counts)
    if not total:
        return 0.0
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= q * total:
            return float(LATENCY_EDGES_MS[i]) if i < len(LATENCY_EDGES_MS) else float("inf")
    return float("inf")


def slower_than(counts: list[int], ms: float) -> int:
    """How many requests of a histogram over :data:`LATENCY_EDGES_MS` were certainly slower than ``ms``:
    those in buckets whose lower edge is at or above it.

    >>> slower_than([5, 0, 0, 2, 1] + [0] * 16, 3.0), slower_than([5, 0, 0, 2, 1] + [0] * 16, 4.0)
    (3, 1)
    """
    return sum(n for i, n in enumerate(counts) if i and LATENCY_EDGES_MS[i - 1] >= ms)


@dataclass
class ServiceWindow:
    """``requests``: answered (2xx), each with its latency in ``latency``; ``errors``: 5xx answers;
    ``client_errors``: 4xx (requests refused as invalid); ``events``: ``POST /v1/events`` received."""

    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    events: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_EDGES_MS) + 1))

    def answered(self, latency_ms: float) -> None:
        self.requests += 1
        self.latency[latency_bucket(latency_ms)] += 1

    def failed(self, status: int) -> None:
        if status >= 500:
            self.errors += 1
        elif status >= 400:
            self.client_errors += 1

    def merge(self, other: "ServiceWindow") -> "ServiceWindow":
        return ServiceWindow(self.requests + other.requests, self.errors + other.errors, self.client_errors + other.client_errors,
                             self.events + other.events, [a + b for a, b in zip(self.latency, other.latency)])

    @property
    def total(self) -> int:
        return self.requests + self.errors + self.client_errors

    def summary(self) -> dict:
        """``{"requests", "errors", "client_errors", "events", "error_rate", "p50_ms", "p99_ms"}``; the error
        rate is 5xx answers over every answer (0 with none); the quantiles are None with no answered request."""
        answered = self.requests > 0
        return {"requests": self.requests, "errors": self.errors, "client_errors": self.client_errors, "events": self.events,
                "error_rate": self.errors / self.total if self.total else 0.0,
                "p50_ms": latency_quantile(self.latency, 0.5) if answered else None,
                "p99_ms": latency_quantile(self.latency, 0.99) if answered else None}

    def to_dict(self) -> dict:
        return {"requests": self.requests, "errors": self.errors, "client_errors": self.client_errors, "events": self.events,
                "latency": list(self.latency)}

    @classmethod
    def from_dict(cls, d: dict | None) -> "ServiceWindow":
        """``{}`` or None (a part or window written before service health was recorded): an empty window."""
        if not d:
            return cls()
        latency = [int(n) for n in d["latency"]]
        if len(latency) != len(LATENCY_EDGES_MS) + 1:
            raise ValueError(f"a latency histogram has {len(LATENCY_EDGES_MS) + 1} buckets, not {len(latency)}")
        return cls(int(d["requests"]), int(d["errors"]), int(d.get("client_errors", 0)), int(d.get("events", 0)), latency)
