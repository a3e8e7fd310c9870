"""Sliced, side-by-side evaluation (pandas and NumPy, no Ray): the candidate and the champion on
the same eval rows, overall and per slice bucket, with paired bootstrap confidence intervals.

Slices: ``user_activity`` (the user's number of training events) and ``item_popularity`` (the
item's), each in ``evaluate.buckets`` quantile buckets of the training events, and every
categorical feature named in ``evaluate.slices``.

>>> slices = slice_frame(eval_frame, train_frame, EvaluateConfig(slices=["gender"]))        # doctest: +SKIP
>>> ev = compare(eval_frame, slices, {"candidate": p1, "champion": p0}, EvaluateConfig())    # doctest: +SKIP
>>> ev.value("candidate", "auc", "user_activity", "1-23"); print(ev.table())                # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from mlsys.errors import ConfigError
from mlsys.evaluate.bootstrap import percentile_interval, resample_counts, row_logloss, tie_starts, weighted_auc
from mlsys.evaluate.config import EvaluateConfig
from mlsys.evaluate.metrics import ctr_metrics

OVERALL, ALL, DELTA = "overall", "all", "delta"  # the whole eval set's slice and bucket; the delta rows' model
USER_ACTIVITY, ITEM_POPULARITY = "user_activity", "item_popularity"
METRICS = ("auc", "user_auc", "logloss", "calibration")
BOOTSTRAPPED = ("auc", "logloss", "calibration")  # user_auc has no CI: a per-user loop per resample costs too much
NOT_FEATURES = {"user_id", "item_id", "label", "split", "timestamp"}  # the transform's own columns
MAX_INTEGER_CATEGORIES = 100  # an integer column with more distinct values is not offered as a slice
MISSING = "(missing)"


# -- slices ----------------------------------------------------------------------------------------


def slice_frame(eval_frame: pd.DataFrame, train_frame: pd.DataFrame, cfg: EvaluateConfig) -> pd.DataFrame:
    """One ordered categorical column per slice dimension, aligned with ``eval_frame``'s rows.

    Users (items) absent from ``train_frame`` count 0 training events: the lowest bucket.

    >>> slice_frame(eval_frame, train_frame, EvaluateConfig(buckets=3))["user_activity"].cat.categories.tolist()  # doctest: +SKIP
    ['1-23', '24-80', '81+']
    """
    available = categorical_columns(eval_frame)
    unknown = [name for name in cfg.slices if name not in available]
    if unknown:
        raise ConfigError(f"evaluate.slices names {unknown}, which the eval data has no categorical column for; "
                          f"its categorical columns are {available}")
    out = {}
    for dim, key in ((USER_ACTIVITY, "user_id"), (ITEM_POPULARITY, "item_id")):
        for frame, side in ((eval_frame, "eval"), (train_frame, "train")):
            if key not in frame.columns:
                raise ValueError(f"the {side} split has no {key!r} column (columns: {list(frame.columns)}): "
                                 "slices need the transform step's splits")
        out[dim] = _count_buckets(eval_frame[key], train_frame[key], cfg.buckets)
    for name in cfg.slices:
        values = eval_frame[name].astype(object).where(eval_frame[name].notna(), MISSING).astype(str)
        out[name] = pd.Categorical(values, categories=sorted(values.unique()), ordered=True)
    return pd.DataFrame(out, index=eval_frame.index)


def categorical_columns(frame: pd.DataFrame) -> list[str]:
    """Columns a slice may name: strings, booleans, categoricals, and integers with few distinct values."""
    out = []
    for name in frame.columns:
        column = frame[name]
        if name in NOT_FEATURES:
            continue
        if pd.api.types.is_integer_dtype(column) and not pd.api.types.is_bool_dtype(column):
            if column.nunique() <= MAX_INTEGER_CATEGORIES:
                out.append(name)
        elif not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            first = column.dropna().head(1).tolist()
            if not first or np.isscalar(first[0]):  # list-valued columns (genres, history) are not slices
                out.append(name)
    return out


def _count_buckets(keys: pd.Series, train_keys: pd.Series, buckets: int) -> pd.Categorical:
    """Each eval row's entity's training-event count, in quantile buckets of the training events."""
    counts = train_keys.value_counts()
    per_row = keys.map(counts).fillna(0).to_numpy(dtype=np.int64)
    cuts = _cuts(counts.to_numpy(dtype=np.int64), buckets)
    lowest = min(int(counts.min()) if len(counts) else 0, int(per_row.min()) if len(per_row) else 0)
    labels = _labels(lowest, cuts)
    codes = np.searchsorted(np.asarray(cuts, dtype=np.int64), per_row, side="left")  # bucket j: (cut[j-1], cut[j]]
    return pd.Categorical.from_codes(codes, categories=labels, ordered=True)


def _cuts(entity_counts: np.ndarray, buckets: int) -> list[int]:
    """Upper edges of all but the last bucket: the count at each ``j/buckets`` quantile of the training
    events (an entity weighs its count), so each bucket holds about the same share of events."""
    if not len(entity_counts):
        return []
    values = np.sort(entity_counts)
    share = np.cumsum(values) / values.sum()
    cuts = {int(values[min(np.searchsorted(share, j / buckets - 1e-12), len(values) - 1)]) for j in range(1, buckets)}
    return sorted(c for c in cuts if c < values[-1])  # a cut at the maximum would leave the last bucket empty


def _labels(lowest: int, cuts: list[int]) -> list[str]:
    """Readable ranges: ``["1-23", "24-80", "81+"]``."""
    lows = [lowest, *(c + 1 for c in cuts)]
    out = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in zip(lows, cuts)]
    return out + [f"{lows[-1]}+"]


# -- the evaluation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRow:
    """One metric of one model on one slice bucket; ``low``/``high``: the bootstrap interval (NaN without).
    ``model`` is ``"delta"`` for the paired candidate-minus-champion difference."""

    model: str
    slice: str
    bucket: str
    metric: str
    value: float
    low: float
    high: float
    examples: int


def _json_float(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


@dataclass(frozen=True)
class Evaluation:
    """Every :class:`MetricRow` of a comparison.

    >>> ev.value("champion", "auc"), ev.examples("gender", "F"), ev.flat_metrics("candidate")["auc.gender.F"]  # doctest: +SKIP
    """

    rows: tuple[MetricRow, ...]

    @cached_property
    def _index(self) -> dict[tuple[str, str, str, str], MetricRow]:
        return {(r.model, r.metric, r.slice, r.bucket): r for r in self.rows}

    def row(self, model: str, metric: str, slice: str = OVERALL, bucket: str = ALL) -> MetricRow:
        try:
            return self._index[(model, metric, slice, str(bucket))]
        except KeyError:
            raise KeyError(f"no {metric!r} of model {model!r} on {slice}={bucket} in this evaluation "
                           f"(models {list(self.models)}, slices {sorted({s for s, _ in self.buckets})})") from None

    def get(self, model: str, metric: str, slice: str = OVERALL, bucket: str = ALL) -> MetricRow | None:
        return self._index.get((model, metric, slice, str(bucket)))

    def value(self, model: str, metric: str, slice: str = OVERALL, bucket: str = ALL) -> float:
        return self.row(model, metric, slice, bucket).value

    def examples(self, slice: str = OVERALL, bucket: str = ALL) -> int:
        """Eval rows in the bucket (``examples()``: all of them)."""
        try:
            return self._examples[(slice, str(bucket))]
        except KeyError:
            raise KeyError(f"no bucket {slice}={bucket} in this evaluation") from None

    @cached_property
    def _examples(self) -> dict[tuple[str, str], int]:
        return {(r.slice, r.bucket): r.examples for r in self.rows}

    @property
    def models(self) -> tuple[str, ...]:
        """The scored models, in order (``"candidate"`` first, ``"champion"`` when there is one)."""
        return tuple(dict.fromkeys(r.model for r in self.rows if r.model != DELTA))

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.metric for r in self.rows))

    @property
    def buckets(self) -> tuple[tuple[str, str], ...]:
        """``(slice, bucket)`` pairs in order, ``("overall", "all")`` first."""
        return tuple(dict.fromkeys((r.slice, r.bucket) for r in self.rows))

    def to_dict(self) -> dict:
        """JSON-ready (NaN as null)."""
        return {"rows": [{**asdict(r), **{k: _json_float(getattr(r, k)) for k in ("value", "low", "high")}} for r in self.rows]}

    @classmethod
    def from_dict(cls, d: dict) -> "Evaluation":
        nan = float("nan")
        return cls(tuple(MetricRow(**{**r, **{k: nan if r[k] is None else float(r[k]) for k in ("value", "low", "high")},
                                      "examples": int(r["examples"])}) for r in d["rows"]))

    def flat_metrics(self, model: str) -> dict[str, float]:
        """``{"auc": 0.78, "auc.user_activity.1-23": 0.71, ...}`` for MLflow (:func:`mlflow_key`; NaNs left out)."""
        out = {}
        for r in self.rows:
            if r.model == model and not math.isnan(r.value):
                key = r.metric if r.slice == OVERALL else f"{r.metric}.{r.slice}.{r.bucket}"
                out[mlflow_key(key)] = r.value
        return out

    def table(self, confidence: float | None = None) -> str:
        """Side by side, one line per (slice bucket, metric): each model's value [CI], the delta [CI], examples."""
        models = [*self.models, *([DELTA] if any(r.model == DELTA for r in self.rows) else [])]
        ci = f" [{confidence:.0%} CI]" if confidence else " [CI]"
        head = ["slice", "metric", *(f"{m}{ci}" for m in models), "examples"]
        lines = []
        for slice_, bucket in self.buckets:
            where = OVERALL if slice_ == OVERALL else f"{slice_}={bucket}"
            for metric in self.metrics:
                cells = [_cell(self.get(m, metric, slice_, bucket), m == DELTA) for m in models]
                lines.append([where, metric, *cells, f"{self.examples(slice_, bucket):,}"])
        widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
        fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
        return "\n".join(fmt(x).rstrip() for x in [head, *lines])


