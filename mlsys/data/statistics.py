"""Dataset statistics from mergeable sketches, plain PyArrow and NumPy (no Ray).

Each block of rows becomes a set of per-feature accumulators; accumulators
merge exactly as a cluster would merge blocks, so memory does not grow with
rows. Exact quantities (count, missing, min, max, mean, std, zeros) use
parallel moments (Chan et al.); quantiles and histograms come from a KLL
sketch, distinct counts from HyperLogLog and top values from a frequent-items
sketch (Apache DataSketches). The sketches travel inside the JSON, so two
statistics files can still be compared or merged later.

    stats = finalize(merge_all([block_accumulators(table, kinds) for table in blocks]))
    stats.features["price"].quantiles["p50"]
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Iterable

import datasketches as ds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FORMAT = "mlsys.statistics/1"
KLL_K = 200  # normalized rank error ~1.65% (single-sided ~1.33%)
HLL_LG_K = 12  # relative standard error ~1.6%
FREQ_LG_MAX_MAP = 10  # exact counts while a feature has fewer than ~768 distinct values
TOP_K = 20
# Per block, only the most frequent values feed the frequent-items sketch: a high-cardinality
# column (ids) would otherwise cost one Python call per distinct value. Counts of top values
# are then lower bounds, short by at most `top_error` (the sum over blocks of the largest
# count left out), which is 0 whenever every block has fewer distinct values than this.
FREQ_BLOCK_TOP = 2048
HISTOGRAM_BINS = 10
QUANTILES = {"p1": 0.01, "p5": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99}


class FeatureKind(str, Enum):
    numeric = "numeric"
    categorical = "categorical"
    list = "list"
    timestamp = "timestamp"


def infer_kinds(schema: pa.Schema, categorical: Iterable[str] = (), timestamps: Iterable[str] = ()) -> dict[str, FeatureKind]:
    """Arrow types -> kinds; ``categorical``/``timestamps`` name integer columns that are ids or times."""
    categorical, timestamps = set(categorical), set(timestamps)
    kinds = {}
    for f in schema:
        t = f.type
        if f.name in categorical:
            kinds[f.name] = FeatureKind.categorical
        elif f.name in timestamps or pa.types.is_timestamp(t) or pa.types.is_date(t):
            kinds[f.name] = FeatureKind.timestamp
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            kinds[f.name] = FeatureKind.list
        elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            kinds[f.name] = FeatureKind.numeric
        else:  # strings, booleans, dictionaries
            kinds[f.name] = FeatureKind.categorical
    return kinds


# -- accumulators -------------------------------------------------------------


@dataclass
class Moments:
    """Count, mean, sum of squared deviations, min, max, zeros; merged exactly (Chan et al.)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    zeros: int = 0

    @classmethod
    def of(cls, x: np.ndarray) -> "Moments":
        if len(x) == 0:
            return cls()
        mean = float(x.mean())
        return cls(len(x), mean, float(((x - mean) ** 2).sum()), float(x.min()), float(x.max()), int((x == 0).sum()))

    def merge(self, o: "Moments") -> "Moments":
        if o.n == 0:
            return self
        if self.n == 0:
            return o
        n = self.n + o.n
        delta = o.mean - self.mean
        return Moments(
            n, self.mean + delta * o.n / n, self.m2 + o.m2 + delta * delta * self.n * o.n / n,
            min(self.min, o.min), max(self.max, o.max), self.zeros + o.zeros,
        )

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1, as pandas)."""
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0


def _kll(x: np.ndarray) -> bytes:
    sketch = ds.kll_doubles_sketch(KLL_K)
    sketch.update(np.ascontiguousarray(x, dtype=np.float64))
    return sketch.serialize()


def _merge_bytes(a: bytes | None, b: bytes | None, load, merge) -> bytes | None:
    if a is None or b is None:
        return a or b
    left = load(a)
    merge(left, load(b))
    return left.serialize() if not isinstance(left, ds.hll_union) else left.get_result().serialize_compact()


def _merge_kll(a, b):
    return _merge_bytes(a, b, ds.kll_doubles_sketch.deserialize, lambda s, o: s.merge(o))


def _merge_freq(a, b):
    return _merge_bytes(a, b, ds.frequent_strings_sketch.deserialize, lambda s, o: s.merge(o))


def _merge_hll(a, b):
    def load(blob):
        union = ds.hll_union(HLL_LG_K)
        union.update(ds.hll_sketch.deserialize(blob))
        return union

    return _merge_bytes(a, b, load, lambda u, o: u.update(o.get_result()))


@dataclass
class FeatureAccumulator:
    """Mergeable state of one feature: plain numbers and serialized sketches (picklable)."""

    kind: FeatureKind
    count: int = 0
    missing: int = 0
    moments: Moments = field(default_factory=Moments)
    kll: bytes | None = None
    hll: bytes | None = None
    freq: bytes | None = None
    top_error: int = 0

    def to_dict(self) -> dict:
        """JSON-plain (sketches as base64): a partial result that is merged later, elsewhere."""
        blobs = {k: base64.b64encode(getattr(self, k)).decode() for k in ("kll", "hll", "freq") if getattr(self, k) is not None}
        return {"kind": self.kind.value, "count": self.count, "missing": self.missing, "moments": asdict(self.moments),
                "top_error": self.top_error, **blobs}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureAccumulator":
        m = {**d["moments"], "min": float(d["moments"]["min"]), "max": float(d["moments"]["max"])}
        return cls(FeatureKind(d["kind"]), d["count"], d["missing"], Moments(**m),
                   *(base64.b64decode(d[k]) if d.get(k) else None for k in ("kll", "hll", "freq")), d.get("top_error", 0))

    def merge(self, o: "FeatureAccumulator") -> "FeatureAccumulator":
        assert self.kind == o.kind, f"cannot merge {self.kind} with {o.kind}"
        return FeatureAccumulator(
            self.kind, self.count + o.count, self.missing + o.missing, self.moments.merge(o.moments),
            _merge_kll(self.kll, o.kll), _merge_hll(self.hll, o.hll), _merge_freq(self.freq, o.freq),
            self.top_error + o.top_error,
        )


def _numeric_values(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    values = pc.cast(pc.drop_null(column), pa.float64()).to_numpy(zero_copy_only=False)
    return values[~np.isnan(values)]


def _timestamp_values(column) -> np.ndarray:
    t = column.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        column = pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64())
    return _numeric_values(column)


def accumulate(column: pa.ChunkedArray | pa.Array, kind: FeatureKind) -> FeatureAccumulator:
    """The accumulator of one column of one block."""
    n = len(column)
    if kind is FeatureKind.categorical:
        return _accumulate_categorical(column)
    if kind is FeatureKind.list:
        lengths = pc.list_value_length(column)
        x = _numeric_values(lengths)
        return FeatureAccumulator(kind, n, n - len(x), Moments.of(x), _kll(x))
    x = _timestamp_values(column) if kind is FeatureKind.timestamp else _numeric_values(column)
    return FeatureAccumulator(kind, n, n - len(x), Moments.of(x), _kll(x) if kind is FeatureKind.numeric else None)


def _accumulate_categorical(column) -> FeatureAccumulator:
    n = len(column)
    values = pc.drop_null(column)
    if not (pa.types.is_integer(values.type) or pa.types.is_string(values.type)):
        values = pc.cast(values, pa.string())  # booleans, dictionaries, large strings
    counts = pc.value_counts(values)
    distinct, weights = counts.field("values").to_pylist(), counts.field("counts").to_numpy()
    hll = ds.hll_sketch(HLL_LG_K)
    for value in distinct:  # integers hash as integers: consistent within a column
        hll.update(value)
    top_error = 0
    keep = np.arange(len(weights))
    if len(weights) > FREQ_BLOCK_TOP:
        order = np.argsort(-weights, kind="stable")
        keep, top_error = order[:FREQ_BLOCK_TOP], int(weights[order[FREQ_BLOCK_TOP]])
    freq = ds.frequent_strings_sketch(FREQ_LG_MAX_MAP)
    for i in keep:
        freq.update(str(distinct[i]), int(weights[i]))
    return FeatureAccumulator(FeatureKind.categorical, n, n - len(values), Moments(n=len(values)), None,
                              hll.serialize_compact(), freq.serialize(), top_error)


def block_accumulators(table: pa.Table, kinds: dict[str, FeatureKind]) -> dict[str, FeatureAccumulator]:
    return {name: accumulate(table.column(name), kind) for name, kind in kinds.items() if name in table.column_names}


def merge_all(parts: Iterable[dict[str, FeatureAccumulator]]) -> dict[str, FeatureAccumulator]:
    merged: dict[str, FeatureAccumulator] = {}
    for part in parts:
        for name, acc in part.items():
            merged[name] = merged[name].merge(acc) if name in merged else acc
    return merged


# -- finished statistics --------------------------------------------------------


@dataclass
class FeatureStatistics:
    """One feature's statistics; fields that do not apply to its kind are None."""

    kind: FeatureKind
    count: int
    missing: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    zeros: int | None = None
    quantiles: dict[str, float] | None = None
    histogram: dict[str, list] | None = None  # {"edges": [...], "counts": [...]}
    distinct: float | None = None
    distinct_bounds: list[float] | None = None  # 95% (2 sigma) bounds
    top: list[list] | None = None  # [[value, count], ...], most frequent first
    top_error: int | None = None  # counts in `top` may be short by at most this (0: exact)
    length: dict[str, Any] | None = None  # list features: min/max/mean/std/quantiles of lengths
    sketches: dict[str, str] = field(default_factory=dict)  # base64 of serialized sketches

    @property
    def present(self) -> int:
        return self.count - self.missing

    def kll(self) -> ds.kll_doubles_sketch | None:
        blob = self.sketches.get("kll")
        return ds.kll_doubles_sketch.deserialize(base64.b64decode(blob)) if blob else None

    def frequencies(self) -> dict[str, float]:
        """Value -> estimated count, for every value the frequent-items sketch kept."""
        blob = self.sketches.get("freq")
        if not blob:
            return {}
        sketch = ds.frequent_strings_sketch.deserialize(base64.b64decode(blob))
        return {v: est for v, est, _, _ in sketch.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)}


