"""What a ranking request's features are: one raw feature row per candidate (no Ray, no Feast).

:class:`mlsys.serve.ranker.PackageTables` reads them from a model package,
:class:`mlsys.features.serving.OnlineFeatures` from the online store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Protocol, Sequence

import numpy as np
import pandas as pd

from mlsys.data.feature_schema import FeatureSchema, Kind, as_text
from mlsys.errors import InvalidRequestError


@dataclass(frozen=True)
class RequestFeatures:
    """The raw feature rows of one request, one per candidate, and what was unknown."""

    frame: pd.DataFrame
    unknown_user: bool
    unknown_items: int


class FeatureSource(Protocol):
    """Where a request's raw features come from."""

    def fetch(self, user_id: int, candidates: Sequence[int]) -> RequestFeatures: ...


def repeated(value: Any, kind: Kind, n: int):
    """One looked-up value (None: missing) as a column of ``n`` rows of its kind."""
    if kind is Kind.numeric:
        return np.full(n, np.nan if value is None or pd.isna(value) else value, dtype=np.float32)
    if kind is Kind.multi_hot:
        return [list(value) if isinstance(value, (list, tuple, np.ndarray)) else []] * n
    return [None if value is None or (isinstance(value, float) and math.isnan(value)) else value] * n


def column_of(values: pd.Series, kind: Kind):
    """Looked-up values (NaN: missing, as a reindex leaves them) as a column of their kind."""
    if kind is Kind.numeric:
        return values.to_numpy(dtype=np.float32, na_value=np.nan)
    if kind is Kind.multi_hot:
        return [list(v) if isinstance(v, (list, tuple, np.ndarray)) else [] for v in values]
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values]


def with_context(frame: pd.DataFrame, schema: FeatureSchema, context: dict | None) -> pd.DataFrame:
    """``frame`` with the request's context features (the schema's event features) as columns,
    each value checked against its kind; a context feature not given is missing.

    Categorical and multi-hot values are text, as ingestion parsed them from the event file
    (``2`` and ``"2"`` are the same value). An unknown name or a value of the wrong kind is an
    :class:`~mlsys.errors.InvalidRequestError` naming it.
    """
    context = dict(context or {})
    allowed = schema.context
    unknown = sorted(set(context) - set(allowed))
    if unknown:
        raise InvalidRequestError(f"context has {unknown[0]!r}, not a request feature of this model; "
                                  f"its context features are {list(allowed) or 'none'}")
    out = frame.copy() if allowed else frame
    n = len(frame)
    for name in allowed:
        out[name] = repeated(_context_value(name, schema.kind(name), context.get(name)), schema.kind(name), n)
    return out


def _context_value(name: str, kind: Kind, value: Any):
    if value is None:
        return None
    if kind is Kind.numeric:
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise InvalidRequestError(f"context.{name} must be a finite number, got {value!r}")
        return float(value)
    if kind is Kind.multi_hot:
        if not isinstance(value, (list, tuple)) or not all(_scalar(v) for v in value):
            raise InvalidRequestError(f"context.{name} must be a list of values (text or numbers), got {value!r}")
        return [as_text(v) for v in value]
    if not _scalar(value):
        raise InvalidRequestError(f"context.{name} must be one value (text or a number), got {value!r}")
    return as_text(value)


def _scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float)) and not isinstance(v, bool)

