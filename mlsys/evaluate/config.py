"""Typed configuration of the evaluation gate: sliced comparison, blessing, pre-release replay, infra validation.

``configs/evaluate/default.yaml`` holds the defaults; every key can be overridden, e.g.
``evaluate.slices=[gender,occupation] evaluate.blessing.max_regression.auc=0.001``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from mlsys.config import require

# Which way is better, per metric a threshold may name (``ctr_metrics``' keys).
HIGHER_IS_BETTER = {"auc": True, "user_auc": True, "logloss": False}


def _check_metrics(key: str, values: dict) -> None:
    for metric in values:
        require(metric in HIGHER_IS_BETTER, f"{key}.{metric}", metric, f"one of {sorted(HIGHER_IS_BETTER)}")


@dataclass
class BlessingConfig:
    """When a candidate is blessed (may be pushed).

    Value thresholds hold alone for the first model of a registry; with a champion the candidate
    must also be no worse than it by more than ``max_regression`` overall and ``max_slice_regression``
    on every slice with at least ``min_slice_examples`` examples (on the same eval data).
    """

    # metric -> the least acceptable value (higher-is-better metrics) or the largest (logloss).
    thresholds: dict[str, float] = field(default_factory=lambda: {"auc": 0.70})
    # metric -> how much worse than the champion the candidate may be (absolute), overall.
    max_regression: dict[str, float] = field(default_factory=lambda: {"auc": 0.002, "logloss": 0.005})
    # metric -> the same on each slice (slices are smaller, so noisier).
    max_slice_regression: dict[str, float] = field(default_factory=lambda: {"auc": 0.02})
    min_slice_examples: int = 500

    def __post_init__(self):
        for key in ("thresholds", "max_regression", "max_slice_regression"):
            _check_metrics(f"evaluate.blessing.{key}", getattr(self, key))
        for key in ("max_regression", "max_slice_regression"):
            for metric, eps in getattr(self, key).items():
                require(eps >= 0, f"evaluate.blessing.{key}.{metric}", eps, ">= 0")
        require(self.min_slice_examples >= 1, "evaluate.blessing.min_slice_examples", self.min_slice_examples, ">= 1")


@dataclass
class ReplayConfig:
    """Pre-release estimate: the most recent logged requests (the feature log) scored by the candidate."""

    enabled: bool = True
    requests: int = 1000  # the most recent logged requests replayed
    top_k: int = 10
    # Optional thresholds (null: report only): a breach refuses the push, naming the number.
    max_psi: Optional[float] = None
    min_top_k_overlap: Optional[float] = None
    max_top_item_changed: Optional[float] = None

    def __post_init__(self):
        require(self.requests >= 1, "evaluate.replay.requests", self.requests, ">= 1")
        require(self.top_k >= 1, "evaluate.replay.top_k", self.top_k, ">= 1")
        for key in ("min_top_k_overlap", "max_top_item_changed"):
            value = getattr(self, key)
            require(value is None or 0 <= value <= 1, f"evaluate.replay.{key}", value, "between 0 and 1, or null")
        require(self.max_psi is None or self.max_psi >= 0, "evaluate.replay.max_psi", self.max_psi, ">= 0, or null")


@dataclass
class InfraValidationConfig:
    """The candidate package in a sandbox Serve app (the production app builder, another port) before a push."""

    enabled: bool = True
    requests: int = 30  # canned /v1/rank requests, drawn from the eval data
    candidates: int = 20  # items per request
    tolerance: float = 1e-5  # |served score - offline score|
    p99_budget_ms: float = 1000.0
    timeout_s: float = 180.0  # to deploy and answer

    def __post_init__(self):
        require(self.requests >= 1, "evaluate.infra.requests", self.requests, ">= 1")
        require(self.candidates >= 1, "evaluate.infra.candidates", self.candidates, ">= 1")
        require(self.tolerance >= 0, "evaluate.infra.tolerance", self.tolerance, ">= 0")
        require(self.p99_budget_ms > 0, "evaluate.infra.p99_budget_ms", self.p99_budget_ms, "> 0")
        require(self.timeout_s > 0, "evaluate.infra.timeout_s", self.timeout_s, "> 0")


@dataclass
class EvaluateConfig:
    """``evaluate.slices=[gender,occupation]``: categorical features to slice by, besides user activity
    and item popularity (``buckets`` quantile buckets each, from the training data)."""

    slices: list[str] = field(default_factory=list)
    buckets: int = 3
    bootstrap: int = 200  # resamples for the confidence intervals (0: none)
    confidence: float = 0.95
    seed: int = 0
    blessing: BlessingConfig = field(default_factory=BlessingConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    infra: InfraValidationConfig = field(default_factory=InfraValidationConfig)
    push: bool = True  # a blessed, infra-validated version gets the registry alias (registry.alias)

    def __post_init__(self):
        require(self.buckets >= 1, "evaluate.buckets", self.buckets, ">= 1")
        require(self.bootstrap >= 0, "evaluate.bootstrap", self.bootstrap, ">= 0")
        require(0 < self.confidence < 1, "evaluate.confidence", self.confidence, "between 0 and 1")
