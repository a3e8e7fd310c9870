"""What a ranking request's features are (no Ray, no Feast): one raw feature row per candidate
(:class:`RequestFeatures`), and the model inputs they encode to (:class:`EncodedRequest`).

:class:`mlsys.serve.ranker.PackageTables` reads them from a model package (and encodes a
request from its tables encoded once), :class:`mlsys.features.serving.OnlineFeatures` from the
online store (its raw rows go through the fitted preprocessor, :class:`FrameEncoder`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, Union

import numpy as np
import pandas as pd

from mlsys.data.feature_schema import FeatureSchema, Kind, as_text
from mlsys.errors import InvalidRequestError
from mlsys.models import MODEL_INPUTS

if TYPE_CHECKING:
    from mlsys.data.preprocessor import CtrPreprocessor


@dataclass(frozen=True)
class RequestFeatures:
    """The raw feature rows of one request, one per candidate, and what was unknown."""

    frame: pd.DataFrame
    unknown_user: bool
    unknown_items: int


class FeatureSource(Protocol):
    """Where a request's raw features come from."""

    def fetch(self, user_id: int, candidates: Sequence[int]) -> RequestFeatures: ...


@dataclass(frozen=True, eq=False)
class EncodedRequest:
    """One request as the model reads it: ``inputs`` keyed by :data:`mlsys.models.MODEL_INPUTS`,
    ``categorical`` (N, F) int64, ``multi_hot`` (N, K*W) int64, ``history`` (N, L) int64,
    ``numeric`` (N, num) float32, one row per candidate of ``item_ids`` (N,) int64, in request order.

    :meth:`features` builds the raw feature rows the inputs encode (for the feature log) on
    first call, not before:

    >>> request = ranker.encode(1, [50, 172])                    # doctest: +SKIP
    >>> request.inputs["categorical"].shape, request.features().columns[:2].tolist()  # doctest: +SKIP
    ((2, 4), ['user_id', 'item_id'])
    """

    inputs: dict[str, np.ndarray]
    item_ids: np.ndarray
    unknown_user: bool
    unknown_items: int
    raw: Callable[[], pd.DataFrame] = field(repr=False)
    # The same rows as {column: 1-D array}, built without a DataFrame (None: from ``raw``'s frame).
    raw_columns: Callable[[], dict[str, np.ndarray]] | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def features(self) -> pd.DataFrame:
        """The raw feature rows (one per candidate, request order), as the preprocessor reads them."""
        if "frame" not in self._cache:
            self._cache["frame"] = self.raw()
        return self._cache["frame"]

    def columns(self) -> dict[str, np.ndarray]:
        """:meth:`features` as columns: what the feature log and the online statistics read (a
        DataFrame per request costs more than the columns it holds)."""
        if "columns" not in self._cache:
            self._cache["columns"] = self.raw_columns() if self.raw_columns is not None else as_columns(self.features())
        return self._cache["columns"]


Rows = Union[pd.DataFrame, dict]  # raw feature rows: a frame, or its columns {name: 1-D array}


def as_columns(rows: Rows) -> dict[str, np.ndarray]:
    """Raw feature rows as {column: 1-D array}: a frame's columns, or the columns as they are."""
    return {name: rows[name].to_numpy() for name in rows.columns} if isinstance(rows, pd.DataFrame) else rows


class FrameEncoder:
    """A :class:`FeatureSource`'s raw rows (with the request's context) through the fitted
    preprocessor's ``transform_batch``: how a source without encoded tables (the online store)
    encodes a request, and the reference the encoded tables are tested against.

    >>> FrameEncoder(OnlineFeatures(reader), package.preprocessor).encode(1, np.array([50, 172]), None)  # doctest: +SKIP
    """

    def __init__(self, source: FeatureSource, preprocessor: "CtrPreprocessor"):
        self.source = source
        self.preprocessor = preprocessor

    def encode(self, user_id: int, item_ids: np.ndarray, context: dict | None) -> EncodedRequest:
        got = self.source.fetch(user_id, item_ids.tolist())
        frame = with_context(got.frame, self.preprocessor.schema, context)
        inputs = self.preprocessor.transform_batch(frame)
        return EncodedRequest({k: inputs[k] for k in MODEL_INPUTS}, item_ids, got.unknown_user, got.unknown_items, lambda: frame)


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
    values = context_values(schema, context)
    out = frame.copy() if schema.context else frame
    n = len(frame)
    for name in schema.context:
        out[name] = repeated(values.get(name), schema.kind(name), n)
    return out


def context_values(schema: FeatureSchema, context: dict | None) -> dict[str, Any]:
    """The request's context values checked against their kinds (see :func:`with_context`), as the
    raw rows hold them: text for categorical values, lists of text, floats; only the names given.

    >>> context_values(schema, {"device": 2, "price": 3})  # doctest: +SKIP
    {'device': '2', 'price': 3.0}
    """
    if not context:
        return {}
    allowed = schema.context
    unknown = sorted(set(context) - set(allowed))
    if unknown:
        raise InvalidRequestError(f"context has {unknown[0]!r}, not a request feature of this model; "
                                  f"its context features are {list(allowed) or 'none'}")
    return {name: _context_value(name, schema.kind(name), value) for name, value in context.items()}


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

