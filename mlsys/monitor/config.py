"""Typed configuration of monitoring: what serving replicas sketch (``serve.monitoring``) and how the
windows they write are compared (``monitor``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlsys import storage
from mlsys.config import require


def monitor_dir(path: str, home_root: str) -> str:
    """``serve.monitoring.path``, or ``<home>/monitor``, as an absolute path (replicas run elsewhere)."""
    return storage.absolute(path) if path else storage.join(storage.absolute(home_root), "monitor")


@dataclass
class OnlineStatisticsConfig:
    """``serve.monitoring``: each ingress replica sketches the raw feature rows it scored and the
    scores, per window, with the statistics step's accumulators, off the request's path
    (``serve.monitoring.window_s=60 serve.monitoring.sample_rate=0.5``)."""

    enabled: bool = True
    # Windows are aligned to the clock (multiples of window_s since the epoch), the same in every replica.
    window_s: float = 300.0
    # Fraction of requests sketched, by a hash of the request id (1.0: all).
    sample_rate: float = 1.0
    # Requests waiting to be sketched; beyond this, requests are skipped (and counted).
    queue_size: int = 10000
    # Sketch what is queued after this long, or at this many rows (one table per batch of requests).
    flush_seconds: float = 1.0
    batch_rows: int = 20000
    # Where replicas write their window parts and the merged windows go; empty: `<home>/monitor`.
    path: str = ""

    def __post_init__(self):
        require(self.window_s > 0, "serve.monitoring.window_s", self.window_s, "> 0 seconds")
        require(0.0 <= self.sample_rate <= 1.0, "serve.monitoring.sample_rate", self.sample_rate, "between 0 and 1")
        require(self.queue_size >= 1, "serve.monitoring.queue_size", self.queue_size, ">= 1")
        require(self.flush_seconds > 0, "serve.monitoring.flush_seconds", self.flush_seconds, "> 0")
        require(self.batch_rows >= 1, "serve.monitoring.batch_rows", self.batch_rows, ">= 1")


@dataclass
class DriftThresholds:
    """Per-measure limits (``linf`` for categorical features, ``js``/``psi`` for numeric ones)."""

    linf: float = 0.1
    js: float = 0.1
    psi: float = 0.25


@dataclass
class MonitorConfig:
    """``monitor``: how merged windows are judged (skew against the serving version's training
    statistics, drift against the previous window, the score distribution too)."""

    # A window is merged once it ended this long ago (replicas flush their parts every flush_seconds).
    grace_s: float = 10.0
    skew: DriftThresholds = field(default_factory=DriftThresholds)
    drift: DriftThresholds = field(default_factory=lambda: DriftThresholds(linf=0.1, js=0.1, psi=0.2))
    # Per-feature overrides: {"gender": {"linf": 0.05}}.
    features: dict[str, dict[str, float]] = field(default_factory=dict)
    # Features never compared (ids and times move by design).
    ignore: list[str] = field(default_factory=lambda: ["timestamp", "user_id", "item_id", "request_id"])
    # A window with fewer rows than this is kept but not judged (its distances are noise).
    min_rows: int = 200

    def __post_init__(self):
        require(self.grace_s >= 0, "monitor.grace_s", self.grace_s, ">= 0 seconds")
        require(self.min_rows >= 0, "monitor.min_rows", self.min_rows, ">= 0")
        for side in ("skew", "drift"):
            for measure, value in vars(getattr(self, side)).items():
                require(value > 0, f"monitor.{side}.{measure}", value, "> 0")
