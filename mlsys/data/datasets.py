"""The data stage's Ray edge: the Ray Data executor of the data steps' batch functions,
reads, and statistics of any Dataset. Everything it runs is plain pandas/pyarrow."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa
import ray

from mlsys.data.executor import ExecutorKind, concat
from mlsys.data.splits import part_files


@dataclass(frozen=True)
class RayBlocks:
    """:class:`~mlsys.data.executor.Blocks` as a Ray Dataset: every map a task per block, in parallel."""

    ds: ray.data.Dataset

    def map(self, fn: Callable[..., pa.Table], **kwargs) -> "RayBlocks":
        return RayBlocks(self.ds.map_batches(fn, fn_kwargs=kwargs, batch_format="pyarrow", batch_size=None))

    def group_map(self, key: str, fn: Callable[..., pa.Table], groups: int, **kwargs) -> "RayBlocks":
        grouped = self.ds.groupby(key, num_partitions=max(1, min(groups, 4 * partitions())))
        return RayBlocks(grouped.map_groups(fn, fn_kwargs=kwargs, batch_format="pyarrow"))

    def cache(self) -> "RayBlocks":
        return RayBlocks(self.ds.materialize())

    def count(self) -> int:
        return self.ds.count()

    def collect(self) -> pa.Table:
        return concat(ray.get(list(self.ds.to_arrow_refs())))


def _blocks_of(batch, fn, kwargs) -> pa.Table:
    return concat([fn(int(i), **kwargs) for i in batch["index"]])


class RayExecutor:
    """The data steps' batch functions as Ray Data tasks (see :mod:`mlsys.data.executor`)."""

    kind = ExecutorKind.ray

    def read_lines(self, path: str) -> RayBlocks:
        return RayBlocks(ray.data.read_text(path))  # the same lines as executor.text_lines

    def generate(self, count: int, fn: Callable[..., pa.Table], **kwargs) -> RayBlocks:
        # from_items, not range: its blocks are made here, so no read task (range's are not fused with the
        # map, and waited on the map's CPUs: 11 s for 20 blocks under load, measured).
        ds = ray.data.from_items([{"index": i} for i in range(count)], override_num_blocks=count)
        return RayBlocks(ds.map_batches(_blocks_of, fn_kwargs={"fn": fn, "kwargs": kwargs}, batch_size=1, batch_format="numpy"))


def quiet_ray_data() -> None:
    """This process's Ray Data without progress bars or its per-dataset INFO lines: progress bars
    forwarded from a task or a Ray Train worker render as pages of escape codes, and mlsys prints its
    own per-step and per-epoch lines. Consuming Ray Data's once-per-process key keeps its "Progress bars
    disabled" notice out of every run."""
    import logging

    import ray.data
    from ray.util.debug import log_once

    ray.data.DataContext.get_current().enable_progress_bars = False
    log_once("ray_data_progress_manager_disabled")
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def partitions() -> int:
    """Shuffle partitions for grouped maps: one per logical CPU.

    Ray Data's default (about 200) writes as many small files, and reading
    many small files costs ~60 ms each on a 2-core machine.
    """
    return max(2, int(ray.cluster_resources().get("CPU", 2)))


def _block_state(table, kinds):
    import pickle

    from mlsys.data.statistics import block_accumulators

    # Internal transport between our own tasks; files on disk are JSON.
    return pa.table({"state": [pickle.dumps(block_accumulators(table, kinds))]})


def compute_statistics(ds: ray.data.Dataset, kinds=None, name: str = ""):
    """Statistics of a Dataset in one pass: per-block sketches, merged in the driver."""
    import pickle

    from mlsys.data.statistics import finalize, infer_kinds, merge_all

    kinds = kinds or infer_kinds(ds.schema().base_schema)
    states = ds.map_batches(_block_state, fn_kwargs={"kinds": kinds}, batch_format="pyarrow", batch_size=None).take_all()
    return finalize(merge_all(pickle.loads(s["state"]) for s in states), name)


def read_parquet(path: str, **kwargs) -> ray.data.Dataset:
    """``ray.data.read_parquet`` with one read task per file, so a task's memory is bounded by a file.

    Ray 2.60's default reader (datasource V2) bin-packs files into few tasks
    and reads a task's files ahead of the consumer: on the statistics
    benchmark each of its two read workers held ~1 GiB, growing with the
    number of files per task. The V1 reader (``DataContext.use_datasource_v2
    = False``, read when ``read_parquet`` is called) plans a task per file;
    asking for as many blocks as files keeps it from splitting each file's
    output, so the read fuses with a following ``map_batches`` and blocks
    never go through the object store. Measured in docs/benchmarks.md
    ("Dataset statistics throughput").
    """
    ctx = ray.data.DataContext.get_current()
    previous, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    # As many blocks as files: Ray's default (>= 200 blocks) splits each file's output
    # after the read, and the split keeps the read from fusing with the map that follows.
    kwargs.setdefault("override_num_blocks", max(1, len(part_files(path))))
    try:
        return ray.data.read_parquet(path, **kwargs)
    finally:
        ctx.use_datasource_v2 = previous


def read_any(path: str) -> ray.data.Dataset:
    """Parquet or CSV (by extension; a folder is read as Parquet)."""
    if path.endswith((".csv", ".csv.gz", ".tsv")):
        import pyarrow.csv as pacsv

        options = pacsv.ParseOptions(delimiter="\t") if path.endswith(".tsv") else None
        return ray.data.read_csv(path, parse_options=options) if options else ray.data.read_csv(path)
    if os.path.isfile(path):  # a single file is read whatever its extension (e.g. `.parquet.brotli`)
        return read_parquet(path, file_extensions=[path.rsplit(".", 1)[-1]])
    return read_parquet(path)
