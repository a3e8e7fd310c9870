"""The blessing gate (plain Python): may this candidate be pushed? Every number that decided it is kept.

Value thresholds (``evaluate.blessing.thresholds``) hold on the candidate overall; with a champion
in the evaluation, the candidate must also be no worse than it by more than ``max_regression``
overall and ``max_slice_regression`` on every slice bucket with at least ``min_slice_examples``
examples. A metric that is NaN somewhere (a bucket with one class) is skipped there, not failed.

>>> decision = bless(evaluation, BlessingConfig(thresholds={"auc": 0.75}), champion_version="3")  # doctest: +SKIP
>>> decision.reason                                                                                # doctest: +SKIP
'not blessed: auc on user_activity=1-23 (812 examples): 0.701 < champion 0.733 - 0.02 (evaluate.blessing.max_slice_regression.auc)'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Optional

from mlsys.evaluate.config import HIGHER_IS_BETTER, BlessingConfig
from mlsys.evaluate.slices import ALL, OVERALL, Evaluation

Kind = Literal["threshold", "regression"]
CANDIDATE, CHAMPION = "candidate", "champion"


def _n(x: float) -> str:
    return f"{x:.4g}"


@dataclass(frozen=True)
class Check:
    """One comparison the gate made. ``threshold``: the least (or, for logloss, largest) acceptable value
    for a ``"threshold"`` check; the allowed regression ε for a ``"regression"`` check against ``reference``."""

    metric: str
    slice: str
    bucket: str
    kind: Kind
    value: float
    reference: Optional[float]
    threshold: float
    examples: int
    passed: bool

    @property
    def key(self) -> str:
        """The config key that set the threshold: what to change to let this check pass."""
        group = "thresholds" if self.kind == "threshold" else "max_regression" if self.slice == OVERALL else "max_slice_regression"
        return f"evaluate.blessing.{group}.{self.metric}"

    def line(self) -> str:
        """``auc on user_activity=1-23 (812 examples): 0.701 < champion 0.733 - 0.02 (evaluate.blessing.max_slice_regression.auc)``."""
        where = "overall" if self.slice == OVERALL else f"on {self.slice}={self.bucket}"
        higher = HIGHER_IS_BETTER[self.metric]
        op = (">=" if higher else "<=") if self.passed else ("<" if higher else ">")
        if self.kind == "threshold":
            bound = _n(self.threshold)
        else:
            bound = f"champion {_n(self.reference)} {'-' if higher else '+'} {_n(self.threshold)}"
        return f"{self.metric} {where} ({self.examples:,} examples): {_n(self.value)} {op} {bound} ({self.key})"


@dataclass(frozen=True)
class BlessingDecision:
    """``blessed`` and its one-line ``reason``; ``checks``: every comparison made, in order."""

    blessed: bool
    reason: str
    checks: tuple[Check, ...]
    champion_version: Optional[str] = None

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def to_dict(self) -> dict:
        return {"blessed": self.blessed, "reason": self.reason, "champion_version": self.champion_version,
                "checks": [asdict(c) for c in self.checks]}

    @classmethod
    def from_dict(cls, d: dict) -> "BlessingDecision":
        return cls(bool(d["blessed"]), d["reason"], tuple(Check(**c) for c in d["checks"]), d.get("champion_version"))


def _better_or_equal(metric: str, value: float, bound: float) -> bool:
    return value >= bound if HIGHER_IS_BETTER[metric] else value <= bound


def threshold_checks(evaluation: Evaluation, cfg: BlessingConfig) -> list[Check]:
    """The candidate's overall value against each ``thresholds`` entry (NaN values skipped)."""
    out = []
    for metric, bound in cfg.thresholds.items():
        value = evaluation.value(CANDIDATE, metric)
        if not math.isnan(value):
            out.append(Check(metric, OVERALL, ALL, "threshold", value, None, bound, evaluation.examples(),
                             _better_or_equal(metric, value, bound)))
    return out


def regression_checks(evaluation: Evaluation, cfg: BlessingConfig) -> list[Check]:
    """Candidate against champion: overall (``max_regression``), then every bucket with enough examples."""
    out = []
    for slice_, bucket in evaluation.buckets:
        overall = slice_ == OVERALL
        examples = evaluation.examples(slice_, bucket)
        if not overall and examples < cfg.min_slice_examples:
            continue
        for metric, eps in (cfg.max_regression if overall else cfg.max_slice_regression).items():
            value, reference = evaluation.value(CANDIDATE, metric, slice_, bucket), evaluation.value(CHAMPION, metric, slice_, bucket)
            if math.isnan(value) or math.isnan(reference):
                continue
            bound = reference - eps if HIGHER_IS_BETTER[metric] else reference + eps
            out.append(Check(metric, slice_, bucket, "regression", value, reference, eps, examples,
                             _better_or_equal(metric, value, bound)))
    return out


def bless(evaluation: Evaluation, cfg: BlessingConfig, champion_version: str | None) -> BlessingDecision:
    """The gate's decision on ``evaluation``'s candidate (see the module docstring).

    >>> bless(Evaluation(()), BlessingConfig(thresholds={}), None).reason
    'blessed: no thresholds configured and no champion'
    """
    has_champion = CHAMPION in evaluation.models
    checks = threshold_checks(evaluation, cfg) + (regression_checks(evaluation, cfg) if has_champion else [])
    failed = [c for c in checks if not c.passed]
    if failed:
        return BlessingDecision(False, f"not blessed: {failed[0].line()}", tuple(checks), champion_version)
    return BlessingDecision(True, _summary(checks, has_champion, champion_version), tuple(checks), champion_version)


def _slices(buckets: set) -> str:
    return f"{len(buckets)} slice{'s' * (len(buckets) != 1)}"


def _summary(checks: list[Check], has_champion: bool, champion_version: str | None) -> str:
    """``blessed: auc 0.781 >= 0.7; no worse than champion v3 (auc 0.776) by more than auc 0.002 overall and on 9 slices``."""
    values = [f"{c.metric} {_n(c.value)} {'>=' if HIGHER_IS_BETTER[c.metric] else '<='} {_n(c.threshold)}"
              for c in checks if c.kind == "threshold"]
    parts = [", ".join(values)] if values else []
    if has_champion:
        overall = [c for c in checks if c.kind == "regression" and c.slice == OVERALL]
        buckets = {(c.slice, c.bucket) for c in checks if c.kind == "regression" and c.slice != OVERALL}
        name = f"champion v{champion_version}" if champion_version else "the champion"
        refs = ", ".join(f"{c.metric} {_n(c.reference)}" for c in overall)
        eps = ", ".join(f"{c.metric} {_n(c.threshold)}" for c in overall)
        if overall:
            compared = f"no worse than {name} ({refs}) by more than {eps} overall" + (f" and on {_slices(buckets)}" if buckets else "")
        else:
            compared = f"no worse than {name} on {_slices(buckets)}" if buckets else f"{name}: no regression checks apply"
        parts.append(compared)
    elif values:
        parts.append("no champion: value thresholds alone")
    return "blessed: " + ("; ".join(parts) if parts else "no thresholds configured and no champion")
