"""Releases as plain Python: who answers a request, what a window of traffic says, and what to do.

The registry holds a release (:mod:`mlsys.registry.releases`); the app follows it
(:mod:`mlsys.serve.app`). Here, tested without a cluster:

- :func:`in_candidate`: the sticky split (a hash of the user id and the release, so one user
  sees one variant for the whole release);
- :class:`VariantWindow`: one variant's traffic in a window (requests, errors, a latency
  histogram, a score histogram), mergeable across replicas by adding;
- :class:`ShadowWindow`: both variants' scores on the same requests (score shift, top-k overlap);
- :class:`ReleasePolicy`: windows in, a :class:`Decision` out (hold, promote or roll back, and why).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

# The score histogram, its PSI and the top-k overlap are the evaluate layer's: the pre-release
# estimate uses them too (re-exported here for serving's callers).
from mlsys.evaluate.metrics import SCORE_BINS, score_histogram, score_psi, top_k_overlap  # noqa: F401

# The latency buckets and their quantile are the monitor's (its service windows use the same).
from mlsys.monitor.service import LATENCY_EDGES_MS, latency_bucket, latency_quantile, slower_than


class Mode(str, Enum):
    """canary: the candidate answers its share of users; shadow: it scores a copy of every request, never answers."""

    canary = "canary"
    shadow = "shadow"


def in_candidate(user_id: int, percent: float, salt: str) -> bool:
    """Whether ``user_id`` is in the candidate's ``percent`` share: a stable hash of the user and
    ``salt`` (the release: model and candidate version), the same in every replica and process."""
    if percent <= 0:
        return False
    if percent >= 100:
        return True
    digest = hashlib.blake2b(f"{salt}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 < round(percent * 100)


@dataclass
class VariantWindow:
    """One variant's traffic in one window. ``merge`` adds another replica's window."""

    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_EDGES_MS) + 1))
    scores: list[int] = field(default_factory=lambda: [0] * SCORE_BINS)

    def observe(self, latency_ms: float, scores: np.ndarray | None = None, error: bool = False) -> None:
        self.requests += 1
        self.errors += int(error)
        self.latency[latency_bucket(latency_ms)] += 1
        if scores is not None and len(scores):
            self.scores = (np.asarray(self.scores) + score_histogram(scores)).tolist()

    def merge(self, other: "VariantWindow") -> "VariantWindow":
        return VariantWindow(self.requests + other.requests, self.errors + other.errors,
                             [a + b for a, b in zip(self.latency, other.latency)], [a + b for a, b in zip(self.scores, other.scores)])

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile_ms(self, q: float) -> float:
        """The upper edge of the latency bucket holding the ``q`` quantile (0 with no requests)."""
        return latency_quantile(self.latency, q)

    def summary(self) -> dict:
        return {"requests": self.requests, "errors": self.errors, "error_rate": round(self.error_rate, 4),
                "p50_ms": self.quantile_ms(0.5), "p99_ms": self.quantile_ms(0.99)}

    def to_dict(self) -> dict:
        return {"requests": self.requests, "errors": self.errors, "latency": list(self.latency), "scores": list(self.scores)}

    @classmethod
    def from_dict(cls, d: dict) -> "VariantWindow":
        return cls(int(d["requests"]), int(d["errors"]), list(d["latency"]), list(d["scores"]))


@dataclass
class ShadowWindow:
    """Shadow traffic in a window: both variants' scores on the same requests."""

    requests: int = 0
    overlap_sum: float = 0.0
    champion: VariantWindow = field(default_factory=VariantWindow)
    candidate: VariantWindow = field(default_factory=VariantWindow)

    def observe(self, champion: np.ndarray, candidate: np.ndarray, k: int, champion_ms: float, candidate_ms: float) -> None:
        self.requests += 1
        self.overlap_sum += top_k_overlap(champion, candidate, k)
        self.champion.observe(champion_ms, champion)
        self.candidate.observe(candidate_ms, candidate)

    @property
    def overlap(self) -> float:
        return self.overlap_sum / self.requests if self.requests else 1.0

    def merge(self, other: "ShadowWindow") -> "ShadowWindow":
        return ShadowWindow(self.requests + other.requests, self.overlap_sum + other.overlap_sum,
                            self.champion.merge(other.champion), self.candidate.merge(other.candidate))

    def to_dict(self) -> dict:
        return {"requests": self.requests, "overlap_sum": self.overlap_sum,
                "champion": self.champion.to_dict(), "candidate": self.candidate.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "ShadowWindow":
        return cls(int(d["requests"]), float(d["overlap_sum"]), VariantWindow.from_dict(d["champion"]),
                   VariantWindow.from_dict(d["candidate"]))


class Action(str, Enum):
    hold = "hold"
    promote = "promote"
    rollback = "rollback"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


@dataclass
class ReleasePolicy:
    """``serve.release.policy``: when a release promotes itself and when it rolls itself back.

    Each window (``window_s``) compares the candidate with the champion over the same window. Roll
    back when the candidate has at least ``min_requests_rollback`` requests and its error rate exceeds
    the champion's by more than ``max_error_rate_increase``, or its p99 is above ``max_p99_ratio`` times
    the champion's with at least ``min_slow_requests`` of its requests above that bound (over a few tens
    of requests a window's p99 is its one slowest request: one stall is not a slower model), or its
    score distribution's PSI against the champion's exceeds ``max_score_psi``.
    Promote after ``promote_after_windows`` windows in a row in which both had ``min_requests`` and no
    criterion was breached. ``promote_after_windows=0``: never by itself (``mlsys release promote``)."""

    window_s: float = 60.0
    min_requests: int = 100
    min_requests_rollback: int = 20
    max_error_rate_increase: float = 0.01
    max_p99_ratio: float = 2.0
    min_slow_requests: int = 5
    max_score_psi: float = 0.25
    promote_after_windows: int = 5

    def __post_init__(self):
        from mlsys.config import require

        require(self.window_s > 0, "serve.release.policy.window_s", self.window_s, "> 0 seconds")
        require(self.min_requests >= 1, "serve.release.policy.min_requests", self.min_requests, ">= 1")
        require(self.min_requests_rollback >= 1, "serve.release.policy.min_requests_rollback", self.min_requests_rollback, ">= 1")
        require(0 <= self.max_error_rate_increase <= 1, "serve.release.policy.max_error_rate_increase",
                self.max_error_rate_increase, "in [0, 1]")
        require(self.max_p99_ratio >= 1, "serve.release.policy.max_p99_ratio", self.max_p99_ratio, ">= 1")
        require(self.min_slow_requests >= 1, "serve.release.policy.min_slow_requests", self.min_slow_requests, ">= 1")
        require(self.max_score_psi > 0, "serve.release.policy.max_score_psi", self.max_score_psi, "> 0")
        require(self.promote_after_windows >= 0, "serve.release.policy.promote_after_windows", self.promote_after_windows, ">= 0")

    def breach(self, champion: VariantWindow, candidate: VariantWindow) -> str | None:
        """Why the candidate is worse than the champion in this window, or None."""
        if candidate.requests < self.min_requests_rollback:
            return None
        increase = candidate.error_rate - champion.error_rate
        if increase > self.max_error_rate_increase:
            return (f"error rate {candidate.error_rate:.1%} ({candidate.errors} of {candidate.requests}) against the champion's "
                    f"{champion.error_rate:.1%}: up {increase:.1%}, above max_error_rate_increase={self.max_error_rate_increase:.1%}")
        if champion.requests >= self.min_requests_rollback:
            c99, k99 = champion.quantile_ms(0.99), candidate.quantile_ms(0.99)
            bound = self.max_p99_ratio * c99
            slow = slower_than(candidate.latency, bound)
            if c99 > 0 and k99 > bound and slow >= self.min_slow_requests:
                return (f"p99 latency {k99:g} ms against the champion's {c99:g} ms: above max_p99_ratio={self.max_p99_ratio:g}x "
                        f"({slow} of {candidate.requests} requests above {bound:g} ms)")
            scored_c, scored_k = sum(champion.scores), sum(candidate.scores)
            if scored_c and scored_k:
                shift = score_psi(champion.scores, candidate.scores)
                if shift > self.max_score_psi:
                    return f"score PSI {shift:.3f} against the champion's scores: above max_score_psi={self.max_score_psi:g}"
        return None

    def decide(self, champion: VariantWindow, candidate: VariantWindow, healthy_windows: int) -> tuple[Decision, int]:
        """One window's decision, and the count of healthy windows in a row after it."""
        reason = self.breach(champion, candidate)
        if reason is not None:
            return Decision(Action.rollback, reason), 0
        if candidate.requests < self.min_requests or champion.requests < self.min_requests:
            return Decision(Action.hold, f"too little traffic this window (champion {champion.requests}, candidate "
                                         f"{candidate.requests} requests; min_requests={self.min_requests})"), healthy_windows
        healthy = healthy_windows + 1
        if self.promote_after_windows and healthy >= self.promote_after_windows:
            return Decision(Action.promote, f"{healthy} healthy windows of {self.window_s:g} s in a row "
                                            f"(promote_after_windows={self.promote_after_windows})"), healthy
        return Decision(Action.hold, f"healthy window {healthy} of {self.promote_after_windows or 'manual promotion'}"), healthy


@dataclass(frozen=True)
class Routing:
    """What one replica serves now: the champion, and a candidate in canary or shadow release.

    Replaced whole when the registry changes; a request reads it once and keeps it, so it is
    scored by one version from start to end whatever switches meanwhile."""

    champion: object
    candidate: object = None
    mode: Mode | None = None
    percent: float = 0.0
    salt: str = ""

    def route(self, user_id: int) -> tuple[object, object, str]:
        """(the variant that answers, the one that shadows it or None, the answering variant's name)."""
        if self.candidate is None:
            return self.champion, None, "champion"
        if self.mode is Mode.shadow:
            return self.champion, self.candidate, "champion"
        if in_candidate(user_id, self.percent, self.salt):
            return self.candidate, None, "candidate"
        return self.champion, None, "champion"

    def variants(self) -> list:
        return [v for v in (self.champion, self.candidate) if v is not None]
