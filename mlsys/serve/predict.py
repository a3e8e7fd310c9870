"""Batch prediction's core: a batch of (user, item[, context]) rows in, scores and quarantined rows out. No Ray.

Each good row is scored exactly as ``/v1/rank`` and ``mlsys.load_model(...).rank`` score a
candidate: :class:`~mlsys.serve.ranker.PackageTables` fetches the user's and items' features
from the package (one fetch per user of the batch), the row's own context features are
checked against their declared kind, and :class:`~mlsys.registry.scoring.PackageScorer`
encodes and scores them. A bad row (a missing or non-integer id, a context value of the wrong
kind, a NaN) is quarantined with a reason and a detail, in ingestion's quarantine schema
(:data:`mlsys.data.ingest.BAD_SCHEMA`; ``line_number`` is the row's ``row_id``)::

    predictor = BatchPredictor(read_package(uri))
    out = predictor.predict(pa.table({"user_id": [1, 2, None], "item_id": [50, 172, 181]}))
    out.scored.column("score"), out.bad.column("reason")   # two scores; ["null_key"]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlsys.data.feature_schema import ITEM, SETTING, USER, FeatureSchema, Kind, Table, as_text
from mlsys.data.ingest import BAD_SCHEMA
from mlsys.data.parsing import NULL_MARKERS, BadRowReason, QuarantineSummary, split_values
from mlsys.errors import DataFormatError, TooManyBadRowsError
from mlsys.features.request import repeated
from mlsys.registry.package import ModelPackage
from mlsys.registry.scoring import Engine, PackageScorer
from mlsys.serve.predict_config import ROW_ID, SCORE
from mlsys.serve.ranker import PackageTables

_INT = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = float(2**63)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ORDER = list(BadRowReason)  # a row with several problems: the first reason in this order, then the first column


@dataclass(frozen=True)
class InputColumns:
    """Where the input holds what: the id columns (``user_id``/``item_id``, or the data set's
    declared names) and the context features; those it lacks are scored as missing, like a
    ``/v1/rank`` request that does not send them."""

    user: str
    item: str
    context: tuple[str, ...]
    missing: tuple[str, ...]


def input_columns(schema: FeatureSchema, types: Mapping[str, pa.DataType], source: str) -> InputColumns:
    """Check the input's column names and types against the model's schema; a
    :class:`~mlsys.errors.DataFormatError` names the column and what to do.

    >>> input_columns(schema, {"user_id": pa.int64(), "item_id": pa.int64()}, "rows.parquet").missing  # doctest: +SKIP
    ()
    """
    names = list(types)
    for taken in (ROW_ID, SCORE):
        if taken in types:
            raise DataFormatError(f"{source} has a column {taken!r}, which predict writes; rename or drop it")
    ids = []
    for role in (USER, ITEM):
        declared = schema.sources.get(role, role)
        column = role if role in types else declared if declared in types else None
        if column is None:
            also = f" or {declared!r} (the data set's name for it)" if declared != role else ""
            raise DataFormatError(f"{source} has no column {role!r}{also}; it has {names}: "
                                  f"name the {role.split('_')[0]} id column {role!r}")
        _check_type(types[column], _ID_TYPES, f"{source}: column {column!r} ({role}) is {types[column]}; ids must be integers")
        ids.append(column)
    given = tuple(n for n in schema.context if n in types)
    for name in given:
        kind = schema.kind(name)
        _check_type(types[name], _CONTEXT_TYPES[kind], f"{source}: column {name!r} is a {kind.value} context feature "
                    f"({SETTING[Table.events]}.{kind.value}) but holds {types[name]}; {_HINT[kind]}")
    return InputColumns(ids[0], ids[1], given, tuple(n for n in schema.context if n not in types))


def _textual(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _scalar_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and (_number(t.value_type) or _textual(t.value_type))


_ID_TYPES = (_number, _textual)
_CONTEXT_TYPES = {Kind.numeric: (_number, _textual), Kind.categorical: (_number, _textual, pa.types.is_boolean),
                  Kind.multi_hot: (_scalar_list, _textual)}
_HINT = {Kind.numeric: "give numbers", Kind.categorical: "give one value (text or a number) per row",
         Kind.multi_hot: "give lists, or text with values separated by predict.separator"}


def _check_type(t: pa.DataType, allowed, message: str) -> None:
    if not (pa.types.is_null(t) or any(ok(t) for ok in allowed)):
        raise DataFormatError(message)


@dataclass(frozen=True)
class PredictedBatch:
    """One batch's outcome: good rows with ``row_id`` and ``score``, bad rows (ingestion's quarantine schema)."""

    scored: pa.Table
    bad: pa.Table
    summary: QuarantineSummary
    unknown_user_rows: int  # rows whose user the package's tables lack (scored with default features)
    unknown_item_rows: int


class BatchPredictor:
    """Scores tables of (user, item[, context]) rows with one model package (see the module docstring).

    ``threads``: ONNX Runtime intra-op threads; ``providers``: its execution providers, best first.
    """

    def __init__(self, package: ModelPackage, threads: int = 1, separator: str = "|", engine: Engine = "onnx",
                 providers: list[str] | None = None):
        self.schema = package.preprocessor.schema
        self.separator = separator
        self.tables = PackageTables(package)
        self.scorer = PackageScorer(package, engine, threads, providers)

    def predict(self, table: pa.Table, source: str = "the input") -> PredictedBatch:
        """Score ``table``'s good rows, quarantine its bad ones; its ``row_id`` column (else 0, 1, ...) names each row."""
        n = table.num_rows
        row_ids = table.column(ROW_ID).to_numpy() if ROW_ID in table.column_names else np.arange(n, dtype=np.int64)
        table = table.drop_columns([ROW_ID]) if ROW_ID in table.column_names else table
        cols = input_columns(self.schema, dict(zip(table.column_names, table.schema.types)), source)
        problems: dict[int, tuple[tuple[int, int], BadRowReason, str]] = {}
        checked = [(USER, cols.user, lambda c, name: _ids(c, name)), (ITEM, cols.item, lambda c, name: _ids(c, name))]
        checked += [(name, name, lambda c, name, k=self.schema.kind(name): _CONTEXT[k](c, name, self.separator))
                    for name in cols.context]
        values = {}
        for position, (out, column, check) in enumerate(checked):
            values[out], found = check(table.column(column), column)
            for i, (reason, detail) in found.items():
                rank = (_ORDER.index(reason), position)
                if i not in problems or rank < problems[i][0]:
                    problems[i] = (rank, reason, detail)
        good = np.ones(n, dtype=bool)
        good[list(problems)] = False
        bad = _bad_table(table, row_ids, problems)
        scores, unknown_users, unknown_items = self._score({k: v[good] for k, v in values.items()}, cols.missing)
        scored = table.filter(pa.array(good)) if len(problems) else table
        scored = scored.add_column(0, ROW_ID, pa.array(row_ids[good], pa.int64())).append_column(SCORE, pa.array(scores, pa.float32()))
        summary = QuarantineSummary.of(n - len(problems), bad.select(["reason"]).to_pandas())
        return PredictedBatch(scored, bad, summary, unknown_users, unknown_items)

    def _score(self, values: dict[str, np.ndarray], missing: tuple[str, ...]) -> tuple[np.ndarray, int, int]:
        """Scores of good rows: one feature fetch per user (rows grouped by user), the rows' context, one scoring call."""
        users, items = values[USER], values[ITEM]
        n = len(users)
        if n == 0:
            return np.zeros(0, np.float32), 0, 0
        order = np.argsort(users, kind="stable")
        grouped = users[order]
        starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
        ends = np.r_[starts[1:], n]
        if len(values) == 2:  # no context of the rows' own: the pre-encoded tables, as /v1/rank scores
            return self._score_encoded(grouped, items, order, starts, ends)
        frames, unknown_users, unknown_items = [], 0, 0
        for s, e in zip(starts, ends):
            got = self.tables.fetch(int(grouped[s]), items[order[s:e]])
            frames.append(got.frame)
            unknown_users += (e - s) if got.unknown_user else 0
            unknown_items += got.unknown_items
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        for name, column in values.items():
            if name not in (USER, ITEM):
                frame[name] = column[order]
        for name in missing:
            frame[name] = repeated(None, self.schema.kind(name), n)
        scores = np.empty(n, dtype=np.float32)
        scores[order] = self.scorer.score(frame)  # its chunks (8192 rows): faster than one call of a whole batch, measured
        return scores, unknown_users, unknown_items


    def _score_encoded(self, grouped, items, order, starts, ends) -> tuple[np.ndarray, int, int]:
        """Each user's rows through :meth:`PackageTables.encode` (the tables encoded once at load, no
        per-row pandas), the model inputs stacked and scored in chunks."""
        from mlsys.models import MODEL_INPUTS

        parts, unknown_users, unknown_items = [], 0, 0
        for s, e in zip(starts, ends):
            encoded = self.tables.encode(int(grouped[s]), items[order[s:e]], None)
            parts.append(encoded.inputs)
            unknown_users += (e - s) if encoded.unknown_user else 0
            unknown_items += encoded.unknown_items
        inputs = {k: np.concatenate([p[k] for p in parts]) for k in MODEL_INPUTS} if len(parts) > 1 else parts[0]
        n = len(order)
        scores = np.empty(n, dtype=np.float32)
        chunk = 8192  # ONNX Runtime is faster on chunks of this size than on one call of a whole batch
        scores[order] = np.concatenate([self.scorer.score_inputs({k: v[i:i + chunk] for k, v in inputs.items()})
                                        for i in range(0, n, chunk)])
        return scores, unknown_users, unknown_items