def _quantile_stats(kll_blob: bytes, m: Moments) -> tuple[dict[str, float], dict[str, list]]:
    sketch = ds.kll_doubles_sketch.deserialize(kll_blob)
    quantiles = {name: float(sketch.get_quantile(q)) for name, q in QUANTILES.items()}
    if m.max > m.min:
        edges = np.linspace(m.min, m.max, HISTOGRAM_BINS + 1)
        pmf = sketch.get_pmf(list(edges[1:-1]))  # HISTOGRAM_BINS masses
        counts = [int(round(p * m.n)) for p in pmf]
    else:
        edges, counts = np.array([m.min, m.max]), [m.n]
    return quantiles, {"edges": [float(e) for e in edges], "counts": counts}


def finalize_feature(acc: FeatureAccumulator) -> FeatureStatistics:
    m = acc.moments
    s = FeatureStatistics(kind=acc.kind, count=acc.count, missing=acc.missing)
    if acc.kind is FeatureKind.categorical:
        if acc.hll is not None:
            hll = ds.hll_sketch.deserialize(acc.hll)
            s.distinct = float(hll.get_estimate())
            s.distinct_bounds = [float(hll.get_lower_bound(2)), float(hll.get_upper_bound(2))]
            freq = ds.frequent_strings_sketch.deserialize(acc.freq)
            items = freq.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)
            s.top = [[v, int(est)] for v, est, _, _ in sorted(items, key=lambda t: (-t[1], t[0]))[:TOP_K]]
            s.top_error = acc.top_error
            s.sketches = {"hll": base64.b64encode(acc.hll).decode(), "freq": base64.b64encode(acc.freq).decode()}
        else:
            s.distinct, s.distinct_bounds, s.top = 0.0, [0.0, 0.0], []
        return s
    if m.n == 0:
        return s
    if acc.kind is FeatureKind.timestamp:
        s.min, s.max = m.min, m.max
        return s
    quantiles, histogram = _quantile_stats(acc.kll, m)
    summary = {"min": m.min, "max": m.max, "mean": m.mean, "std": m.std, "zeros": m.zeros, "quantiles": quantiles, "histogram": histogram}
    if acc.kind is FeatureKind.list:
        s.length = summary
    else:
        s.min, s.max, s.mean, s.std, s.zeros, s.quantiles, s.histogram = (summary[k] for k in ("min", "max", "mean", "std", "zeros", "quantiles", "histogram"))
    s.sketches = {"kll": base64.b64encode(acc.kll).decode()}
    return s