def mlflow_key(key: str) -> str:
    """A metric name MLflow accepts and never reads as a path: ``auc.user_activity.81plus``.

    >>> mlflow_key("auc.occupation.self/employed 2+")
    'auc.occupation.self_employed_2plus'
    """
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", key.replace("+", "plus"))


def _cell(row: MetricRow | None, signed: bool) -> str:
    if row is None or math.isnan(row.value):
        return "-"
    f = (lambda x: f"{x:+.4f}") if signed else (lambda x: f"{x:.4f}")
    return f(row.value) + ("" if math.isnan(row.low) else f" [{f(row.low)}, {f(row.high)}]")


# -- the comparison --------------------------------------------------------------------------------


def compare(eval_frame: pd.DataFrame, slices: pd.DataFrame, scores: dict[str, np.ndarray], cfg: EvaluateConfig) -> Evaluation:
    """``ctr_metrics`` of each model in ``scores`` (name -> probabilities aligned with ``eval_frame``),
    overall and per bucket of every column of ``slices``, with percentile bootstrap intervals for
    auc, logloss and calibration (``cfg.bootstrap`` resamples, the same for every model). With
    ``"candidate"`` and ``"champion"`` in ``scores``, ``"delta"`` rows hold their paired difference.

    >>> compare(frame, slice_frame(frame, train, cfg), {"candidate": p}, cfg).value("candidate", "auc")  # doctest: +SKIP
    0.781
    """
    n = len(eval_frame)
    scores = {m: np.asarray(s, dtype=np.float64).reshape(-1) for m, s in scores.items()}
    for model, s in scores.items():
        if len(s) != n:
            raise ValueError(f"{model} has {len(s)} scores for {n} eval rows")
    if len(slices) != n:
        raise ValueError(f"the slice frame has {len(slices)} rows for {n} eval rows")
    users = eval_frame["user_id"].to_numpy()
    labels = eval_frame["label"].to_numpy(dtype=np.float64)
    groups = _groups(slices)
    samples = _bootstrap(groups, labels, scores, cfg) if cfg.bootstrap else {}
    paired = "candidate" in scores and "champion" in scores
    rows: list[MetricRow] = []
    for g, (slice_, bucket, idx) in enumerate(groups):
        point = {m: ctr_metrics(users[idx], labels[idx], s[idx]) for m, s in scores.items()}
        for model in scores:
            for metric in METRICS:
                low, high = _interval(samples.get((model, g, metric)), cfg.confidence)
                rows.append(MetricRow(model, slice_, bucket, metric, point[model][metric], low, high, len(idx)))
        if paired:
            for metric in METRICS:
                a, b = samples.get(("candidate", g, metric)), samples.get(("champion", g, metric))
                low, high = _interval(None if a is None else a - b, cfg.confidence)
                delta = point["candidate"][metric] - point["champion"][metric]
                rows.append(MetricRow(DELTA, slice_, bucket, metric, delta, low, high, len(idx)))
    return Evaluation(tuple(rows))


