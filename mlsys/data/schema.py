"""Schemas inferred from training statistics, curated field by field in YAML.

    schema = infer_schema(train_stats)                 # what the data looks like today
    schema = apply_curated(schema, yaml.safe_load(f))  # what a person says it must look like

A curated file overrides only the fields it names::

    features:
      device: {domain: [android, ios, web], presence: 1.0}
      price: {min: 0, max: 10000}
      legacy_column: {drop: true}        # not expected any more
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

import yaml

from mlsys.data.statistics import DatasetStatistics, FeatureKind, FeatureStatistics

FORMAT = "mlsys.schema/1"


@dataclass(frozen=True)
class FeatureSchema:
    kind: FeatureKind
    presence: float = 1.0  # the fraction of rows that must carry a value
    domain: tuple[str, ...] | None = None  # categorical: the known values
    min: float | None = None  # numeric: the expected range
    max: float | None = None
    length_min: float | None = None  # list: the expected length range
    length_max: float | None = None


@dataclass(frozen=True)
class Schema:
    features: dict[str, FeatureSchema] = field(default_factory=dict)

    def to_yaml(self) -> str:
        out = {}
        for name, f in sorted(self.features.items()):
            d = {k: v for k, v in asdict(f).items() if v is not None}
            d["kind"] = f.kind.value
            if f.domain is not None:
                d["domain"] = list(f.domain)
            out[name] = d
        return yaml.safe_dump({"format": FORMAT, "features": out}, sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "Schema":
        d = yaml.safe_load(text) or {}
        return apply_curated(cls(), d)


PRESENCE_MARGIN = 0.9  # a sometimes-missing feature must keep 90% of its train presence


def _floor(x: float, digits: int = 3) -> float:
    return math.floor(x * 10**digits) / 10**digits


def infer_feature(s: FeatureStatistics, max_domain_size: int) -> FeatureSchema:
    # A feature always present must stay so; one with missing values in train may miss a few more
    # by chance (a held-out split of a feature missing at random samples its own fraction).
    presence = 1.0 if s.missing == 0 else _floor(PRESENCE_MARGIN * s.present / s.count) if s.count else 0.0
    f = FeatureSchema(kind=s.kind, presence=presence)
    if s.kind is FeatureKind.categorical and s.distinct is not None and s.top is not None:
        # A domain only for low-cardinality features whose values the sketch saw in full.
        if s.distinct_bounds and s.distinct_bounds[1] <= max_domain_size and len(s.top) >= round(s.distinct):
            f = replace(f, domain=tuple(sorted(str(v) for v, _ in s.top)))
    elif s.kind is FeatureKind.numeric and s.min is not None:
        f = replace(f, min=s.min, max=s.max)
    elif s.kind is FeatureKind.list and s.length:
        f = replace(f, length_min=s.length["min"], length_max=s.length["max"])
    return f


def infer_schema(stats: DatasetStatistics, max_domain_size: int = 100) -> Schema:
    """What the training data looks like: types, presence, domains, ranges."""
    from mlsys.data.statistics import TOP_K

    size = min(max_domain_size, TOP_K)  # a domain must fit in the top values the statistics keep
    return Schema({name: infer_feature(s, size) for name, s in stats.features.items()})


_FIELDS = {f.name for f in fields(FeatureSchema)}


def apply_curated(schema: Schema, curated: dict) -> Schema:
    """Override ``schema`` field by field with a curated document (see module docstring)."""
    if curated.get("format", FORMAT) != FORMAT:
        raise ValueError(f"schema format {curated.get('format')!r} is not {FORMAT!r}")
    features = dict(schema.features)
    for name, overrides in (curated.get("features") or {}).items():
        overrides = dict(overrides or {})
        if overrides.pop("drop", False):
            features.pop(name, None)
            continue
        unknown = set(overrides) - _FIELDS
        if unknown:
            raise ValueError(f"schema feature {name!r}: unknown fields {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
        if "kind" in overrides:
            overrides["kind"] = FeatureKind(overrides["kind"])
        if overrides.get("domain") is not None:
            overrides["domain"] = tuple(str(v) for v in overrides["domain"])
        base = features.get(name)
        if base is None:
            if "kind" not in overrides:
                raise ValueError(f"schema feature {name!r} is new: give its kind")
            features[name] = FeatureSchema(**overrides)
        else:
            features[name] = replace(base, **overrides)
    return Schema(features)


def schema_for(statistics_uri: str, max_domain_size: int, curated_file: str | None = None) -> Schema:
    """The schema in force: inferred from the training statistics at ``statistics_uri``, then curated."""
    from mlsys import storage

    schema = infer_schema(DatasetStatistics.from_dict(storage.read_json(statistics_uri)), max_domain_size)
    if curated_file:
        schema = apply_curated(schema, yaml.safe_load(storage.read_text(curated_file)) or {})
    return schema
