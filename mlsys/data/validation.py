"""Validation: statistics against a schema, and two statistics against each other.

Distribution distances (TFDV's choices, plus PSI):

- categorical: L-infinity distance between the value shares of the two sides;
- numeric and list lengths: Jensen-Shannon divergence (base 2, in [0, 1]) and
  the population stability index, over the baseline's deciles as bins.

Thresholds are per measure with per-feature overrides
(``validation.features.device.linf=0.05``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from mlsys.data.anomalies import Anomaly, AnomalyKind, AnomalyReport, Severity
from mlsys.data.schema import Schema
from mlsys.data.statistics import DatasetStatistics, FeatureKind, FeatureStatistics

EPS = 1e-6


@dataclass
class Thresholds:
    linf: float = 0.1
    js: float = 0.1
    psi: float = 0.25


@dataclass
class ValidationConfig:
    """``validation.previous_statistics=<uri>`` turns on drift against the previous span."""

    enabled: bool = True
    # A curated schema (YAML) that overrides the inferred one field by field.
    schema_file: Optional[str] = None
    max_domain_size: int = 100
    max_unseen_fraction: float = 0.01
    unseen_severity: Severity = Severity.error
    range_severity: Severity = Severity.warning
    # Statistics (JSON) of the previous span: its train split is compared with this one's.
    previous_statistics: Optional[str] = None
    drift: Thresholds = field(default_factory=Thresholds)
    drift_severity: Severity = Severity.error
    skew: Thresholds = field(default_factory=Thresholds)
    skew_severity: Severity = Severity.warning
    # Per-feature threshold overrides: {"device": {"linf": 0.05}}.
    features: dict[str, dict[str, float]] = field(default_factory=dict)
    # Features never compared for drift (ids, times move by design).
    ignore_drift: list[str] = field(default_factory=lambda: ["timestamp", "user_id", "item_id"])

    def fingerprint_extra(self) -> dict[str, str]:
        """The content of the files this config names is part of a step's fingerprint."""
        from mlsys import storage

        out = {}
        for key in ("schema_file", "previous_statistics"):
            path = getattr(self, key)
            if path and "://" not in path:
                out[key] = storage.sha256_file(path) if storage.exists(path) else "missing"
        return out


def _anomaly(feature, kind, measure, value, threshold, severity, message) -> Anomaly:
    return Anomaly(feature, kind, measure, float(value), float(threshold), Severity(severity), message)


def validate_schema(stats: DatasetStatistics, schema: Schema, cfg: ValidationConfig) -> list[Anomaly]:
    """Anomalies of ``stats`` against ``schema``."""
    out: list[Anomaly] = []
    for name in sorted(set(stats.features) - set(schema.features)):
        out.append(_anomaly(name, AnomalyKind.new_column, "present", 1, 0, Severity.warning, "column not in the schema"))
    for name, expected in sorted(schema.features.items()):
        s = stats.features.get(name)
        if s is None:
            severity = Severity.error if expected.presence > 0 else Severity.warning
            out.append(_anomaly(name, AnomalyKind.dropped_column, "present", 0, 1, severity, "column in the schema is missing from the data"))
            continue
        if s.kind is not expected.kind:
            out.append(_anomaly(name, AnomalyKind.wrong_type, "kind", 0, 0, Severity.error, f"expected {expected.kind.value}, found {s.kind.value}"))
            continue
        presence = s.present / s.count if s.count else 0.0
        if presence < expected.presence:
            out.append(_anomaly(name, AnomalyKind.missing_required, "presence", presence, expected.presence, Severity.error,
                                f"{s.missing} of {s.count} rows have no value"))
        out += _domain_and_range(name, s, expected, cfg)
    return out


def _domain_and_range(name: str, s: FeatureStatistics, expected, cfg: ValidationConfig) -> list[Anomaly]:
    out = []
    if expected.domain is not None and s.present:
        known = set(expected.domain)
        unseen = {v: c for v, c in s.frequencies().items() if v not in known}
        fraction = sum(unseen.values()) / s.present
        if fraction > cfg.max_unseen_fraction:
            examples = ", ".join(sorted(unseen, key=lambda v: -unseen[v])[:3])
            out.append(_anomaly(name, AnomalyKind.unseen_values, "unseen_fraction", fraction, cfg.max_unseen_fraction,
                                cfg.unseen_severity, f"values outside the domain, e.g. {examples}"))
    if expected.min is not None and s.min is not None and s.min < expected.min:
        out.append(_anomaly(name, AnomalyKind.out_of_range, "min", s.min, expected.min, cfg.range_severity, "values below the expected minimum"))
    if expected.max is not None and s.max is not None and s.max > expected.max:
        out.append(_anomaly(name, AnomalyKind.out_of_range, "max", s.max, expected.max, cfg.range_severity, "values above the expected maximum"))
    if s.length and expected.length_max is not None and s.length["max"] > expected.length_max:
        out.append(_anomaly(name, AnomalyKind.list_length, "length_max", s.length["max"], expected.length_max, cfg.range_severity,
                            "lists longer than expected"))
    return out


# -- distribution distances ------------------------------------------------------


