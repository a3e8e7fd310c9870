"""In-process scoring of one ranking request: the same code serves HTTP and
``mlsys.load_model(...).rank``. No Ray here.

A request is a user id, candidate item ids and its context (the schema's event
features, sent by the caller). It becomes the model's inputs
(:class:`~mlsys.features.request.EncodedRequest`) in one of two ways:

- :class:`PackageTables` (the default, and ``features=none``) encodes the model
  package's user and item tables once, at load, with the package's fitted
  preprocessor; a request is then a binary search over sorted ids and a few
  array copies, no pandas and no Python object per candidate;
- any other :class:`~mlsys.features.request.FeatureSource` (the Feast online store,
  :class:`mlsys.features.serving.OnlineFeatures`) gives raw feature rows, which the
  preprocessor's ``transform_batch`` encodes exactly as in training
  (:class:`~mlsys.features.request.FrameEncoder`).

Both give the inputs the raw rows encode to, bit for bit. Unknown users or items get
the preprocessor's OOV/mean encoding and are counted, never an error. The raw rows
themselves (for the feature log) are built only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mlsys.data.feature_schema import HISTORY, ITEM, USER, Kind, Table
from mlsys.data.preprocessor import CtrPreprocessor
from mlsys.errors import InvalidRequestError
from mlsys.features.request import (
    EncodedRequest, FeatureSource, FrameEncoder, RequestFeatures, column_of, context_values, repeated, with_context,
)
from mlsys.models import MODEL_INPUTS
from mlsys.registry.package import ModelPackage
from mlsys.registry.scoring import Engine, PackageScorer

_INT64 = np.iinfo(np.int64)


@dataclass(frozen=True)
class ScoredItem:
    item_id: int
    score: float


@dataclass(frozen=True, eq=False)
class Ranking:
    """The best candidates first: ``item_ids`` (k,) int64 and their ``item_scores`` (k,) float32.

    ``scores`` (N,) is every candidate's score in request order, aligned with the rows of
    ``features`` (the raw feature rows, built on first access, for the feature log);
    ``request`` is what was scored. ``items`` is the same ranking as :class:`ScoredItem` objects.
    """

    item_ids: np.ndarray
    item_scores: np.ndarray
    unknown_user: bool
    unknown_items: int
    scores: np.ndarray = field(repr=False)
    request: EncodedRequest = field(repr=False)

    @cached_property
    def items(self) -> list[ScoredItem]:
        return [ScoredItem(i, s) for i, s in zip(self.item_ids.tolist(), self.item_scores.tolist())]

    @cached_property
    def features(self) -> pd.DataFrame:
        return self.request.features()

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """``features`` as {column: 1-D array}, built without a DataFrame (what the feature log reads)."""
        return self.request.columns()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ranking):
            return NotImplemented
        return ((self.unknown_user, self.unknown_items) == (other.unknown_user, other.unknown_items)
                and np.array_equal(self.item_ids, other.item_ids) and np.array_equal(self.item_scores, other.item_scores))

    __hash__ = None


def _layout(pre: CtrPreprocessor) -> dict[str, tuple[str, np.ndarray]]:
    """Where each raw column sits in the model inputs (see ``CtrPreprocessor``): name -> (input, columns)."""
    w = pre.multi_hot_length
    out = {c: ("categorical", np.array([i])) for i, c in enumerate(pre.categorical)}
    out.update({c: ("multi_hot", np.arange(j * w, (j + 1) * w)) for j, c in enumerate(pre.multi_hot)})
    out.update({c: ("numeric", np.array([k])) for k, c in enumerate(pre.numeric)})
    out[HISTORY] = ("history", np.arange(pre.history_length))
    return out


def _integer_ids(values: list) -> np.ndarray:
    """The vocabulary's values an int64 id can equal."""
    ints = [int(v) for v in values if (isinstance(v, (int, np.integer)) and not isinstance(v, bool))
            or (isinstance(v, float) and v.is_integer())]
    return np.array([v for v in ints if _INT64.min <= v <= _INT64.max], dtype=np.int64)


def _absent(ids: np.ndarray) -> int:
    """The smallest non-negative id not in ``ids``."""
    return int(np.setdiff1d(np.arange(len(ids) + 1), ids)[0])


