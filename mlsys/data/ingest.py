"""Ingestion: read a source, quarantine malformed rows with their reasons, split each
user's events into train and eval, and write the events and attribute tables.

The events are written partitioned by user (:mod:`mlsys.data.splits`): blocks are
parsed (or generated), joined with the attributes and tagged with their user's
partition; each partition is then split and written as one file. The same block
functions run in-process or on Ray Data (:mod:`mlsys.data.executor`)::

    result = ingest(DataConfig(), events_uri, users_uri, items_uri, quarantine_uri)
    result.metrics["train_rows"], result.executor   # (about 80_000, ExecutorKind.local)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlsys import storage
from mlsys.data import events as ev
from mlsys.data import instacart, movielens, splits, synthetic
from mlsys.data.config import DataConfig, DataSource
from mlsys.data.executor import Blocks, Executor, ExecutorKind, executor_for, text_lines
from mlsys.data.feature_schema import KEY_OF, LABEL, RATING, SETTING, TIME, FeatureSchema, Kind, Table
from mlsys.data.parsing import BAD_COLUMNS, NULL_MARKERS, EventFormat, QuarantineSummary, header_columns, parse_events, split_values
from mlsys.errors import DataFormatError, TooManyBadRowsError

HEAD_BYTES = 1 << 16  # read to find the header and estimate a text file's rows
BAD_SCHEMA = pa.schema([("line_number", pa.int64()), ("raw", pa.string()), ("reason", pa.string()), ("detail", pa.string())])


@dataclass(frozen=True)
class IngestResult:
    metrics: dict[str, float]
    executor: ExecutorKind


@dataclass(frozen=True)
class Source:
    """What ingest reads: the attribute tables, the events' size, and where the events come from."""

    users: pd.DataFrame
    items: pd.DataFrame
    rows: int  # exact for generated data; for text estimated from the file's size (picks executor, partitions)
    path: str | None = None  # a delimited text file; None: the synthetic generator
    fmt: EventFormat | None = None


def ingest(cfg: DataConfig, events_uri: str, users_uri: str, items_uri: str, quarantine_uri: str,
           executor: Executor | None = None) -> IngestResult:
    """Write the labelled, split events (a Parquet folder, one file per partition of users) and the
    user and item tables; returns metrics and the executor used (by the input's size unless given).

    Stops with :class:`~mlsys.errors.TooManyBadRowsError` above ``data.max_bad_fraction`` bad rows.
    """
    source = read_source(cfg)
    executor = executor or executor_for(cfg, source.rows)
    events, summary = _read_events(executor, source, cfg, quarantine_uri)
    parts = splits.partition_count(source.rows, cfg.partition_rows)
    users, items = (pa.Table.from_pandas(t, preserve_index=False) for t in (source.users, source.items))
    uri = storage.absolute(events_uri)
    # Attributes are joined after the shuffle, in each partition: only the events' few columns move.
    write = {"uri": uri, "eval_fraction": cfg.eval_fraction, "users": users, "items": items}
    written = events.map(_tag_partition, partitions=parts).group_map("_partition", _write_partition, groups=parts, **write).collect()
    if written.num_rows == 0:  # no good row at all: an empty file still gives readers the schema
        empty = _good_rows(_parse_block(pa.table({"text": pa.array([], pa.string())}), source.fmt))
        written = _write_partition(_tag_partition(empty, 1), **write)
    storage.write_table(source.users, users_uri)
    storage.write_table(source.items, items_uri)
    return IngestResult(_metrics(written, summary), executor.kind)