def _interval(values: np.ndarray | None, confidence: float) -> tuple[float, float]:
    return (float("nan"), float("nan")) if values is None else percentile_interval(values, confidence)


def _groups(slices: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """``(slice, bucket, row positions)``: overall first, then each column's non-empty buckets in order."""
    out = [(OVERALL, ALL, np.arange(len(slices)))]
    for name in slices.columns:
        column = slices[name]
        codes, values = (column.cat.codes.to_numpy(), list(column.cat.categories)) if isinstance(column.dtype, pd.CategoricalDtype) \
            else pd.factorize(column.astype(str), sort=True)
        for code, value in enumerate(values):
            idx = np.flatnonzero(codes == code)
            if len(idx):
                out.append((str(name), str(value), idx))
    return out


def _bootstrap(groups, labels: np.ndarray, scores: dict[str, np.ndarray], cfg: EvaluateConfig) -> dict[tuple, np.ndarray]:
    """``(model, group, metric) -> (B,)`` metric values, one per resample (the same resamples for every model)."""
    prepared = {}
    for g, (_, _, idx) in enumerate(groups):
        for model, s in scores.items():
            rows = idx[np.argsort(s[idx], kind="mergesort")]  # eval rows of the group, by score
            prepared[model, g] = (rows, labels[rows] > 0.5, tie_starts(s[rows]), row_logloss(labels[idx], s[idx]))
    out = defaultdict(list)
    with np.errstate(invalid="ignore", divide="ignore"):  # an empty or one-class resample of a small bucket: NaN
        for counts in resample_counts(len(labels), cfg.bootstrap, cfg.seed):
            for g, (_, _, idx) in enumerate(groups):
                w = counts[idx]  # (m, b)
                drawn, clicks = w.sum(axis=0), labels[idx] @ w
                for model, s in scores.items():
                    rows, sorted_labels, starts, losses = prepared[model, g]
                    out[model, g, "auc"].append(weighted_auc(sorted_labels, starts, counts[rows]))
                    out[model, g, "logloss"].append(np.where(drawn > 0, (losses @ w) / drawn, np.nan))
                    out[model, g, "calibration"].append(np.where(clicks > 0, (s[idx] @ w) / clicks, np.nan))
    return {key: np.concatenate(parts) for key, parts in out.items()}
