"""mlsys.data.executor without Ray: the choice rule, the in-process blocks, text lines, partitions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mlsys.data.config import DataConfig, DataExecutor
from mlsys.data.executor import ExecutorKind, LocalExecutor, executor_for, executor_kind, text_lines
from mlsys.data.splits import partition_count, partition_of
from mlsys.errors import ConfigError


@pytest.mark.parametrize(
    ("executor", "local_max_rows", "rows", "expected"),
    [
        ("auto", 1000, 999, "local"),
        ("auto", 1000, 1000, "local"),
        ("auto", 1000, 1001, "ray"),
        ("auto", 0, 1, "ray"),  # 0: always Ray Data
        ("auto", 0, 0, "ray"),
        ("local", 0, 10**9, "local"),  # forced, whatever the size
        ("ray", 10**9, 1, "ray"),
    ],
)
def test_the_rule(executor, local_max_rows, rows, expected):
    cfg = DataConfig(executor=DataExecutor(executor), local_max_rows=local_max_rows)
    assert executor_kind(cfg, rows) is ExecutorKind(expected)


def test_small_inputs_get_the_in_process_executor_without_importing_ray_data():
    assert isinstance(executor_for(DataConfig(), 100_000), LocalExecutor)


def test_negative_threshold_is_a_config_error():
    with pytest.raises(ConfigError, match="data.local_max_rows"):
        DataConfig(local_max_rows=-1)


def _numbered(i: int, scale: int) -> pa.Table:
    return pa.table({"i": [i] * 3, "v": np.arange(3) * scale, "key": [i % 2, (i + 1) % 2, i % 2]})


def test_generate_and_map_run_every_block_in_order():
    blocks = LocalExecutor().generate(4, _numbered, scale=10).map(lambda t, k: t.append_column("w", pa.array(np.full(len(t), k))), k=7)
    table = blocks.collect()
    assert table.column("i").to_pylist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert set(table.column("w").to_pylist()) == {7} and blocks.count() == 12


def test_group_map_calls_once_per_key_with_all_its_rows():
    calls = []

    def per_group(rows: pa.Table, tag: str) -> pa.Table:
        keys = sorted(set(rows.column("key").to_pylist()))
        calls.append(keys)
        return pa.table({"key": [keys[0]], "rows": [rows.num_rows], "tag": [tag]})

    out = LocalExecutor().generate(3, _numbered, scale=1).group_map("key", per_group, groups=2, tag="x").collect()
    assert sorted(map(len, calls)) == [1, 1]  # never two keys in one call
    assert dict(zip(out.column("key").to_pylist(), out.column("rows").to_pylist())) == {0: 5, 1: 4}


def test_group_map_of_nothing_is_nothing():
    empty = LocalExecutor().generate(1, lambda i: pa.table({"key": pa.array([], pa.int64())}))
    assert empty.group_map("key", lambda rows: rows, groups=1).collect().num_rows == 0


def test_text_lines_split_as_ray_read_text_does():
    # str.splitlines (also \r\n and \r), blank and whitespace-only lines dropped; no trailing empty line.
    assert text_lines(b"h,a\r\n1,2\n\n  \n3,4\r5,6\n") == ["h,a", "1,2", "3,4", "5,6"]


def test_read_lines_reads_a_file_as_one_block(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"a\n\nb\n")
    assert LocalExecutor().read_lines(str(path)).collect().column("text").to_pylist() == ["a", "b"]


def test_partitions_are_sized_to_the_rows_and_spread_users_evenly():
    assert [partition_count(r, 1000) for r in (0, 1, 1000, 1001, 10_500)] == [1, 1, 1, 2, 11]
    users = np.arange(1, 100_001)
    parts = partition_of(users, 8)
    assert np.array_equal(parts, partition_of(users.copy(), 8))  # a pure function of the id
    counts = np.bincount(parts, minlength=8)
    assert counts.min() > 0.95 * counts.mean() and counts.max() < 1.05 * counts.mean()
    assert set(partition_of(users, 1)) == {0}