def read_source(cfg: DataConfig) -> Source:
    """The attribute tables and how to read the events of ``cfg``'s source (nothing of the events is read).

    Everything is named by the declared schema (:class:`~mlsys.data.feature_schema.FeatureSchema`):
    a column it names that the source lacks is a :class:`~mlsys.errors.DataFormatError` naming the
    setting; columns it does not name are left out.
    """
    schema = FeatureSchema.of(cfg)
    kind = DataSource(cfg.source)
    if kind is DataSource.synthetic:
        users, items = synthetic.synthetic_users(cfg), synthetic.synthetic_items(cfg)
        return Source(attribute_table(users, schema, Table.users, "the synthetic users", cfg.separator),
                      attribute_table(items, schema, Table.items, "the synthetic items", cfg.separator), cfg.rows)
    users = items = None
    if kind is DataSource.movielens:
        root = movielens.movielens_dir()
        path, delimiter = str(root / "ml-100k.inter"), "\t"
        users, items = movielens.load_users(root), movielens.load_items(root)
    elif kind is DataSource.instacart:
        path, delimiter = str(instacart.orders_path()), ","
    else:
        path, delimiter = cfg.path, cfg.delimiter
    head, size = _head(path)
    first = head.decode("utf-8", errors="replace").splitlines()[0] if head else ""
    fmt = event_format(schema, header_columns(first, delimiter), delimiter, cfg.separator, path)
    users = _side_table(users, cfg.user_table.path, schema, Table.users, cfg.separator)
    items = _side_table(items, cfg.item_table.path, schema, Table.items, cfg.separator)
    return Source(users, items, _estimated_lines(head, size), path, fmt)


def event_format(schema: FeatureSchema, columns: tuple[str, ...], delimiter: str, separator: str, path: str) -> EventFormat:
    """How to parse the event file ``path`` whose header names ``columns``; a column the schema
    names that the header lacks is a :class:`~mlsys.errors.DataFormatError` naming its setting."""
    settings = {"user_id": "data.columns.user", "item_id": "data.columns.item", TIME: "data.columns.timestamp",
                LABEL: "data.columns.label", RATING: "data.columns.rating"}
    wanted = [(settings[role], column) for role, column in schema.sources.items()]
    wanted += [(f"{SETTING[Table.events]}.{schema.kind(name).value}", name) for name in schema.context]
    sequence = [(schema.history_column, "sequence")] if schema.history_column else []
    wanted += [("data.history_column", column) for column, _ in sequence]
    for setting, column in wanted:
        if column not in columns:
            raise DataFormatError(f"{setting} names the column {column!r}, but the header of {path} has {_listing(columns)}; "
                                  f"set {setting} to one of them")
    return EventFormat(delimiter=delimiter, header=True, columns=columns, click_threshold=schema.click_threshold,
                       roles=tuple(schema.sources.items()), separator=separator,
                       features=(*((name, schema.kind(name).value) for name in schema.context), *sequence))


def _listing(columns) -> str:
    names = [c for c in columns if c]
    return f"the columns {names}" if names else "no column names"


def _side_table(given: pd.DataFrame | None, path: str | None, schema: FeatureSchema, table: Table, separator: str) -> pd.DataFrame:
    """The data set's own table, else the file at ``path``, else (no table) an empty one: every id's
    attributes are then null (the OOV path)."""
    if path:
        if not storage.exists(path):
            raise DataFormatError(f"{SETTING[table]}.path={path!r}: no such file; set it to the {table.value} table (CSV or Parquet)")
        given = pd.read_csv(path) if path.endswith(".csv") else pd.read_parquet(path)
    if given is None:
        return pd.DataFrame({KEY_OF[table]: pd.Series(dtype="int64"), **{c: pd.Series(dtype=_EMPTY[schema.kind(c)])
                                                                        for c in schema.table_features(table)}})
    return attribute_table(given, schema, table, path or f"the {table.value} table", separator)


_EMPTY = {Kind.categorical: "object", Kind.numeric: "float32", Kind.multi_hot: "object"}


def attribute_table(df: pd.DataFrame, schema: FeatureSchema, table: Table, name: str, separator: str = "|") -> pd.DataFrame:
    """A user or item table as the schema declares it: the key renamed to its role (``user_id``,
    ``item_id``), then the declared features, each as its kind (numeric float32, multi-hot lists);
    undeclared columns are left out. A missing column or a value of the wrong kind is a
    :class:`~mlsys.errors.DataFormatError` naming it."""
    prefix = SETTING[table]
    key = schema.keys.get(table.value) or schema.sources[KEY_OF[table]]
    if key not in df.columns:
        role = "data.columns.user" if table is Table.users else "data.columns.item"
        raise DataFormatError(f"{name} has no key column {key!r} ({_listing(df.columns)}); set {prefix}.key to its key column "
                              f"(it defaults to {role})")
    out = {KEY_OF[table]: _ids(df[key], name, key, f"{prefix}.key")}
    for column in schema.table_features(table):
        kind = schema.kind(column)
        if column not in df.columns:
            raise DataFormatError(f"{prefix}.{kind.value} names the column {column!r}, but {name} has {_listing(df.columns)}; "
                                  f"remove it from {prefix}.{kind.value} or add the column")
        out[column] = _as_kind(df[column], kind, name, column, f"{prefix}.{kind.value}", separator)
    return pd.DataFrame(out)


