"""The serving metrics (Ray Serve's metrics API: exported by every node's Prometheus endpoint as ``ray_mlsys_*``).

Every series carries ``model``, ``version`` and ``variant`` (``champion``, ``candidate`` of a canary, ``shadow``;
Serve adds ``deployment``, ``replica``, ``application``):

- ``mlsys_requests`` / ``mlsys_errors`` (by ``route``; errors also by ``status``);
- ``mlsys_stage_latency_ms`` by ``stage``: ``features`` (fetch + preprocessor), ``embedding``, ``dense``,
  ``score`` (the fused graph) and ``request`` (the whole request, in the ingress);
- ``mlsys_batch_size`` (requests per batched scoring call, by ``stage``: ``dense`` for the dense deployment's
  ``@serve.batch``, ``score`` for the fused ingress's coalesced turns) and ``mlsys_candidates``
  (rows per request);
- ``mlsys_unknown_users``, ``mlsys_unknown_items``, ``mlsys_events``, ``mlsys_cache_hits``, ``mlsys_cache_misses``;
- ``mlsys_score``: the scores each variant answered (a histogram over [0, 1]);
- ``mlsys_serving`` (a gauge, by ``version`` and ``variant``: 1 while it serves) and ``mlsys_refused`` (by
  ``version`` and ``reason``: 1 once a version the registry named was refused, e.g. a failed checksum).

The same requests, errors, events and request latencies also go to the replica's online statistics
(:meth:`mlsys.monitor.online.WindowSketcher.served`, where ``serve.monitoring`` is on): the monitor's
windows keep each version's service health under the home, beside its drift. Shadow scoring is not
service traffic and stays out of it; errors count there on the scoring routes only.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

LATENCY_MS = [0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]
SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]
COUNTERS = ("requests", "errors", "unknown_users", "unknown_items", "events", "cache_hits", "cache_misses")
SCORING_ROUTES = ("/v1/rank", "/v2/infer")  # whose errors are the service's (not /healthz's 404s)
SCORES = [0.05 * i for i in range(1, 20)]


class ReplicaState:
    """What the app's HTTP middleware needs of the replica it runs in: set by the ingress at start.

    A module attribute, not ``FastAPI.state``: Serve runs a copy of the app object that the
    deployment class pickled, so the middleware and the replica would not share that one. For the
    same reason ``mlsys.serve.app`` imports it inside each function that uses it: bound at that
    module's top, the ingress and the guard held different objects in the replica and the guard
    counted no 422s (tests/integration/test_serving.py's Prometheus test caught it)."""

    max_body_bytes: int = 4 * 1024 * 1024
    metrics: "ServingMetrics | None" = None


REPLICA = ReplicaState()


class _Series:
    """The metric objects, made once per process and shared by every version's :class:`ServingMetrics`."""

    def __init__(self):
        from ray.serve import metrics

        base = ("model", "version", "variant")
        self.counters = {name: metrics.Counter(f"mlsys_{name}", description=f"mlsys serving: {name.replace('_', ' ')}",
                                               tag_keys=(*base, "route", "status")) for name in COUNTERS}
        self.latency = metrics.Histogram("mlsys_stage_latency_ms", description="mlsys serving: latency per stage (ms)",
                                         boundaries=LATENCY_MS, tag_keys=(*base, "stage"))
        self.batch = metrics.Histogram("mlsys_batch_size", description="mlsys serving: requests per batched scoring call",
                                       boundaries=SIZES, tag_keys=(*base, "stage"))
        self.rows = metrics.Histogram("mlsys_candidates", description="mlsys serving: rows (candidates) per request",
                                      boundaries=SIZES, tag_keys=base)
        self.scores = metrics.Histogram("mlsys_score", description="mlsys serving: scores answered", boundaries=SCORES,
                                        tag_keys=base)
        self.serving = metrics.Gauge("mlsys_serving", description="mlsys serving: 1 while this version serves as this variant",
                                     tag_keys=base)
        self.refused = metrics.Gauge("mlsys_refused", description="mlsys serving: 1 for a version the registry named that "
                                     "this replica refused", tag_keys=("model", "version", "reason"))


_SERIES: "_Series | None" = None


def _series() -> _Series:
    global _SERIES
    if _SERIES is None:
        _SERIES = _Series()
    return _SERIES


class ServingMetrics:
    """``metrics.count("requests", route="/v1/rank")``, ``with metrics.timed("features"): ...``."""

    def __init__(self, model: str, version: str | None, variant: str = "champion"):
        self._tags = {"model": model, "version": str(version), "variant": variant}
        self._model, self._version, self._served = model, str(version), variant != "shadow"
        s = _series()
        self._counters, self._latency, self._batch, self._rows, self._scores = s.counters, s.latency, s.batch, s.rows, s.scores

    def count(self, name: str, n: int = 1, route: str = "", status: str = "") -> None:
        if n:
            self._counters[name].inc(n, tags={**self._tags, "route": route, "status": status})
            if name == "errors" and route in SCORING_ROUTES and status.isdigit():
                self._health(status=int(status))
            elif name == "events":
                self._health(events=n)

    def latency(self, stage: str, ms: float) -> None:
        self._latency.observe(ms, tags={**self._tags, "stage": stage})
        if stage == "request":
            self._health(latency_ms=ms)

    def _health(self, **observed) -> None:
        from mlsys.monitor.online import sketcher_of

        sketcher = sketcher_of(self._model) if self._served else None
        if sketcher is not None:
            sketcher.served(self._version, **observed)

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

    def scores(self, scores) -> None:
        """A sample of the answered scores (at most 4 per request, evenly spaced in candidate order: the
        histogram's shape over many requests, at a few microseconds per request)."""
        step = max(1, -(-len(scores) // 4))
        for score in scores[::step]:
            self._scores.observe(float(score), tags=dict(self._tags))

    def serving(self, on: bool) -> None:
        _series().serving.set(1.0 if on else 0.0, tags=dict(self._tags))

    @staticmethod
    def refused(model: str, version: str, reason: str) -> None:
        _series().refused.set(1.0, tags={"model": model, "version": str(version), "reason": reason})


class MetricsByVersion:
    """``metrics_of(version, variant)``: one :class:`ServingMetrics` per version and variant, made once."""

    def __init__(self, model: str):
        self._model = model
        self._made: dict = {}

    def __call__(self, version: str | None, variant: str = "champion") -> ServingMetrics:
        key = (version, variant)
        if key not in self._made:
            self._made[key] = ServingMetrics(self._model, version, variant)
        return self._made[key]