def check_bad_fraction(summary: QuarantineSummary, max_fraction: float, source: str, quarantine: str) -> None:
    """Stop above ``predict.max_bad_fraction`` bad rows (as ingestion stops above ``data.max_bad_fraction``)."""
    if summary.bad_fraction > max_fraction:
        raise TooManyBadRowsError(source, summary.bad, summary.rows, max_fraction, summary.by_reason, quarantine,
                                  setting="predict.max_bad_fraction")


def _bad_table(table: pa.Table, row_ids: np.ndarray, problems: dict) -> pa.Table:
    rows = sorted(problems)
    raw = [json.dumps(r, default=_plain) for r in table.take(pa.array(rows, pa.int64())).to_pylist()] if rows else []
    return pa.table({"line_number": pa.array(row_ids[rows] if rows else [], pa.int64()), "raw": pa.array(raw, pa.string()),
                     "reason": pa.array([problems[i][1].value for i in rows], pa.string()),
                     "detail": pa.array([problems[i][2] for i in rows], pa.string())}, schema=BAD_SCHEMA)


def _plain(v):
    return v.item() if hasattr(v, "item") else str(v)


# -- per-column checks: (values of the column's kind, {row: (reason, detail)}) ---------------


def _valid(column: pa.ChunkedArray) -> np.ndarray:
    return pc.is_valid(column).to_numpy(zero_copy_only=False)