def _ids(values: pd.Series, name: str, column: str, setting: str) -> np.ndarray:
    ids = pd.to_numeric(values, errors="coerce")
    bad = ids.isna() | (ids < 0) | (ids != np.floor(ids))
    if bad.any():
        first = values[bad].iloc[0]
        raise DataFormatError(f"{name}: the key column {column!r} ({setting}) holds {first!r} (row {int(np.flatnonzero(bad)[0])}); "
                              "keys must be non-negative integers")
    return ids.astype(np.int64).to_numpy()


def _as_kind(values: pd.Series, kind: Kind, name: str, column: str, setting: str, separator: str):
    if kind is Kind.numeric:
        text = values.map(lambda v: np.nan if isinstance(v, str) and v.strip().lower() in NULL_MARKERS else v)
        number = pd.to_numeric(text, errors="coerce")
        bad = number.isna() & text.notna()
        if bad.any():
            raise DataFormatError(f"{name}: column {column!r} is declared numeric ({setting}) but holds {values[bad].iloc[0]!r} "
                                  f"(row {int(np.flatnonzero(bad)[0])}); fix the value or declare the column categorical")
        return number.astype(np.float32).to_numpy()
    if kind is Kind.multi_hot:
        def as_list(v):
            if isinstance(v, str):
                return split_values(v, separator)
            if v is None or (isinstance(v, float) and np.isnan(v)):
                return []
            if isinstance(v, (list, tuple, np.ndarray)):
                return [str(x) for x in v]
            raise DataFormatError(f"{name}: column {column!r} is declared multi-hot ({setting}) but holds {v!r}; "
                                  f"give lists, or text with values separated by data.separator={separator!r}")
        return pd.Series([as_list(v) for v in values], dtype=object).to_numpy()
    nested = values.map(lambda v: isinstance(v, (list, tuple, np.ndarray, dict)))
    if nested.any():
        raise DataFormatError(f"{name}: column {column!r} is declared categorical ({setting}) but holds lists; "
                              "declare it multi-hot")
    return values.to_numpy(dtype=object) if values.dtype == object else values.to_numpy()


def _head(path: str) -> tuple[bytes, int]:
    """The file's first ``HEAD_BYTES`` and its size."""
    import pyarrow.fs as pafs

    fs, p = pafs.FileSystem.from_uri(path if "://" in path else os.path.abspath(path))
    if fs.get_file_info(p).type is not pafs.FileType.File:
        raise DataFormatError(f"data.path={path!r}: no such file; set data.path to the event file (CSV or delimited text)")
    with fs.open_input_stream(p) as f:
        head = f.read(HEAD_BYTES)
    return head, fs.get_file_info(p).size


def _estimated_lines(head: bytes, size: int) -> int:
    """Exact for a file that fits in ``head``; else its size over the mean length of ``head``'s lines."""
    if size <= len(head):
        return len(text_lines(head))
    return int(size * max(1, head.count(b"\n")) / len(head)) + 1


# -- reading: parsed (text) or generated blocks, bad rows quarantined ----------------------


def _read_events(executor: Executor, source: Source, cfg: DataConfig, quarantine_uri: str) -> tuple[Blocks, QuarantineSummary]:
    if source.path is None:
        events = executor.generate(cfg.blocks, _synthetic_block, cfg=cfg)
        summary = QuarantineSummary(rows=cfg.rows, bad=0, by_reason={})
        _quarantine(pd.DataFrame(), summary, cfg, quarantine_uri)
        return events, summary
    # Parsed once, used twice: the bad rows for the quarantine, the good ones for the events.
    parsed = executor.read_lines(source.path).map(_parse_block, fmt=source.fmt).cache()
    bad = parsed.map(_bad_rows).collect().to_pandas()
    summary = QuarantineSummary.of(parsed.count() - len(bad), bad)
    _quarantine(bad, summary, cfg, quarantine_uri)
    return parsed.map(_good_rows), summary


