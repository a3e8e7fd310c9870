"""The one fitted preprocessor, shared by training (Ray Data) and serving.

Its inputs are named by the data set's declared schema
(:class:`~mlsys.data.feature_schema.FeatureSchema`): a vocabulary per categorical
field (the user, the item, the declared categorical features) and per multi-hot
feature, a scaling per numeric feature, the behaviour sequence over the item
vocabulary.

A Ray Data :class:`~ray.data.preprocessor.Preprocessor`: ``fit(ds)`` computes
per-block partial statistics in one ``map_batches`` pass and merges them;
``transform(ds)`` for training and ``transform_batch(df)`` for one in-memory
request run the same ``_transform_numpy``. It is saved as JSON (no pickle)
inside the model package.

Encoding: categorical values and list items map to ``2 + rank`` in a vocabulary
ordered by train frequency; 0 is padding, 1 the out-of-vocabulary bucket
(values seen fewer than ``min_count`` times, unseen values, nulls). Numeric
values are standardised with train mean/std; nulls become the mean (0).

Warm start (``continuing(base)``): every value of ``base``'s vocabularies keeps
its index, values new in this data (seen ``min_count`` times) are appended
after them, and ``base``'s numeric scaling is kept, so a model trained with
``base`` reads the same inputs for the old values and only grows its tables.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from ray.data.preprocessor import Preprocessor

from mlsys import storage
from mlsys.data.feature_schema import HISTORY, ITEM, LABEL, FeatureSchema
from mlsys.models.config import InputSpec

PAD, OOV = 0, 1
# /2: inputs named by the declared schema (multi-hot features, not one fixed list column).
FORMAT = "mlsys.ctr-preprocessor/2"


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _arrow(frame, column: str) -> pa.ChunkedArray | pa.Array:
    if isinstance(frame, pd.DataFrame):
        return pa.array(frame[column], from_pandas=True)  # NaN and None are nulls, as pandas' dropna
    return frame.column(column)


def _value_counts(values) -> list[list]:
    if pa.types.is_null(values.type):  # a column without a single value (no attribute table given)
        return []
    counts = pc.value_counts(pc.drop_null(values))
    return [list(pair) for pair in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())]


def partial_stats(frame: pd.DataFrame | pa.Table, categorical: tuple[str, ...], multi_hot: tuple[str, ...],
                  numeric: tuple[str, ...]) -> dict:
    """Mergeable statistics of one block (pandas or Arrow): value counts of the ``categorical``
    and (flattened) ``multi_hot`` columns, moments of the ``numeric`` ones. Plain Python values,
    ready for JSON."""
    # Lists of [value, count] pairs, not dicts: JSON would turn int keys into strings.
    counts = {c: _value_counts(_arrow(frame, c)) for c in categorical}
    for c in multi_hot:
        lists = _arrow(frame, c)
        counts[c] = _value_counts(pc.list_flatten(lists) if not pa.types.is_null(lists.type) else lists)
    moments = {}
    for c in numeric:
        x = pc.drop_null(_arrow(frame, c)).to_numpy(zero_copy_only=False).astype(np.float64)
        x = x[~np.isnan(x)]
        moments[c] = [len(x), float(x.sum()), float((x * x).sum())]
    return {"counts": counts, "moments": moments}


def merge_stats(parts: list[dict]) -> dict:
    counts: dict[str, Counter] = {}
    moments: dict[str, list] = {}
    for p in parts:
        for c, pairs in p["counts"].items():
            counter = counts.setdefault(c, Counter())
            for value, n in pairs:
                counter[value] += n
        for c, m in p["moments"].items():
            moments[c] = [a + b for a, b in zip(moments.get(c, [0, 0.0, 0.0]), m)]
    return {"counts": counts, "moments": moments}


def _numeric_column(batch: dict[str, np.ndarray], column: str) -> np.ndarray:
    """A numeric input; a column the batch lacks is all null (the train mean)."""
    if column not in batch:
        return np.full(len(next(iter(batch.values()))), np.nan)
    return batch[column]


def _encode(values: np.ndarray, index: pd.Index) -> np.ndarray:
    pos = index.get_indexer(pd.Index(values))  # nulls and unseen values -> -1
    return np.where(pos < 0, OOV, pos + 2).astype(np.int64)


def _pad_lists(lists: np.ndarray, index: pd.Index, width: int, keep_last: bool) -> np.ndarray:
    """Encode a column of lists into a right-padded (B, width) int64 matrix."""
    def trim(x) -> np.ndarray:
        if x is None or width == 0:
            return np.array([])
        x = np.asarray(x)
        return x[len(x) - width :] if keep_last and len(x) > width else x[:width]

    trimmed = [trim(x) for x in lists]
    lengths = np.fromiter((len(x) for x in trimmed), dtype=np.int64, count=len(trimmed))
    out = np.zeros((len(trimmed), width), dtype=np.int64)
    if lengths.sum():
        flat = _encode(np.concatenate(trimmed), index)
        rows = np.repeat(np.arange(len(trimmed)), lengths)
        cols = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[rows, cols] = flat
    return out


class CtrPreprocessor(Preprocessor):
    """``CtrPreprocessor(schema).fit(ds).transform_batch(df) -> dict of arrays``.

    Output arrays are the model inputs (see :class:`~mlsys.models.InputSpec`):
    ``categorical`` (the schema's categorical fields), ``multi_hot`` (each multi-hot
    feature's first ``multi_hot_length`` values, side by side), ``history`` (the last
    ``history_length`` items), ``numeric`` and, when the input has it, ``label``.
    ``numeric``: the numeric inputs if not the schema's (the schema's plus the feature
    store's aggregates with ``features=feast``).
    """

    def __init__(self, schema: FeatureSchema, min_count: int = 1, numeric: tuple[str, ...] | None = None):
        super().__init__()
        self.schema = schema
        self.history_length = schema.history_length
        self.multi_hot_length = schema.multi_hot_length
        self.min_count = min_count
        self.categorical = schema.categorical
        self.multi_hot = schema.multi_hot
        self.numeric = tuple(schema.numeric if numeric is None else numeric)
        self.vocabularies_: dict[str, list] = {}
        self.scaling_: dict[str, tuple[float, float]] = {}
        self._indexes: dict[str, pd.Index] = {}
        self._base: CtrPreprocessor | None = None

    @property
    def request_columns(self) -> tuple[str, ...]:
        """The raw columns a scored row needs."""
        return (*self.categorical, *self.multi_hot, *self.numeric, HISTORY)

    def partial_stats(self, frame: pd.DataFrame | pa.Table) -> dict:
        """:func:`partial_stats` of one block of train rows, for :meth:`fit_partials`."""
        return partial_stats(frame, self.categorical, self.multi_hot, self.numeric)

    def continuing(self, base: "CtrPreprocessor") -> "CtrPreprocessor":
        """Fit as a continuation of ``base`` (warm start): old ids keep their indices.

        >>> p = CtrPreprocessor(schema).continuing(old).fit(new_span)  # doctest: +SKIP
        >>> p.vocabularies_[ITEM][: len(old.vocabularies_[ITEM])] == old.vocabularies_[ITEM]  # doctest: +SKIP
        True
        """
        self._base = base
        return self

    # -- fitting ---------------------------------------------------------
    def _fit(self, ds) -> "CtrPreprocessor":
        columns, stats = [*self.categorical, *self.multi_hot, *self.numeric], self.partial_stats
        parts = ds.select_columns(columns).map_batches(
            lambda table: pa.table({"stats": [json.dumps(stats(table))]}), batch_format="pyarrow",
        ).take_all()
        return self._set_state(merge_stats([json.loads(p["stats"]) for p in parts]))

    def fit_frame(self, df: pd.DataFrame | pa.Table) -> "CtrPreprocessor":
        """Fit on an in-memory frame (same statistics as :meth:`fit` on a Dataset)."""
        return self.fit_partials([self.partial_stats(df)])

    def fit_partials(self, parts: list[dict]) -> "CtrPreprocessor":
        """Fit from :meth:`partial_stats` of the blocks of the train data, computed wherever they were.

        >>> p.fit_partials([p.partial_stats(block) for block in blocks])  # doctest: +SKIP
        """
        self._set_state(merge_stats(parts))
        self._fitted = True
        return self

    def _set_state(self, stats: dict) -> "CtrPreprocessor":
        counts = stats["counts"]
        self.vocabularies_ = {
            c: [v for v, n in sorted(counts.get(c, {}).items(), key=lambda kv: (-kv[1], str(kv[0]))) if n >= self.min_count]
            for c in (*self.categorical, *self.multi_hot)
        }
        for c in self.numeric:
            n, s, ss = stats["moments"].get(c, (0, 0.0, 0.0))
            mean = s / n if n else 0.0
            std = float(np.sqrt(max(ss / n - mean * mean, 0.0))) if n else 1.0
            self.scaling_[c] = (mean, std if std > 0 else 1.0)
        if self._base is not None:
            self._append_to_base(self._base)
        self._indexes = {}
        return self

    def _append_to_base(self, base: "CtrPreprocessor") -> None:
        for c, values in self.vocabularies_.items():
            old = list(base.vocabularies_.get(c, []))
            known = set(old)
            self.vocabularies_[c] = old + [v for v in values if v not in known]
        # Columns the base model saw keep its scaling; a numeric input it lacked keeps this fit's.
        self.scaling_ = {c: base.scaling_.get(c, v) for c, v in self.scaling_.items()}

    # -- transforming ----------------------------------------------------
    def _index(self, column: str) -> pd.Index:
        if column not in self._indexes:
            self._indexes[column] = pd.Index(self.vocabularies_[column])
        return self._indexes[column]

    def encode(self, column: str, values: np.ndarray) -> np.ndarray:
        """One raw input column's encoding, as :meth:`transform_batch` encodes it: a categorical
        field (B,) int64, a multi-hot feature (B, multi_hot_length) int64, the behaviour sequence
        (``history``) (B, history_length) int64, a numeric input (B,) float32 (NaN: the mean).

        Each column is encoded on its own, so serving encodes a table's columns once and a
        request's context for one row:

        >>> p.encode("device", np.array(["ios", None], dtype=object))  # doctest: +SKIP
        array([2, 1])
        """
        if column == HISTORY:
            return _pad_lists(values, self._index(ITEM), self.history_length, keep_last=True)
        if column in self.scaling_:
            m, s = self.scaling_[column]
            return np.nan_to_num((values.astype(np.float64) - m) / s, nan=0.0).astype(np.float32)
        if column in self.multi_hot:
            return _pad_lists(values, self._index(column), self.multi_hot_length, keep_last=False)
        return _encode(values, self._index(column))

    def _transform_numpy(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(next(iter(batch.values())))
        out = {
            "categorical": np.stack([self.encode(c, batch[c]) for c in self.categorical], axis=1)
            if self.categorical else np.zeros((rows, 0), np.int64),
            "multi_hot": np.concatenate([self.encode(c, batch[c]) for c in self.multi_hot], axis=1)
            if self.multi_hot else np.zeros((rows, 0), np.int64),
            "history": self.encode(HISTORY, batch[HISTORY]),
            "numeric": np.stack([self.encode(c, _numeric_column(batch, c)) for c in self.numeric], axis=1)
            if self.numeric else np.zeros((rows, 0), np.float32),
        }
        if LABEL in batch:
            out["label"] = batch[LABEL].astype(np.float32)
        return out

    @classmethod
    def preferred_batch_format(cls):
        from ray.data.util.data_batch_conversion import BatchFormat

        return BatchFormat.NUMPY

    # -- contract and persistence ---------------------------------------
    def input_spec(self) -> InputSpec:
        return InputSpec(
            categorical_fields=self.categorical,
            categorical_sizes=tuple(len(self.vocabularies_[c]) + 2 for c in self.categorical),
            item_field=ITEM,
            multi_hot_fields=self.multi_hot,
            multi_hot_sizes=tuple(len(self.vocabularies_[c]) + 2 for c in self.multi_hot),
            multi_hot_length=self.multi_hot_length,
            history_length=self.history_length,
            numeric_fields=self.numeric,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "schema": self.schema.to_dict(),
                "min_count": self.min_count,
                "numeric": list(self.numeric),
                "vocabularies": self.vocabularies_,
                "scaling": self.scaling_,
            },
            default=_py,
        )

    def save(self, uri: str) -> None:
        storage.write_text(uri, self.to_json())

    @classmethod
    def load(cls, uri: str) -> "CtrPreprocessor":
        """``CtrPreprocessor.load(uri)``: a fitted preprocessor saved with :meth:`save`."""
        return cls.from_json(storage.read_text(uri))

    @classmethod
    def from_json(cls, text: str) -> "CtrPreprocessor":
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} preprocessor file (format={d.get('format')!r})")
        p = cls(FeatureSchema.from_dict(d["schema"]), d["min_count"], tuple(d["numeric"]))
        p.vocabularies_ = d["vocabularies"]
        p.scaling_ = {c: tuple(v) for c, v in d["scaling"].items()}
        p._fitted = True
        return p