class EncodedTable:
    """One side table (users or items) encoded once, looked up by binary search over its sorted ids.

    ``ids`` are the table's ids and the id vocabulary's (an id the model knows without
    attributes); ``columns[input]`` are the model input's columns this table fills and
    ``values[input]`` (len(ids) + 1, len(columns)) their encodings, the last row an id in
    neither (what the preprocessor gives an unknown id and missing attributes).
    """

    def __init__(self, pre: CtrPreprocessor, table: pd.DataFrame, key: str, names: tuple[str, ...]):
        layout = _layout(pre)
        self.ids = np.union1d(table[key].to_numpy(np.int64), _integer_ids(pre.vocabularies_[key]))
        self.absent = _absent(self.ids)
        self.in_table = np.append(np.isin(self.ids, table[key].to_numpy(np.int64)), False)
        lookup = np.append(self.ids, self.absent)
        rows = table.set_index(key).reindex(pd.Index(lookup, name=key))
        # The raw columns, a row per id (the last: missing), as a request frame holds them
        # (column_of: what PackageTables.fetch builds); an object column's cells are shared, not copied.
        self.raw = {n: _array(column_of(rows[n], _kind(pre, n))) for n in names if n != key}
        names = tuple(n for n in (key, *names) if n in layout)
        frame = pd.DataFrame({key: lookup, **{n: self.raw[n] for n in names if n != key}})
        encoded = {n: pre.encode(n, frame[n].to_numpy()).reshape(len(lookup), -1) for n in names}
        self.columns = {x: np.concatenate([np.zeros(0, np.intp), *(layout[n][1] for n in names if layout[n][0] == x)])
                        for x in MODEL_INPUTS}
        self.values = {x: np.concatenate([encoded[n] for n in names if layout[n][0] == x], axis=1) for x in MODEL_INPUTS
                       if len(self.columns[x])}

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Each id's row of ``values`` (the last row for an id not in ``ids``)."""
        if not len(self.ids):
            return np.zeros(len(ids), np.intp)
        pos = np.searchsorted(self.ids, ids)
        hit = self.ids[np.minimum(pos, len(self.ids) - 1)] == ids
        return np.where(hit, pos, len(self.ids))


def _array(column) -> np.ndarray:
    """``column_of``'s column as one array (an object array for lists, not a 2-D one)."""
    if isinstance(column, np.ndarray):
        return column
    out = np.empty(len(column), dtype=object)
    out[:] = column
    return out


def _kind(pre: CtrPreprocessor, name: str) -> Kind:
    return Kind.multi_hot if name == HISTORY else pre.schema.kind(name)


