"""DeepSpeed's CPU ops: the "is it built?" decision on a temporary TORCH_EXTENSIONS_DIR, and the
one line a DeepSpeed strategy prints before a first-use build (nothing when built). No Ray, no build."""

from __future__ import annotations

import pytest

from mlsys.train import deepspeed_ops


@pytest.fixture
def ext_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    return tmp_path


def _built(root, op, library=None):
    folder = root / op
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (library or f"{op}.so")).write_bytes(b"\x7fELF")


def test_ops_are_named_as_deepspeed_builds_them():
    from deepspeed.ops.op_builder import cpu

    for op, builder in deepspeed_ops.OPS.items():
        assert getattr(cpu, builder).NAME == op


def test_extensions_dir_is_where_torch_builds(ext_dir):
    from torch.utils.cpp_extension import _get_build_directory

    assert deepspeed_ops.extensions_dir() == ext_dir
    assert _get_build_directory("cpu_adam", verbose=False) == str(deepspeed_ops.extensions_dir() / "cpu_adam")


def test_offload_needs_cpu_adam_plain_zero_only_the_comm_op():
    assert deepspeed_ops.needed_ops(offload_optimizer=False) == ["deepspeed_shm_comm"]
    assert deepspeed_ops.needed_ops(offload_optimizer=True) == ["deepspeed_shm_comm", "cpu_adam"]


def test_empty_or_half_built_folder_is_not_built(ext_dir):
    ops = deepspeed_ops.needed_ops(offload_optimizer=True)
    assert deepspeed_ops.missing_ops(ops, ext_dir) == ops
    half = ext_dir / "cpu_adam"  # a build killed midway: ninja file, objects and its lock, no library
    half.mkdir()
    for name in ("build.ninja", "cpu_adam.o", "lock", ".ninja_log"):
        (half / name).write_text("")
    assert deepspeed_ops.missing_ops(ops, ext_dir) == ops


def test_a_library_in_its_own_folder_is_built(ext_dir):
    ops = deepspeed_ops.needed_ops(offload_optimizer=True)
    _built(ext_dir, "deepspeed_shm_comm")
    (ext_dir / "cpu_adam").mkdir()
    (ext_dir / "cpu_adam" / "deepspeed_shm_comm.so").write_bytes(b"")  # another op's library does not count
    assert deepspeed_ops.missing_ops(ops, ext_dir) == ["cpu_adam"]
    _built(ext_dir, "cpu_adam", library="cpu_adam_v1.so")  # torch's name after a source change
    assert deepspeed_ops.missing_ops(ops, ext_dir) == []


def test_nothing_is_printed_or_built_when_built(ext_dir, capsys):
    _built(ext_dir, "deepspeed_shm_comm")
    loaded = []
    assert deepspeed_ops.ensure_built(["deepspeed_shm_comm"], load=loaded.append) == []
    assert loaded == [] and capsys.readouterr().out == ""


def test_one_line_before_building_only_the_missing_ops(ext_dir, capsys):
    _built(ext_dir, "deepspeed_shm_comm")
    loaded = []

    def load(op):
        assert "building DeepSpeed's CPU ops" in capsys.readouterr().out  # said before the build starts
        loaded.append(op)

    missing = deepspeed_ops.ensure_built(deepspeed_ops.needed_ops(offload_optimizer=True), load=load)
    assert missing == loaded == ["cpu_adam"]
    assert "cpu_adam: built" in capsys.readouterr().out


def test_the_line_names_the_folder(ext_dir, capsys):
    deepspeed_ops.ensure_built(["cpu_adam"], load=lambda op: None)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("[train] building DeepSpeed's CPU ops (cpu_adam) once into ")
    assert str(ext_dir) in first and "make test builds them ahead" in first


def test_other_ranks_build_quietly(ext_dir, capsys):
    loaded = []
    deepspeed_ops.ensure_built(["cpu_adam"], announce=False, load=loaded.append)
    assert loaded == ["cpu_adam"] and capsys.readouterr().out == ""