def _ids(column: pa.ChunkedArray, name: str) -> tuple[np.ndarray, dict]:
    """Non-negative int64 ids from integers, whole floats or integer text; anything else is a bad row."""
    n, t = len(column), column.type
    valid = _valid(column)
    problems = {int(i): (BadRowReason.null_key, f"{name} is empty") for i in np.flatnonzero(~valid)}
    if pa.types.is_null(t):
        return np.zeros(n, np.int64), problems
    if _textual(t):
        return _text_ids(column.to_pylist(), name, problems)
    numbers = pc.fill_null(column, 0).to_numpy()
    if pa.types.is_floating(t):
        nan = np.isnan(numbers)
        whole = ~nan & np.isfinite(numbers) & (numbers == np.floor(numbers)) & (np.abs(numbers) < _INT64_MAX)
        for i in np.flatnonzero(valid & ~whole):
            problems[int(i)] = ((BadRowReason.null_key, f"{name}=nan is null") if nan[i]
                                else (BadRowReason.unparseable, f"{name}={float(numbers[i])!r} is not an integer"))
        numbers = np.where(whole, numbers, 0)
    elif pa.types.is_unsigned_integer(t) and numbers.dtype == np.uint64:
        for i in np.flatnonzero(numbers > np.iinfo(np.int64).max):
            problems[int(i)] = (BadRowReason.unparseable, f"{name}={int(numbers[i])} does not fit in a 64-bit integer")
    ids = numbers.astype(np.int64)
    for i in np.flatnonzero(valid & (ids < 0)):
        problems.setdefault(int(i), (BadRowReason.wrong_type, f"{name}={int(ids[i])} is negative"))
    ids[list(problems)] = 0
    return ids, problems