class PackageTables:
    """Features from the model package's tables (user attributes and latest history, item attributes),
    the columns its declared feature schema names: raw rows (:meth:`fetch`), or a request's model
    inputs from the tables encoded once at load (:meth:`encode`)."""

    def __init__(self, package: ModelPackage):
        pre = package.preprocessor
        self.preprocessor = pre
        self.schema = pre.schema
        self._users = package.users.set_index(USER)
        self._items = package.items.set_index(ITEM)
        self.users = EncodedTable(pre, package.users, USER, (*self.schema.table_features(Table.users), HISTORY))
        self.items = EncodedTable(pre, package.items, ITEM, self.schema.table_features(Table.items))
        # An unknown user, item and no context: every column missing, the rows' starting point.
        missing = with_context(self.fetch(self.users.absent, [self.items.absent]).frame, self.schema, None)
        self._missing = {x: v for x, v in pre.transform_batch(missing).items() if x in MODEL_INPUTS}
        # Inputs the item rows fill entirely (e.g. MovieLens' genres): taken as they are.
        self._full = {x: x in self.items.values and np.array_equal(self.items.columns[x], np.arange(self._missing[x].shape[1]))
                      for x in MODEL_INPUTS}
        self._context = _ContextEncoder(pre)

    def fetch(self, user_id: int, candidates: Sequence[int]) -> RequestFeatures:
        n = len(candidates)
        ids = np.asarray(candidates, dtype=np.int64)
        items = self._items.reindex(pd.Index(ids, name=ITEM))
        known_user = user_id in self._users.index
        user = self._users.loc[user_id] if known_user else None
        columns: dict = {USER: np.full(n, user_id, dtype=np.int64), ITEM: ids}
        for name in self.schema.table_features(Table.users):
            columns[name] = repeated(user[name] if known_user else None, self.schema.kind(name), n)
        for name in self.schema.table_features(Table.items):
            columns[name] = column_of(items[name], self.schema.kind(name))
        columns[HISTORY] = [list(user[HISTORY]) if known_user else []] * n
        unknown_items = int((~pd.Index(ids).isin(self._items.index)).sum())
        return RequestFeatures(pd.DataFrame(columns), not known_user, unknown_items)

    def encode(self, user_id: int, item_ids: np.ndarray, context: dict | None) -> EncodedRequest:
        """The model inputs of one request: the items' encoded rows, the user's row repeated, the context's."""
        n = len(item_ids)
        rows = self.items.rows(item_ids)  # (N,)
        user_row = int(self.users.rows(np.array([user_id]))[0])
        context_parts = self._context.encode(context_values(self.schema, context))
        inputs = {}
        for x in MODEL_INPUTS:
            if self._full[x]:
                out = self.items.values[x].take(rows, axis=0)  # (N, W)
            else:
                out = np.repeat(self._missing[x], n, axis=0)  # (N, W)
                if x in self.items.values:
                    out[:, self.items.columns[x]] = self.items.values[x].take(rows, axis=0)
            if x in self.users.values:
                out[:, self.users.columns[x]] = self.users.values[x][user_row]
            for columns, values in context_parts.get(x, ()):
                out[:, columns] = values
            inputs[x] = out
        unknown_items = n - int(np.count_nonzero(self.items.in_table[rows]))
        context = dict(context) if context else None
        return EncodedRequest(inputs, item_ids, not self.users.in_table[user_row], unknown_items,
                              lambda: with_context(self.fetch(user_id, item_ids.tolist()).frame, self.schema, context),
                              lambda: self.columns(user_id, item_ids, rows, user_row, context))

    def columns(self, user_id: int, item_ids: np.ndarray, rows: np.ndarray, user_row: int, context: dict | None) -> dict:
        """:meth:`fetch`'s rows (with the context) as columns, from the raw tables kept at load:
        what :meth:`encode`'s request logs, a few array takes instead of a frame."""
        n = len(item_ids)
        columns: dict = {USER: np.full(n, user_id, dtype=np.int64), ITEM: np.asarray(item_ids, dtype=np.int64)}
        for name in self.schema.table_features(Table.users):
            columns[name] = self.users.raw[name][np.full(n, user_row)]
        for name in self.schema.table_features(Table.items):
            columns[name] = self.items.raw[name].take(rows)
        columns[HISTORY] = self.users.raw[HISTORY][np.full(n, user_row)]
        values = context_values(self.schema, context)
        for name in self.schema.context:
            columns[name] = _array(repeated(values.get(name), self.schema.kind(name), n))
        return columns


class _ContextEncoder:
    """A request's context values through the preprocessor, one value at a time, remembered
    (bounded): {input: [(columns, encoded values)]}. Values not given stay missing."""

    def __init__(self, pre: CtrPreprocessor, capacity: int = 4096):
        self.pre = pre
        self.layout = _layout(pre)
        self.capacity = capacity
        self._codes: dict[tuple[str, Any], np.ndarray] = {}

    def encode(self, values: dict[str, Any]) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
        out: dict[str, list] = {}
        for name, value in values.items():
            if value is None or name not in self.layout:  # missing: the rows already hold its encoding
                continue
            x, columns = self.layout[name]
            out.setdefault(x, []).append((columns, self._code(name, value)))
        return out

    def _code(self, name: str, value: Any) -> np.ndarray:
        key = (name, tuple(value) if isinstance(value, list) else value)
        code = self._codes.get(key)
        if code is None:
            kind = self.pre.schema.kind(name)
            # One raw row as a request frame holds it (with_context's column), then the preprocessor's encoding.
            raw = repeated(value, kind, 1) if kind is Kind.numeric else pd.DataFrame({name: repeated(value, kind, 1)})[name].to_numpy()
            code = self.pre.encode(name, raw).reshape(-1)
            if len(self._codes) >= self.capacity:
                self._codes.clear()
            self._codes[key] = code
        return code


