"""The serving metrics (Ray Serve's metrics API: exported by every node's Prometheus endpoint as ``ray_mlsys_*``).

Every series carries ``model`` and ``version`` (and Serve adds ``deployment``, ``replica``, ``application``):

- ``mlsys_requests`` / ``mlsys_errors`` (by ``route``; errors also by ``status``);
- ``mlsys_stage_latency_ms`` by ``stage``: ``features`` (fetch + preprocessor), ``embedding``, ``dense``,
  ``score`` (the fused graph) and ``request`` (the whole request, in the ingress);
- ``mlsys_batch_size`` (requests per scoring call of ``@serve.batch``, by ``stage``) and ``mlsys_candidates``
  (rows per request);
- ``mlsys_unknown_users``, ``mlsys_unknown_items``, ``mlsys_events``, ``mlsys_cache_hits``, ``mlsys_cache_misses``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

LATENCY_MS = [0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]
SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]
COUNTERS = ("requests", "errors", "unknown_users", "unknown_items", "events", "cache_hits", "cache_misses")


class ReplicaState:
    """What the app's HTTP middleware needs of the replica it runs in: set by the ingress at start.

    A module attribute, not ``FastAPI.state``: Serve runs a copy of the app object that the
    deployment class pickled, so the middleware and the replica would not share that one."""

    max_body_bytes: int = 4 * 1024 * 1024
    metrics: "ServingMetrics | None" = None


REPLICA = ReplicaState()


class ServingMetrics:
    """``metrics.count("requests", route="/v1/rank")``, ``with metrics.timed("features"): ...``."""

    def __init__(self, model: str, version: str | None):
        from ray.serve import metrics

        self._tags = {"model": model, "version": str(version)}
        keys = ("model", "version", "route", "status")
        self._counters = {name: metrics.Counter(f"mlsys_{name}", description=f"mlsys serving: {name.replace('_', ' ')}",
                                                tag_keys=keys) for name in COUNTERS}
        self._latency = metrics.Histogram("mlsys_stage_latency_ms", description="mlsys serving: latency per stage (ms)",
                                          boundaries=LATENCY_MS, tag_keys=("model", "version", "stage"))
        self._batch = metrics.Histogram("mlsys_batch_size", description="mlsys serving: requests per batched scoring call",
                                        boundaries=SIZES, tag_keys=("model", "version", "stage"))
        self._rows = metrics.Histogram("mlsys_candidates", description="mlsys serving: rows (candidates) per request",
                                       boundaries=SIZES, tag_keys=("model", "version"))

    def count(self, name: str, n: int = 1, route: str = "", status: str = "") -> None:
        if n:
            self._counters[name].inc(n, tags={**self._tags, "route": route, "status": status})

    def latency(self, stage: str, ms: float) -> None:
        self._latency.observe(ms, tags={**self._tags, "stage": stage})

    @contextmanager
    def timed(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.latency(stage, (time.perf_counter() - start) * 1000.0)

    def batch(self, stage: str, requests: int) -> None:
        self._batch.observe(requests, tags={**self._tags, "stage": stage})

    def rows(self, n: int) -> None:
        self._rows.observe(n, tags=dict(self._tags))
