"""Two executors for the data steps' batch functions: in the step's own process, or Ray Data.

Ingest, statistics and transform are written once, as functions of one block
(a ``pyarrow.Table``) or of one group of blocks, and an executor runs them:

- :class:`LocalExecutor` (here, plain pyarrow): every block in this process,
  one after another. No worker start-up, no object store, no shuffle: on
  small inputs Ray Data's fixed costs are most of a step's time
  (ARCHITECTURE.md, traps).
- ``RayExecutor`` (:mod:`mlsys.data.datasets`, the one module here that talks
  to Ray): the same functions as Ray Data tasks, in parallel, spilling,
  on a cluster.

:func:`executor_for` picks one by the input's size (the rule is in
:class:`~mlsys.data.config.DataConfig`'s docstring)::

    executor = executor_for(cfg, rows=100_000)          # LocalExecutor below data.local_max_rows
    blocks = executor.generate(4, make_block, seed=0)   # block i = make_block(i, seed=0)
    summary = blocks.map(label).group_map("part", write_part, uri=out).collect()

Block functions take and return ``pyarrow.Table``; a function given to
:meth:`Executor.generate` takes the block's index. Results come back in no
particular order: a function whose results are merged returns its index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Protocol

import numpy as np
import pyarrow as pa

from mlsys.data.config import DataConfig, DataExecutor

BlockFn = Callable[..., pa.Table]


class ExecutorKind(str, Enum):
    """The executor a step ran on: its MLflow tag ``mlsys.executor``."""

    local = "local"
    ray = "ray"


def executor_kind(cfg: DataConfig, rows: int) -> ExecutorKind:
    """The rule: ``executor=local|ray`` forces one; ``auto`` runs inputs of at most
    ``local_max_rows`` rows in-process (``0``: always Ray Data).

    >>> executor_kind(DataConfig(local_max_rows=1000), rows=999).value
    'local'
    >>> executor_kind(DataConfig(local_max_rows=0), rows=1).value
    'ray'
    """
    choice = DataExecutor(cfg.executor)
    if choice is not DataExecutor.auto:
        return ExecutorKind(choice.value)
    return ExecutorKind.local if 0 < cfg.local_max_rows and rows <= cfg.local_max_rows else ExecutorKind.ray


class Blocks(Protocol):
    """A collection of blocks (Ray's run lazily, at :meth:`collect` or :meth:`count`; local ones at once)."""

    def map(self, fn: BlockFn, **kwargs) -> "Blocks":
        """``fn(block, **kwargs)`` on every block."""

    def group_map(self, key: str, fn: BlockFn, groups: int, **kwargs) -> "Blocks":
        """``fn(rows, **kwargs)`` once per distinct value of column ``key`` (``groups`` of them, at most),
        with every row holding that value."""

    def cache(self) -> "Blocks":
        """Compute the blocks once, so that several uses do not recompute them."""

    def count(self) -> int: ...

    def collect(self) -> pa.Table:
        """Every block's rows, in this process (for small results)."""


class Executor(Protocol):
    kind: ExecutorKind

    def read_lines(self, path: str) -> Blocks:
        """A text file's non-blank lines as blocks of one ``text`` column (``ray.data.read_text``'s split)."""

    def generate(self, count: int, fn: Callable[..., pa.Table], **kwargs) -> Blocks:
        """``count`` blocks, block ``i`` being ``fn(i, **kwargs)``: sources, and a task per file."""


def text_lines(data: bytes) -> list[str]:
    """``ray.data.read_text``'s lines of a file: ``splitlines`` of the UTF-8 text, blank lines dropped."""
    return [line for line in data.decode("utf-8").splitlines() if line.strip() != ""]


def concat(tables: list[pa.Table]) -> pa.Table:
    """Blocks as one table; columns a block lacks are null (an empty result has no columns)."""
    tables = [t for t in tables if t.num_columns]
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


@dataclass(frozen=True)
class LocalBlocks:
    """Blocks held in this process; each operation runs when called (there is nothing to overlap)."""

    blocks: tuple[pa.Table, ...]

    def map(self, fn: BlockFn, **kwargs) -> "LocalBlocks":
        return LocalBlocks(tuple(fn(b, **kwargs) for b in self.blocks))

    def group_map(self, key: str, fn: BlockFn, groups: int, **kwargs) -> "LocalBlocks":
        rows = concat(list(self.blocks))
        if rows.num_rows == 0:
            return LocalBlocks(())
        values = rows.column(key).to_numpy()
        order = np.argsort(values, kind="stable")
        starts = np.flatnonzero(np.r_[True, values[order][1:] != values[order][:-1]])
        if len(starts) == 1:  # one group: the rows as they are, no copy
            return LocalBlocks((fn(rows, **kwargs),))
        rows, bounds = rows.take(order), [*starts, len(order)]  # one copy; each group is a slice of it
        return LocalBlocks(tuple(fn(rows.slice(lo, hi - lo), **kwargs) for lo, hi in zip(bounds, bounds[1:])))

    def cache(self) -> "LocalBlocks":
        return self

    def count(self) -> int:
        return sum(b.num_rows for b in self.blocks)

    def collect(self) -> pa.Table:
        return concat(list(self.blocks))


class LocalExecutor:
    """``LocalExecutor().generate(2, fn).collect()``: the batch functions in this process, no Ray."""

    kind = ExecutorKind.local

    def read_lines(self, path: str) -> LocalBlocks:
        import pyarrow.fs as pafs

        fs, p = pafs.FileSystem.from_uri(path if "://" in path else os.path.abspath(path))
        with fs.open_input_stream(p) as f:
            lines = text_lines(f.read())
        return LocalBlocks((pa.table({"text": pa.array(lines, pa.string())}),))

    def generate(self, count: int, fn: Callable[..., pa.Table], **kwargs) -> LocalBlocks:
        return LocalBlocks(tuple(fn(i, **kwargs) for i in range(count)))


def executor_for(cfg: DataConfig, rows: int) -> Executor:
    """The executor :func:`executor_kind` picks for an input of ``rows`` rows."""
    if executor_kind(cfg, rows) is ExecutorKind.local:
        return LocalExecutor()
    from mlsys.data.datasets import RayExecutor

    return RayExecutor()