@dataclass
class DatasetStatistics:
    """Statistics of one dataset (one split or span): ``rows`` and per-feature entries."""

    rows: int
    features: dict[str, FeatureStatistics]
    name: str = ""

    def to_dict(self) -> dict:
        return {"format": FORMAT, "name": self.name, "rows": self.rows, "features": {k: _plain(asdict(v)) for k, v in self.features.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetStatistics":
        if d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file (format={d.get('format')!r})")
        features = {k: FeatureStatistics(**{**v, "kind": FeatureKind(v["kind"])}) for k, v in d["features"].items()}
        return cls(rows=d["rows"], features=features, name=d.get("name", ""))

    @classmethod
    def from_json(cls, text: str) -> "DatasetStatistics":
        return cls.from_dict(json.loads(text))


def _plain(d: dict) -> dict:
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in d.items() if v is not None}


def finalize(accumulators: dict[str, FeatureAccumulator], name: str = "") -> DatasetStatistics:
    rows = max((a.count for a in accumulators.values()), default=0)
    return DatasetStatistics(rows, {k: finalize_feature(a) for k, a in accumulators.items()}, name)


def event_kinds(schema: pa.Schema, categorical: Iterable[str] = ("user_id", "item_id")) -> dict[str, FeatureKind]:
    """Feature kinds of the events table: ``categorical`` (the keys and the declared categorical
    features, see :class:`~mlsys.data.feature_schema.FeatureSchema`) are categorical whatever their
    type, ``timestamp`` a time, ``split`` not a feature, the rest by type."""
    kinds = infer_kinds(schema, categorical=categorical, timestamps=["timestamp"])
    kinds.pop("split", None)
    return kinds


def compute_table(table: pa.Table, kinds: dict[str, FeatureKind] | None = None, name: str = "") -> DatasetStatistics:
    """Statistics of an in-memory table (one block): the same code as the Ray path."""
    return finalize(block_accumulators(table, kinds or infer_kinds(table.schema)), name)
