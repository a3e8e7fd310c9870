"""Anomalies: what validation found, with a severity that decides what happens.

An ``error`` stops the pipeline before training; a ``warning`` is logged and
the run goes on. Anomalies are written as JSON next to the statistics.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import Enum


class Severity(str, Enum):
    warning = "warning"
    error = "error"


class AnomalyKind(str, Enum):
    new_column = "new_column"
    dropped_column = "dropped_column"
    wrong_type = "wrong_type"
    missing_required = "missing_required"
    unseen_values = "unseen_values"
    out_of_range = "out_of_range"
    list_length = "list_length"
    drift = "drift"
    skew = "skew"


@dataclass(frozen=True)
class Anomaly:
    """``Anomaly("device", AnomalyKind.drift, "linf", 0.21, 0.1, Severity.error, "...")``."""

    feature: str
    kind: AnomalyKind
    measure: str  # what was measured: "linf", "js", "psi", "presence", "unseen_fraction", "min", ...
    value: float
    threshold: float
    severity: Severity
    message: str

    def line(self) -> str:
        return f"{self.severity.value}: {self.feature}: {self.message} ({self.measure}={self.value:.4g}, threshold {self.threshold:.4g})"


@dataclass(frozen=True)
class AnomalyReport:
    """All anomalies of one dataset (``name``: "eval", "train vs eval", "span 2 vs span 1")."""

    name: str
    anomalies: tuple[Anomaly, ...]

    @property
    def errors(self) -> tuple[Anomaly, ...]:
        return tuple(a for a in self.anomalies if a.severity is Severity.error)

    @property
    def warnings(self) -> tuple[Anomaly, ...]:
        return tuple(a for a in self.anomalies if a.severity is Severity.warning)

    def to_json(self) -> str:
        return json.dumps(
            {"name": self.name, "anomalies": [{**asdict(a), "kind": a.kind.value, "severity": a.severity.value} for a in self.anomalies]},
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> "AnomalyReport":
        d = json.loads(text)
        return cls(
            d["name"],
            tuple(Anomaly(**{**a, "kind": AnomalyKind(a["kind"]), "severity": Severity(a["severity"])}) for a in d["anomalies"]),
        )