def _text_ids(texts: list, name: str, problems: dict) -> tuple[np.ndarray, dict]:
    ids = np.zeros(len(texts), np.int64)
    for i, raw in enumerate(texts):
        if raw is None:
            continue
        v = raw.strip()
        if v.lower() in NULL_MARKERS:
            problems[i] = (BadRowReason.null_key, f"{name} is empty" if v == "" else f"{name}={v!r} is null")
        elif not _INT.fullmatch(v) or not -(2**63) <= int(v) < 2**63:
            problems[i] = (BadRowReason.unparseable, f"{name}={v!r} is not an integer")
        elif int(v) < 0:
            problems[i] = (BadRowReason.wrong_type, f"{name}={v!r} is negative")
        else:
            ids[i] = int(v)
    return ids, problems


def _numeric(column: pa.ChunkedArray, name: str, separator: str) -> tuple[np.ndarray, dict]:
    """float32 values; a null is missing (NaN: the training mean), as is a null marker in text (ingestion's
    rule); a NaN or infinite number is bad, as ``/v1/rank`` refuses one."""
    n, t = len(column), column.type
    if pa.types.is_null(t):
        return np.full(n, np.nan, np.float32), {}
    problems: dict = {}
    if _textual(t):
        numbers, valid = np.zeros(n), np.zeros(n, dtype=bool)
        for i, raw in enumerate(column.to_pylist()):
            v = "" if raw is None else raw.strip()
            if v.lower() in NULL_MARKERS:
                continue
            try:
                numbers[i], valid[i] = float(v), True
            except ValueError:
                problems[i] = (BadRowReason.unparseable, f"{name}={v!r} is not a number")
    else:
        valid = _valid(column)
        numbers = pc.fill_null(pc.cast(column, pa.float64()), 0.0).to_numpy()
    for i in np.flatnonzero(valid & ~np.isfinite(numbers)):
        problems[int(i)] = (BadRowReason.wrong_type, f"{name}={float(numbers[i])!r} is not finite")
    for i in np.flatnonzero(valid & np.isfinite(numbers) & (np.abs(numbers) > _FLOAT32_MAX)):
        problems[int(i)] = (BadRowReason.wrong_type, f"{name}={float(numbers[i])!r} is out of float32 range")
    out = np.where(valid, numbers, np.nan)
    out[list(problems)] = np.nan
    return out.astype(np.float32), problems


def _categorical(column: pa.ChunkedArray, name: str, separator: str) -> tuple[np.ndarray, dict]:
    """One value per row as text, as ``/v1/rank`` reads a context value (``as_text``); a null is missing."""
    out = np.empty(len(column), dtype=object)
    out[:] = [as_text(v) for v in column.to_pylist()]
    return out, {}


def _multi_hot(column: pa.ChunkedArray, name: str, separator: str) -> tuple[np.ndarray, dict]:
    """Lists of values as text (from a list column, or text split at ``separator``); a null is no value."""
    out = np.empty(len(column), dtype=object)
    if _textual(column.type):
        out[:] = [[] if v is None else split_values(v, separator) for v in column.to_pylist()]
    else:
        out[:] = [[] if v is None else [t for t in map(as_text, v) if t is not None] for v in column.to_pylist()]
    return out, {}


_CONTEXT = {Kind.numeric: _numeric, Kind.categorical: _categorical, Kind.multi_hot: _multi_hot}