def linf_distance(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """Largest absolute difference in any value's share of present rows."""
    fa, fb = a.frequencies(), b.frequencies()
    na, nb = max(a.present, 1), max(b.present, 1)
    return max((abs(fa.get(v, 0.0) / na - fb.get(v, 0.0) / nb) for v in set(fa) | set(fb)), default=0.0)


def _masses(baseline: FeatureStatistics, other: FeatureStatistics) -> tuple[np.ndarray, np.ndarray] | None:
    kb, ko = baseline.kll(), other.kll()
    if kb is None or ko is None or kb.is_empty() or ko.is_empty():
        return None
    splits = sorted(set(float(q) for q in kb.get_quantiles([i / 10 for i in range(1, 10)])))
    p = np.asarray(kb.get_pmf(splits), dtype=np.float64)
    q = np.asarray(ko.get_pmf(splits), dtype=np.float64)
    return p, q


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    p, q = (p + EPS) / (p + EPS).sum(), (q + EPS) / (q + EPS).sum()
    m = 0.5 * (p + q)
    return float(0.5 * (p * np.log2(p / m)).sum() + 0.5 * (q * np.log2(q / m)).sum())


def psi(p: np.ndarray, q: np.ndarray) -> float:
    p, q = (p + EPS) / (p + EPS).sum(), (q + EPS) / (q + EPS).sum()
    return float(((q - p) * np.log(q / p)).sum())


def distances(baseline: DatasetStatistics, current: DatasetStatistics, ignore=()) -> dict[str, dict[str, float]]:
    """Per feature both sides have (less ``ignore``): ``{"linf": ...}`` for a categorical feature,
    ``{"js": ..., "psi": ...}`` for a numeric one or a list's lengths; {} where a side is empty."""
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(baseline.features) & set(current.features)):
        if name in ignore:
            continue
        a, b = baseline.features[name], current.features[name]
        measures: dict[str, float] = {}
        if a.kind is FeatureKind.categorical and b.kind is FeatureKind.categorical:
            measures["linf"] = linf_distance(a, b)
        elif a.kind in (FeatureKind.numeric, FeatureKind.list) and a.kind is b.kind:
            masses = _masses(a, b)
            if masses is not None:
                measures["js"], measures["psi"] = js_divergence(*masses), psi(*masses)
        out[name] = measures
    return out


def compare(
    baseline: DatasetStatistics,
    current: DatasetStatistics,
    thresholds: Thresholds,
    severity: Severity,
    kind: AnomalyKind,
    per_feature: dict[str, dict[str, float]] | None = None,
    ignore: list[str] | tuple[str, ...] = (),
) -> list[Anomaly]:
    """Drift (previous span vs this span) or skew (training vs serving) anomalies."""
    out: list[Anomaly] = []
    for name, measures in distances(baseline, current, ignore).items():
        limits = {**vars(thresholds), **(per_feature or {}).get(name, {})}
        for measure, value in measures.items():
            if not math.isnan(value) and value > limits[measure]:
                out.append(_anomaly(name, kind, measure, value, limits[measure], severity,
                                    f"distribution changed between '{baseline.name}' and '{current.name}'"))
    return out


def validate(
    current: DatasetStatistics,
    schema: Schema,
    cfg: ValidationConfig,
    previous: DatasetStatistics | None = None,
) -> AnomalyReport:
    """Schema anomalies of ``current`` plus, given the previous span, its drift."""
    anomalies = validate_schema(current, schema, cfg)
    if previous is not None:
        anomalies += compare(previous, current, cfg.drift, cfg.drift_severity, AnomalyKind.drift, cfg.features, cfg.ignore_drift)
    return AnomalyReport(current.name, tuple(anomalies))


@dataclass(frozen=True)
class SplitValidation:
    """The anomalies of the train and eval splits, and where their report went."""

    reports: tuple[AnomalyReport, ...]
    errors: tuple[Anomaly, ...]
    warnings: tuple[Anomaly, ...]


def validate_splits(train_uri: str, eval_uri: str, schema_uri: str, cfg: ValidationConfig,
                    anomalies_uri: str, report_uri: str, title: str) -> SplitValidation:
    """Validate the splits' statistics against the schema (and the previous span's, if configured);
    writes the anomalies JSON and the HTML report, raises nothing."""
    import json

    from mlsys import storage
    from mlsys.data import report

    train, evaluation = (DatasetStatistics.from_dict(storage.read_json(u)) for u in (train_uri, eval_uri))
    expected = Schema.from_yaml(storage.read_text(schema_uri))
    previous = None
    if cfg.previous_statistics:
        previous = DatasetStatistics.from_dict(storage.read_json(cfg.previous_statistics))
        previous.name = f"previous span ({previous.name or 'train'})"
        train.name = "this span (train)"
    results = (validate(train, expected, cfg, previous), validate(evaluation, expected, cfg)) if cfg.enabled else ()
    storage.write_json(anomalies_uri, [json.loads(r.to_json()) for r in results])
    sides = ([("previous span", previous)] if previous else []) + [("train", train), ("eval", evaluation)]
    report.write_html(report_uri, sides, list(results), title=title)
    return SplitValidation(results, tuple(a for r in results for a in r.errors), tuple(a for r in results for a in r.warnings))
