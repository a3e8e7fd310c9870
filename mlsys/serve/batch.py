"""Batch prediction on Ray Data: the input's rows through an actor pool, each actor holding the package.

The driver plans the read (a Parquet file's row groups in pieces of at most ``predict.batch_size``
rows, or a CSV parsed once by pyarrow), Ray Data hands the pieces (or the CSV's blocks) to
``predict.concurrency`` actors (one GPU each when the cluster has GPUs), and each actor reads a
piece and scores its batch with the Ray-free core
(:class:`~mlsys.serve.predict.BatchPredictor`) and writes it: the scored rows to
``<output>/part-<first row_id>.parquet``, the bad rows to the quarantine. What comes back to the
driver is one small row of counts per batch, for the progress lines and the summary::

    plan = plan_input("rows.parquet", batch_size=100_000)
    result = predict(PredictConfig(input="rows.parquet", output="scores"), package_uri, plan)
    result.rows, result.summary.bad, result.stats   # counts and Dataset.stats()
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlsys import storage
from mlsys.data.ingest import BAD_SCHEMA
from mlsys.data.parsing import QuarantineSummary
from mlsys.errors import DataFormatError
from mlsys.serve.predict import check_bad_fraction
from mlsys.serve.predict_config import ROW_ID, PredictConfig

CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class InputPlan:
    """What the driver learnt of the input before scoring: its columns, its rows and how to read them."""

    path: str
    rows: int
    types: dict[str, pa.DataType]
    pieces: list[dict] = field(default_factory=list)  # Parquet: {"file", "groups", "start", "rows", "offset"}, an actor call each
    table: pa.Table | None = None  # CSV: parsed once by the driver, with row_id


@dataclass(frozen=True)
class PredictResult:
    rows: int
    summary: QuarantineSummary
    unknown_user_rows: int
    unknown_item_rows: int
    output: str
    quarantine: str
    seconds: float
    actors: int
    gpus: int
    stats: str


def plan_input(path: str, batch_size: int) -> InputPlan:
    """Read the input's schema and row count (Parquet footers; a CSV is parsed here, by pyarrow's threads)."""
    fs, where = _filesystem(path)
    info = fs.get_file_info(where)
    if info.type is pafs.FileType.NotFound:
        raise DataFormatError(f"--input {path}: no such file or folder; give a Parquet file or folder, or a CSV file")
    if info.type is pafs.FileType.File and path.endswith(CSV_SUFFIXES):
        return _plan_csv(path, fs, where)
    if info.type is pafs.FileType.File and not path.endswith(PARQUET_SUFFIXES):
        raise DataFormatError(f"--input {path}: not a Parquet ({', '.join(PARQUET_SUFFIXES)}) or CSV "
                              f"({', '.join(CSV_SUFFIXES)}) file; convert it, or rename it if it is one")
    files = [where] if info.type is pafs.FileType.File else sorted(
        f.path for f in fs.get_file_info(pafs.FileSelector(where, recursive=True))
        if f.type is pafs.FileType.File and f.path.endswith(PARQUET_SUFFIXES))
    if not files:
        raise DataFormatError(f"--input {path}: a folder without .parquet files; give a Parquet file or folder, or a CSV file")
    pieces, offset, types = [], 0, None
    for name in files:
        with fs.open_input_file(name) as f:
            meta = pq.ParquetFile(f).metadata
            schema = meta.schema.to_arrow_schema()
        if types is None:
            types = dict(zip(schema.names, schema.types))
        elif set(schema.names) != set(types):
            raise DataFormatError(f"--input {path}: {name} has the columns {schema.names}, the first file {list(types)}; "
                                  "give files of one schema")
        pieces += _pieces(_uri(path, name), [meta.row_group(g).num_rows for g in range(meta.num_row_groups)], offset, batch_size)
        offset += meta.num_rows
    return InputPlan(path, offset, types or {}, pieces)


def _pieces(file: str, group_rows: list[int], offset: int, batch_size: int) -> list[dict]:
    """Pieces of at most ``batch_size`` rows, an actor call each: small consecutive row groups together, a big one in slices
    (each slice's actor call reads its whole row group: cheap beside scoring it, and every actor gets work)."""
    pieces: list[dict] = []
    groups: list[int] = []
    for g, rows in enumerate(group_rows):
        if rows > batch_size:
            for start in range(0, rows, batch_size):
                pieces.append({"file": file, "groups": json.dumps([g]), "start": start, "rows": min(batch_size, rows - start),
                               "offset": offset + sum(group_rows[:g]) + start})
            continue
        if groups and sum(group_rows[i] for i in groups) + rows > batch_size:
            pieces.append(_together(file, groups, group_rows, offset))
            groups = []
        groups.append(g)
    if groups:
        pieces.append(_together(file, groups, group_rows, offset))
    return sorted(pieces, key=lambda p: p["offset"])


def _together(file: str, groups: list[int], group_rows: list[int], offset: int) -> dict:
    return {"file": file, "groups": json.dumps(groups), "start": 0, "rows": sum(group_rows[i] for i in groups),
            "offset": offset + sum(group_rows[: groups[0]])}


def _plan_csv(path: str, fs, where: str) -> InputPlan:
    import pyarrow.csv as pacsv

    parse = pacsv.ParseOptions(delimiter="\t" if ".tsv" in path else ",")
    with fs.open_input_stream(where, compression="detect") as f:
        data = f.read()
    try:
        table = pacsv.read_csv(pa.BufferReader(data), parse_options=parse)
    except pa.ArrowInvalid:  # a column whose later values do not parse as its first ones' type: all read as text
        header = pacsv.read_csv(pa.BufferReader(data), parse_options=parse, read_options=pacsv.ReadOptions(block_size=1 << 16))
        as_text = pacsv.ConvertOptions(column_types={c: pa.string() for c in header.column_names})
        table = pacsv.read_csv(pa.BufferReader(data), parse_options=parse, convert_options=as_text)
    return InputPlan(path, table.num_rows, dict(zip(table.column_names, table.schema.types)),
                     table=table.append_column(ROW_ID, pa.array(np.arange(table.num_rows), pa.int64())))


def _filesystem(path: str):
    return pafs.FileSystem.from_uri(path if "://" in path else os.path.abspath(path))


def _uri(given: str, name: str) -> str:
    return f"{given.split('://', 1)[0]}://{name}" if "://" in given else name


def _read_pieces(pieces: list[dict]) -> pa.Table:
    """The rows of ``pieces`` (a plan's Parquet pieces), with their row ids."""
    tables = []
    for piece in pieces:
        fs, where = _filesystem(piece["file"])
        with fs.open_input_file(where) as f:
            t = pq.ParquetFile(f).read_row_groups(json.loads(piece["groups"])).slice(piece["start"], piece["rows"])
        tables.append(t.append_column(ROW_ID, pa.array(np.arange(piece["offset"], piece["offset"] + t.num_rows), pa.int64())))
    return pa.concat_tables(tables)


class PredictActor:
    """One actor of the pool: the package loaded once, then a batch in (rows, or with ``reads`` a plan's
    Parquet pieces, which it reads), its counts out (its rows written here)."""

    def __init__(self, package_uri: str, cfg: PredictConfig, source: str, output: str, parts: str, providers: list[str] | None,
                 reads: bool = False):
        from mlsys.registry.package import read_package
        from mlsys.serve.predict import BatchPredictor

        self.predictor = BatchPredictor(read_package(package_uri), cfg.threads, cfg.separator, providers=providers)
        self.source, self.output, self.parts, self.reads = source, output, parts, reads

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.reads:
            batch = _read_pieces(batch.to_pylist())
        out = self.predictor.predict(batch, self.source)
        first = int(pc.min(batch.column(ROW_ID)).as_py())
        if out.scored.num_rows:
            scored = out.scored.sort_by(ROW_ID)
            _write(scored, storage.join(self.output, f"part-{first:012d}.parquet"))
        if out.bad.num_rows:
            _write(out.bad, storage.join(self.parts, f"bad-{first:012d}.parquet"))
        return pa.table({"rows": [out.summary.rows], "bad": [out.summary.bad], "by_reason": [json.dumps(out.summary.by_reason)],
                         "unknown_users": [out.unknown_user_rows], "unknown_items": [out.unknown_item_rows]})


def _write(table: pa.Table, uri: str) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes(uri, sink.getvalue().to_pybytes())


def pool_size(cfg: PredictConfig, local: bool) -> tuple[int, int]:
    """(actors, GPUs per actor): ``predict.concurrency``, else one per GPU, else one per CPU, at most
    one per core of this machine on the embedded Ray (whose ``cluster.num_cpus`` may be more)."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if cfg.concurrency:
        return cfg.concurrency, 1 if gpus >= cfg.concurrency else 0
    if gpus:
        return gpus, 1
    cpus = max(1, int(resources.get("CPU", 1)))
    return (min(cpus, os.cpu_count() or 1) if local else cpus), 0


def predict(cfg: PredictConfig, package_uri: str, plan: InputPlan, local: bool = True,
            echo: Callable[[str], None] = print) -> PredictResult:
    """Score ``plan``'s rows into ``cfg.output`` (see the module docstring); stops with
    :class:`~mlsys.errors.TooManyBadRowsError` above ``predict.max_bad_fraction`` bad rows,
    leaving the quarantine and removing the partial output."""
    import ray

    started = time.perf_counter()
    _quiet_ray_data()
    output, quarantine = storage.absolute(cfg.output), storage.absolute(cfg.quarantine_uri)
    parts = storage.join(quarantine, "parts")
    storage.remove(parts)  # a failed run's leftovers; bad_rows.parquet is replaced at the end
    actors, gpus = pool_size(cfg, local)
    actors = min(actors, max(1, -(-plan.rows // cfg.batch_size)))  # no more actors than batches
    providers = ["CUDAExecutionProvider"] if gpus else None
    echo(f"[predict] {plan.rows:,} rows of {plan.path}: {actors} actor(s){f', {gpus} GPU each' if gpus else ''}, "
         f"batches of {cfg.batch_size:,}")
    reads = plan.table is None
    if reads:
        # Each actor reads its pieces itself, one a call: separate read tasks (0.25 CPU each, at most one per actor)
        # were two more worker processes, each importing Ray Data (~2 s of CPU) while the actors started on 2 CPUs.
        ds = ray.data.from_items(plan.pieces, override_num_blocks=max(1, len(plan.pieces)))
    else:
        ds = ray.data.from_arrow([plan.table.slice(i, cfg.batch_size) for i in range(0, max(plan.rows, 1), cfg.batch_size)])
    counts = ds.map_batches(PredictActor, fn_constructor_kwargs={"package_uri": package_uri, "cfg": cfg, "source": plan.path,
                                                                  "output": output, "parts": parts, "providers": providers,
                                                                  "reads": reads},
                            batch_size=1 if reads else cfg.batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
                            num_cpus=1, num_gpus=gpus)
    summary, unknown_users, unknown_items, next_line = QuarantineSummary(0, 0, {}), 0, 0, cfg.progress_rows
    too_many = cfg.max_bad_fraction * plan.rows
    try:
        for block in counts.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in block.to_pylist():
                summary = summary.merge(QuarantineSummary(row["rows"], row["bad"], json.loads(row["by_reason"])))
                unknown_users, unknown_items = unknown_users + row["unknown_users"], unknown_items + row["unknown_items"]
            if cfg.progress_rows and summary.rows >= next_line:
                seconds = time.perf_counter() - started
                echo(f"[predict] {summary.rows:,} / {plan.rows:,} rows ({100 * summary.rows / max(plan.rows, 1):.0f}%), "
                     f"{summary.bad:,} bad, {summary.rows / seconds:,.0f} rows/s")
                next_line = (summary.rows // cfg.progress_rows + 1) * cfg.progress_rows
            if summary.bad > too_many:
                break  # the fraction over all rows is already above the limit
        bad_uri = _merge_quarantine(quarantine, parts)
        if summary.bad:
            echo(f"[predict] quarantined {summary.bad:,} bad row(s) of {summary.rows:,} ({summary.by_reason}) to {bad_uri}")
        check_bad_fraction(QuarantineSummary(plan.rows if summary.bad > too_many else summary.rows, summary.bad, summary.by_reason),
                           cfg.max_bad_fraction, plan.path, bad_uri)
    except BaseException as e:
        storage.remove(output)
        own = _own_error(e)
        if own is e:
            raise
        raise own from None
    return PredictResult(summary.rows, summary, unknown_users, unknown_items, output, quarantine,
                         time.perf_counter() - started, actors, gpus, counts.stats())


def _quiet_ray_data() -> None:
    """Ray Data's progress bars on a terminal; elsewhere (logs, CI) our progress lines, not its INFO lines every 10 s."""
    import logging
    import sys

    if not sys.stderr.isatty():
        logging.getLogger("ray.data").setLevel(logging.WARNING)


def _own_error(e: BaseException) -> BaseException:
    """An actor's :class:`~mlsys.errors.MlsysError` under Ray's wrapping (its message is the user's), else ``e``."""
    from mlsys.errors import MlsysError

    seen = e
    while seen is not None and not isinstance(seen, MlsysError):
        seen = getattr(seen, "cause", None) or seen.__cause__
    return seen if seen is not None else e


def _merge_quarantine(quarantine: str, parts: str) -> str:
    """The actors' bad rows in one file, ordered by row id; always written, empty or not (as ingestion's)."""
    uri = storage.join(quarantine, "bad_rows.parquet")
    tables = []
    if storage.exists(parts):
        fs, where = _filesystem(parts)
        files = sorted(f.path for f in fs.get_file_info(pafs.FileSelector(where)) if f.path.endswith(".parquet"))
        tables = [pq.read_table(_uri(parts, f)) if "://" in parts else pq.read_table(f) for f in files]
    bad = pa.concat_tables(tables).sort_by("line_number") if tables else BAD_SCHEMA.empty_table()
    _write(bad, uri)
    storage.remove(parts)
    return uri