def _quarantine(bad: pd.DataFrame, summary: QuarantineSummary, cfg: DataConfig, uri: str) -> None:
    """Write malformed rows with their reasons to ``uri``; stop above ``data.max_bad_fraction``."""
    bad = bad.reindex(columns=list(BAD_COLUMNS))  # no rows: no columns either
    # Always written, empty or not: readers (and the step cache) can rely on it.
    storage.write_table(bad.astype({"line_number": "int64", "raw": str, "reason": str, "detail": str}),
                        storage.join(uri, "bad_rows.parquet"))
    if summary.bad:
        print(f"[ingest] quarantined {summary.bad} malformed row(s) of {summary.rows} ({summary.by_reason}) to {uri}")
    if summary.bad_fraction > cfg.max_bad_fraction:
        source_name = cfg.path or str(cfg.source.value)
        raise TooManyBadRowsError(source_name, summary.bad, summary.rows, cfg.max_bad_fraction, summary.by_reason, uri)


def _synthetic_block(index: int, cfg: DataConfig) -> pa.Table:
    return pa.Table.from_pandas(synthetic.generate_block(cfg, index), preserve_index=False)


def _parse_block(batch: pa.Table, fmt: EventFormat) -> pa.Table:
    """One table per block: good rows with null bad-columns, then bad rows with null event columns."""
    good, bad = parse_events(batch.column("text").to_pylist(), None, fmt)
    good_t = pa.Table.from_pandas(good, preserve_index=False)
    bad_t = pa.Table.from_pandas(bad.astype({"raw": str, "reason": str, "detail": str}), preserve_index=False).cast(BAD_SCHEMA)
    return pa.concat_tables([good_t, bad_t], promote_options="default")


def _bad_rows(table: pa.Table) -> pa.Table:
    return table.filter(pc.is_valid(table["reason"])).select(list(BAD_COLUMNS))


def _good_rows(table: pa.Table) -> pa.Table:
    return table.filter(pc.is_null(table["reason"])).drop_columns(list(BAD_COLUMNS))


# -- writing: a file per partition of users ---------------------------------------------------


def _tag_partition(block: pa.Table, partitions: int) -> pa.Table:
    return block.append_column("_partition", pa.array(splits.partition_of(block.column("user_id").to_numpy(), partitions)))


def _write_partition(rows: pa.Table, uri: str, eval_fraction: float, users: pa.Table, items: pa.Table) -> pa.Table:
    """Split one partition's users, join their attributes and write it as ``part-<k>.parquet``;
    returns its counts per split."""
    index = rows.column("_partition")[0].as_py() if rows.num_rows else 0
    table = ev.split_table(rows.drop_columns(["_partition"]), eval_fraction)
    split = table.column("split")
    # No schema metadata: the file is the same bytes whichever executor (pandas or Ray) made the rows.
    table = ev.join_table(table.drop_columns(["split"]), users, items).append_column("split", split).replace_schema_metadata(None)
    splits.write_part(table, splits.part_file(uri, index))
    is_train = table.column("split").to_numpy(zero_copy_only=False) == "train"
    label = table.column("label").to_numpy()
    return pa.table({"partition": [index], "train_rows": [int(is_train.sum())], "train_clicks": [float(label[is_train].sum())],
                     "eval_rows": [int((~is_train).sum())], "eval_clicks": [float(label[~is_train].sum())]})


def _metrics(written: pa.Table, summary: QuarantineSummary) -> dict[str, float]:
    metrics = {"rows_read": summary.rows, "bad_rows": summary.bad, **{f"bad_rows_{r}": n for r, n in summary.by_reason.items()}}
    for split in splits.SPLITS:
        rows, clicks = (int(np.sum(written.column(f"{split}_{c}").to_numpy())) for c in ("rows", "clicks"))
        if rows:
            metrics.update({f"{split}_rows": rows, f"{split}_click_rate": clicks / rows})
    return metrics
