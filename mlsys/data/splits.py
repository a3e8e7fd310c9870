"""The events on disk: partitioned by user, one Parquet file per partition, and their per-split statistics.

Ingest hashes each user to one of :func:`partition_count` partitions (sized to
the input: about ``data.partition_rows`` rows each) and writes partition ``k`` as
``part-0000k.parquet``, rows in event order. So every file holds whole users:
transform computes behaviour sequences file by file, with no second shuffle,
and the files are the same bytes whichever executor wrote them. Statistics are
computed per file and split and merged in file order, so they too do not
depend on the executor (apart from the KLL sketch's own randomness).

    files = part_files(events_uri)          # sorted
    split_statistics(cfg, events_uri, {"train": "train.json", "eval": "eval.json"}).executor   # ExecutorKind.local
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlsys import storage
from mlsys.data.config import DataConfig
from mlsys.data.executor import Executor, ExecutorKind, executor_for

SPLITS = ("train", "eval")


def partition_count(rows: int, partition_rows: int) -> int:
    """Partitions for an input of about ``rows`` rows (estimated before reading; at least one)."""
    return max(1, math.ceil(rows / partition_rows))


def partition_of(user_ids: np.ndarray, partitions: int) -> np.ndarray:
    """Each user's partition: a 64-bit mix of the id (SplitMix64's finalizer), so consecutive ids spread evenly."""
    x = user_ids.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x % np.uint64(partitions)).astype(np.int64)


def part_file(uri: str, index: int) -> str:
    return storage.join(uri, f"part-{index:05d}.parquet")


def _fs(uri: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), os.path.abspath(uri))


def part_files(uri: str) -> list[str]:
    """The data files of a Parquet dataset at ``uri`` (a file, or a folder's files minus ``_``/``.`` ones), sorted."""
    fs, root = _fs(uri)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return [uri]
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    prefix = uri.rstrip("/") if "://" in uri else root
    names = sorted(f.path[len(root.rstrip("/")) :] for f in found
                   if f.type == pafs.FileType.File and not f.base_name.startswith(("_", ".")))
    return [prefix + name for name in names]


def parquet_rows(files: list[str]) -> int:
    """Rows in Parquet files, from their footers (nothing else is read)."""
    total = 0
    for uri in files:
        fs, path = _fs(uri)
        with fs.open_input_file(path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def read_part(uri: str, columns: list[str] | None = None) -> pa.Table:
    fs, path = _fs(uri)
    return pq.read_table(path, filesystem=fs, columns=columns)


def read_schema(uri: str) -> pa.Schema:
    fs, path = _fs(uri)
    return pq.read_schema(path, filesystem=fs)


def write_part(table: pa.Table, uri: str) -> None:
    """One Parquet file, atomically: a retried task rewrites the same bytes, readers never see half a file."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes(uri, sink.getvalue().to_pybytes())


def split_rows(table: pa.Table, split: str) -> pa.Table:
    return table.filter(pc.equal(table.column("split"), split))


# -- statistics of each split -------------------------------------------------------------


def _file_states(index: int, files: list[str], kinds) -> pa.Table:
    """Accumulators of file ``index``'s rows, per split (pickled: transport between our own tasks)."""
    from mlsys.data.statistics import block_accumulators

    table = read_part(files[index])
    states = [pickle.dumps(block_accumulators(split_rows(table, s), kinds)) for s in SPLITS]
    return pa.table({"index": [index] * len(SPLITS), "split": list(SPLITS), "state": states})


@dataclass(frozen=True)
class StatisticsResult:
    rows: dict[str, float]  # "<split>_rows" -> rows
    executor: ExecutorKind


def split_statistics(cfg: DataConfig, events_uri: str, out: dict[str, str], executor: Executor | None = None) -> StatisticsResult:
    """Statistics of each split of the events at ``events_uri``, written as JSON to ``out[split]``.

    One pass, a task per file, every split at once; the executor is chosen by the events' rows unless given.
    """
    from mlsys.data.statistics import event_kinds, finalize, merge_all

    files = part_files(storage.absolute(events_uri))
    executor = executor or executor_for(cfg, parquet_rows(files))
    from mlsys.data.feature_schema import FeatureSchema

    kinds = event_kinds(read_schema(files[0]), FeatureSchema.of(cfg).categorical)
    states = executor.generate(len(files), _file_states, files=files, kinds=kinds).collect()
    # Merged in file order, not in the order tasks finished: the result does not depend on timing.
    states = states.take(np.argsort(states.column("index").to_numpy(), kind="stable"))
    rows = {}
    for split, uri in out.items():
        picked = [pickle.loads(s) for s in split_rows(states, split).column("state").to_pylist()]
        stats = finalize(merge_all(picked), split)
        storage.write_json(uri, stats.to_dict())
        rows[f"{split}_rows"] = stats.rows
    return StatisticsResult(rows, executor.kind)
