"""The one fitted preprocessor, shared by training (Ray Data) and serving.

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
from mlsys.models.config import InputSpec

PAD, OOV = 0, 1
CATEGORICAL = ("user_id", "item_id", "gender", "occupation")
NUMERIC = ("age", "year")
GENRES = "genres"
HISTORY = "history"
RAW_COLUMNS = (*CATEGORICAL, *NUMERIC, GENRES, HISTORY)
FORMAT = "mlsys.ctr-preprocessor/1"


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


def partial_stats(frame: pd.DataFrame | pa.Table, numeric: tuple[str, ...] = NUMERIC) -> dict:
    """Mergeable statistics of one block (pandas or Arrow): value counts and moments of the ``numeric`` columns.

    Plain Python values, ready for JSON.
    """
    # Lists of [value, count] pairs, not dicts: JSON would turn int keys into strings.
    counts = {c: _value_counts(_arrow(frame, c)) for c in CATEGORICAL}
    genres = _arrow(frame, GENRES)
    counts[GENRES] = _value_counts(pc.list_flatten(genres) if not pa.types.is_null(genres.type) else genres)
    moments = {}
    for c in numeric:
        x = pc.drop_null(_arrow(frame, c)).to_numpy(zero_copy_only=False).astype(np.float64)
        x = x[~np.isnan(x)]
        moments[c] = [len(x), float(x.sum()), float((x * x).sum())]
    return {"counts": counts, "moments": moments}


def merge_stats(parts: list[dict]) -> dict:
    counts: dict[str, Counter] = {c: Counter() for c in (*CATEGORICAL, GENRES)}
    moments: dict[str, list] = {}
    for p in parts:
        for c, pairs in p["counts"].items():
            for value, n in pairs:
                counts[c][value] += n
        for c, m in p["moments"].items():
            moments[c] = [a + b for a, b in zip(moments.get(c, [0, 0.0, 0.0]), m)]
    return {"counts": counts, "moments": moments}


def _numeric_column(batch: dict[str, np.ndarray], column: str) -> np.ndarray:
    """A numeric input as float64; a column the batch lacks is all null (the train mean)."""
    if column not in batch:
        return np.full(len(batch[HISTORY]), np.nan)
    return batch[column].astype(np.float64)


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
    """``CtrPreprocessor(history_length=20).fit(ds).transform_batch(df) -> dict of arrays``.

    Output arrays are the model inputs (see :class:`~mlsys.models.InputSpec`):
    ``categorical``, ``genres``, ``history``, ``numeric`` and, when the input
    has it, ``label``.
    """

    def __init__(self, history_length: int = 20, max_genres: int = 4, min_count: int = 1, numeric: tuple[str, ...] = NUMERIC):
        super().__init__()
        self.history_length = history_length
        self.max_genres = max_genres
        self.min_count = min_count
        # Numeric model inputs: profile numbers, plus feature-store aggregates with features=movielens.
        self.numeric = tuple(numeric)
        self.vocabularies_: dict[str, list] = {}
        self.scaling_: dict[str, tuple[float, float]] = {}
        self._indexes: dict[str, pd.Index] = {}
        self._base: CtrPreprocessor | None = None

    def continuing(self, base: "CtrPreprocessor") -> "CtrPreprocessor":
        """Fit as a continuation of ``base`` (warm start): old ids keep their indices.

        >>> p = CtrPreprocessor().continuing(old).fit(new_span)  # doctest: +SKIP
        >>> p.vocabularies_["item_id"][: len(old.vocabularies_["item_id"])] == old.vocabularies_["item_id"]  # doctest: +SKIP
        True
        """
        self._base = base
        return self

    # -- fitting ---------------------------------------------------------
    def _fit(self, ds) -> "CtrPreprocessor":
        numeric = self.numeric
        parts = ds.select_columns(list(CATEGORICAL + numeric + (GENRES,))).map_batches(
            lambda table: pa.table({"stats": [json.dumps(partial_stats(table, numeric))]}),
            batch_format="pyarrow",
        ).take_all()
        return self._set_state(merge_stats([json.loads(p["stats"]) for p in parts]))

    def fit_frame(self, df: pd.DataFrame | pa.Table) -> "CtrPreprocessor":
        """Fit on an in-memory frame (same statistics as :meth:`fit` on a Dataset)."""
        return self.fit_partials([partial_stats(df, self.numeric)])

    def fit_partials(self, parts: list[dict]) -> "CtrPreprocessor":
        """Fit from :func:`partial_stats` of the blocks of the train data, computed wherever they were.

        >>> CtrPreprocessor().fit_partials([partial_stats(block) for block in blocks])  # doctest: +SKIP
        """
        self._set_state(merge_stats(parts))
        self._fitted = True
        return self

    def _set_state(self, stats: dict) -> "CtrPreprocessor":
        self.vocabularies_ = {
            c: [v for v, n in sorted(cnt.items(), key=lambda kv: (-kv[1], str(kv[0]))) if n >= self.min_count]
            for c, cnt in stats["counts"].items()
        }
        for c, (n, s, ss) in stats["moments"].items():
            mean = s / n if n else 0.0
            std = float(np.sqrt(max(ss / n - mean * mean, 0.0))) if n else 1.0
            self.scaling_[c] = (mean, std if std > 0 else 1.0)
        if self._base is not None:
            self._append_to_base(self._base)
        self._indexes = {}
        return self

    def _append_to_base(self, base: "CtrPreprocessor") -> None:
        for c, values in self.vocabularies_.items():
            old = list(base.vocabularies_[c])
            known = set(old)
            self.vocabularies_[c] = old + [v for v in values if v not in known]
        # Columns the base model saw keep its scaling; a numeric input it lacked keeps this fit's.
        self.scaling_ = {c: base.scaling_.get(c, v) for c, v in self.scaling_.items()}

    # -- transforming ----------------------------------------------------
    def _index(self, column: str) -> pd.Index:
        if column not in self._indexes:
            self._indexes[column] = pd.Index(self.vocabularies_[column])
        return self._indexes[column]

    def _transform_numpy(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {
            "categorical": np.stack([_encode(batch[c], self._index(c)) for c in CATEGORICAL], axis=1),
            "genres": _pad_lists(batch[GENRES], self._index(GENRES), self.max_genres, keep_last=False),
            "history": _pad_lists(batch[HISTORY], self._index("item_id"), self.history_length, keep_last=True),
            "numeric": np.stack(
                [
                    np.nan_to_num((_numeric_column(batch, c) - m) / s, nan=0.0).astype(np.float32)
                    for c, (m, s) in ((c, self.scaling_[c]) for c in self.numeric)
                ],
                axis=1,
            ),
        }
        if "label" in batch:
            out["label"] = batch["label"].astype(np.float32)
        return out

    @classmethod
    def preferred_batch_format(cls):
        from ray.data.util.data_batch_conversion import BatchFormat

        return BatchFormat.NUMPY

    # -- contract and persistence ---------------------------------------
    def input_spec(self) -> InputSpec:
        return InputSpec(
            categorical_fields=CATEGORICAL,
            categorical_sizes=tuple(len(self.vocabularies_[c]) + 2 for c in CATEGORICAL),
            item_field="item_id",
            genre_size=len(self.vocabularies_[GENRES]) + 2,
            max_genres=self.max_genres,
            history_length=self.history_length,
            numeric_fields=self.numeric,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "history_length": self.history_length,
                "max_genres": self.max_genres,
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
        p = cls(d["history_length"], d["max_genres"], d["min_count"], tuple(d.get("numeric", NUMERIC)))
        p.vocabularies_ = d["vocabularies"]
        p.scaling_ = {c: tuple(v) for c, v in d["scaling"].items()}
        p._fitted = True
        return p
