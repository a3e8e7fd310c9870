"""Skew and drift of an online window: the existing comparators (:func:`mlsys.data.validation.distances`:
L-infinity for categorical features, Jensen-Shannon and PSI for numeric ones and list lengths).

- **skew**: the window against the training statistics of the model version that served it;
- **drift**: the window against the previous window of the same version;
- **prediction drift**: the scores' distribution against the previous window's (the ``score`` column).

    report = judge(window, training_statistics, previous_window, cfg)
    report.signals()   # {"skew.linf.gender": 0.21, "drift.psi.age": 0.01, "prediction_drift.psi": 0.03, ...}

Thresholds are not here: they are the alert rules' (``monitor.alerts``), the one place that
says which distance is too far.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Optional

from mlsys.data.statistics import DatasetStatistics
from mlsys.data.validation import distances
from mlsys.monitor.config import MonitorConfig
from mlsys.monitor.online import SCORE, Window
from mlsys.monitor.service import ServiceWindow

REPORT_FORMAT = "mlsys.monitor-report/1"


@dataclass
class WindowReport:
    """What one merged window showed: every distance, against training and against the previous window."""

    model: str
    version: str
    start: float
    end: float
    requests: int
    rows: int
    judged: bool  # False: fewer rows than monitor.min_rows (distances of a handful of rows are noise)
    skew: dict[str, dict[str, float]] = field(default_factory=dict)  # feature -> measure -> value
    drift: dict[str, dict[str, float]] = field(default_factory=dict)
    baseline: str = ""  # what skew compared with ("" without training statistics)
    previous: Optional[float] = None  # the previous window's start
    service: dict = field(default_factory=dict)  # the window's ServiceWindow.to_dict(): every request, sampled or not

    def signals(self) -> dict[str, float]:
        """Flat signals for alert rules: ``skew.<measure>.<feature>``, ``drift.<measure>.<feature>``,
        their maxima over features ``skew.max.<measure>``, prediction drift ``prediction_drift.<measure>``
        (the scores against the previous window's), the window's size (``window.rows``, ``window.requests``), and,
        with any answer in the window, its service health (``service.requests``, ``service.error_rate``,
        ``service.p50_ms``, ``service.p99_ms``: judged or not, every request counts)."""
        out = {"window.rows": float(self.rows), "window.requests": float(self.requests)}
        health = ServiceWindow.from_dict(self.service)
        if health.total:
            out.update({f"service.{k}": float(v) for k, v in health.summary().items() if k in ("requests", "error_rate", "p50_ms", "p99_ms") and v is not None})
        if not self.judged:
            return out
        for side, table in (("skew", self.skew), ("drift", self.drift)):
            for feature, measures in table.items():
                for measure, value in measures.items():
                    if feature == SCORE:
                        out[f"prediction_{side}.{measure}"] = value
                        continue
                    out[f"{side}.{measure}.{feature}"] = value
                    out[f"{side}.max.{measure}"] = max(out.get(f"{side}.max.{measure}", 0.0), value)
        return out

    def to_dict(self) -> dict:
        return {"format": REPORT_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "WindowReport":
        return cls(**{k: v for k, v in d.items() if k != "format"})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


def judge(window: Window, training: Optional[DatasetStatistics], previous: Optional[Window], cfg: MonitorConfig) -> WindowReport:
    report = WindowReport(window.model, window.version, window.start, window.end, window.requests, window.rows,
                          judged=window.rows >= cfg.min_rows, baseline=training.name if training is not None else "",
                          previous=previous.start if previous is not None else None, service=window.service.to_dict())
    if not report.judged:
        return report
    if training is not None:
        report.skew = distances(training, window.statistics, cfg.ignore)
    if previous is not None and previous.rows >= cfg.min_rows:
        report.drift = distances(previous.statistics, window.statistics, cfg.ignore)
    return report
