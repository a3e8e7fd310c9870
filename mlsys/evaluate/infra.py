"""Infra validation's verdict (plain Python): did a sandboxed deployment of a package load, answer
what the offline scorer answers, and within the latency budget? The sandbox itself is
:mod:`mlsys.serve.sandbox`.

>>> judge([{7: 0.5}], [{7: 0.5}], [3.0], InfraValidationConfig()).passed
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from mlsys.evaluate.config import InfraValidationConfig


@dataclass(frozen=True)
class InfraValidation:
    passed: bool
    reason: str  # one line: what failed, with the numbers, or what passed
    requests: int = 0
    max_abs_error: Optional[float] = None
    p50_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    budget_ms: Optional[float] = None
    where: str = ""  # the sandbox's URL

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InfraValidation":
        return cls(**d)


def refused(reason: str, where: str = "") -> InfraValidation:
    """A sandbox that never answered (the package did not load, the app did not deploy)."""
    return InfraValidation(False, f"infra validation failed: {reason}", where=where)


def judge(expected: list[dict[int, float]], served: list[dict[int, float] | str], latencies_ms: list[float],
          cfg: InfraValidationConfig, where: str = "") -> InfraValidation:
    """``expected[i]``: item -> offline score of request i; ``served[i]``: what the sandbox answered
    (item -> score), or the error it answered with (a string); ``latencies_ms[i]``: its round trip."""
    n = len(expected)
    errors = [(i, s) for i, s in enumerate(served) if isinstance(s, str)]
    p50, p99 = (float(np.percentile(latencies_ms, q)) for q in (50, 99)) if latencies_ms else (None, None)
    numbers = dict(requests=n, p50_ms=p50, p99_ms=p99, budget_ms=cfg.p99_budget_ms, where=where)
    if errors:
        i, message = errors[0]
        return InfraValidation(False, f"infra validation failed: {len(errors)} of {n} canned requests failed, "
                                      f"e.g. request {i}: {message[:300]}", **numbers)
    worst, worst_at = 0.0, None
    for i, (want, got) in enumerate(zip(expected, served)):
        if set(want) != set(got):
            return InfraValidation(False, f"infra validation failed: request {i} answered items {sorted(got)[:10]}, "
                                          f"expected {sorted(want)[:10]}", **numbers)
        diff = max(abs(got[k] - v) for k, v in want.items())
        if diff > worst:
            worst, worst_at = diff, i
    numbers["max_abs_error"] = worst
    if worst > cfg.tolerance:
        return InfraValidation(False, f"infra validation failed: request {worst_at} scored {worst:.3g} away from the offline "
                                      f"scorer (evaluate.infra.tolerance={cfg.tolerance:g})", **numbers)
    if p99 is not None and p99 > cfg.p99_budget_ms:
        return InfraValidation(False, f"infra validation failed: p99 {p99:.1f} ms over {n} requests > "
                                      f"evaluate.infra.p99_budget_ms={cfg.p99_budget_ms:g}", **numbers)
    return InfraValidation(True, f"infra validated: {n} canned requests, scores within {worst:.2g} of the offline scorer "
                                 f"(<= {cfg.tolerance:g}), p99 {p99:.1f} ms <= {cfg.p99_budget_ms:g} ms", **numbers)