class RankingModel:
    """``load_model("models:/ctr@champion").rank(42, [1, 2, 3], k=2)``.

    ``engine="onnx"`` (default, what serving runs), ``"split"`` or ``"torch"`` (the
    trained module itself, for checks). ``features``: where request features come
    from (default: the package's tables, encoded once).
    """

    def __init__(
        self,
        package: ModelPackage,
        engine: Engine = "onnx",
        version: str | None = None,
        max_candidates: int = 1000,
        features: FeatureSource | None = None,
    ):
        self.package = package
        self.version = version
        self.engine = engine
        self.max_candidates = max_candidates
        self.features = features or PackageTables(package)
        self._encoder = self.features if isinstance(self.features, PackageTables) else FrameEncoder(self.features, package.preprocessor)
        self.scorer = PackageScorer(package, engine)

    def request_frame(self, user_id: int, candidates: Sequence[int], context: dict | None = None) -> tuple[pd.DataFrame, bool, int]:
        """The raw feature rows for one request (one per candidate): looked-up features and the request's context."""
        got = self.features.fetch(user_id, candidates)
        return with_context(got.frame, self.package.preprocessor.schema, context), got.unknown_user, got.unknown_items

    def score_frame(self, frame: pd.DataFrame) -> np.ndarray:
        return self.scorer.score(frame)

    def encode(self, user_id: int, candidates: Sequence[int] | np.ndarray, context: dict | None = None) -> EncodedRequest:
        """The model inputs of one request, checked as :meth:`rank` checks it.

        >>> model.scorer.score_inputs(model.encode(1, [50, 172]).inputs)  # doctest: +SKIP
        array([0.31, 0.12], dtype=float32)
        """
        ids = _validate(user_id, candidates, None, self.max_candidates)
        return self._encoder.encode(int(user_id), ids, context)

    def rank(self, user_id: int, candidates: Sequence[int], k: int | None = None, context: dict | None = None) -> Ranking:
        """Score ``candidates`` for ``user_id``; best first, the top ``k`` if given.

        ``context``: the request's own features (the schema's event features, e.g. the device),
        ``{name: value}``; one not given is missing (the OOV bucket or the training mean).
        """
        ids = _validate(user_id, candidates, k, self.max_candidates)
        request = self._encoder.encode(int(user_id), ids, context)
        return self.ranking(request, self.scorer.score_inputs(request.inputs), k)

    def ranking(self, request: EncodedRequest, scores: np.ndarray, k: int | None = None) -> Ranking:
        """The :class:`Ranking` of an encoded request's ``scores`` (N,), however they were computed
        (this replica's scorer, or a split graph's dense half): best first, the top ``k``."""
        _check_k(k)
        scores = np.asarray(scores)
        order = np.argsort(-scores, kind="stable")[:k]  # ties keep the request's order
        return Ranking(request.item_ids[order], scores[order], request.unknown_user, request.unknown_items, scores, request)


def _validate(user_id, candidates, k, max_candidates: int) -> np.ndarray:
    """The candidates as an int64 array, or an InvalidRequestError saying what is wrong."""
    if isinstance(user_id, bool) or not isinstance(user_id, (int, np.integer)):
        raise InvalidRequestError(f"user_id must be an integer, got {user_id!r}")
    if not _INT64.min <= user_id <= _INT64.max:
        raise InvalidRequestError(f"user_id must be a 64-bit integer, got {user_id!r}")
    if not isinstance(candidates, (list, tuple, np.ndarray)) or len(candidates) == 0:
        raise InvalidRequestError("candidates must be a non-empty list of item ids")
    if len(candidates) > max_candidates:
        raise InvalidRequestError(f"candidates has {len(candidates)} items, more than the limit {max_candidates}; split the request")
    ids = _candidate_ids(candidates)
    _check_k(k)
    return ids


def _check_k(k) -> None:
    if k is not None and (not isinstance(k, (int, np.integer)) or k < 1):
        raise InvalidRequestError(f"k must be a positive integer, got {k!r}")


def _candidate_ids(candidates) -> np.ndarray:
    if isinstance(candidates, np.ndarray) and candidates.ndim == 1 and candidates.dtype.kind in "iu":
        integers = True
    else:  # the elements' types, found in C: one for a list of ints
        integers = all(t is int or issubclass(t, np.integer) for t in set(map(type, candidates)))
    if not integers:
        bad = next(c for c in candidates if isinstance(c, bool) or not isinstance(c, (int, np.integer)))
        raise InvalidRequestError(f"candidates must be integer item ids, got {bad!r}")
    try:
        if isinstance(candidates, np.ndarray) and candidates.dtype.kind == "u" and (candidates > _INT64.max).any():
            raise OverflowError
        return np.array(candidates, dtype=np.int64)  # a copy: the request keeps its ids whatever the caller does
    except OverflowError:
        bad = next(c for c in candidates if not _INT64.min <= c <= _INT64.max)
        raise InvalidRequestError(f"candidates must be 64-bit integer item ids, got {bad!r}") from None
