"""DeepSpeed's CPU ops: built once into ``TORCH_EXTENSIONS_DIR``, ahead of time or on first use.

DeepSpeed compiles C++ ops the first time they load (about 30-40 s each on an idle
2-CPU machine), in every fresh environment and every Ray Train worker that lacks them.
The default pipeline (DDP) needs none, so ``make setup`` (and so ``make demo``) does not
build them; ``make test`` builds them ahead (``python -m mlsys.train.deepspeed_ops``), and
a DeepSpeed strategy that finds one missing says so in one line before building it
(:func:`ensure_built`) instead of stalling silently inside ``deepspeed.initialize``.

Which ops a CPU run loads: every ``deepspeed.initialize`` builds the shared-memory
communication op (``deepspeed.comm``'s CPU backend); ZeRO-Offload steps the optimizer with
``DeepSpeedCPUAdam``. Plain ZeRO steps ``torch.optim.Adam`` (``torch_adam``), no op.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

# op name (torch's extension name, the folder it builds in) -> its builder in deepspeed.ops.op_builder.cpu
OPS = {"deepspeed_shm_comm": "ShareMemCommBuilder", "cpu_adam": "CPUAdamBuilder"}
SO_SUFFIX = ".so"


def extensions_dir() -> Path:
    """Where torch builds extensions: ``TORCH_EXTENSIONS_DIR``, else its per-user default.

    Mirrors ``torch.utils.cpp_extension._get_build_directory`` (which also creates the folder).
    """
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    import torch
    from torch.utils.cpp_extension import get_default_build_root

    if torch.version.hip is not None:
        accelerator = f"rocm{torch.version.hip.replace('.', '')}"
    elif torch.version.cuda is not None:
        accelerator = f"cu{torch.version.cuda.replace('.', '')}"
    else:
        accelerator = "cpu"
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return Path(get_default_build_root()) / f"{python}_{accelerator}"


def needed_ops(offload_optimizer: bool) -> list[str]:
    """The ops a DeepSpeed engine on CPU loads."""
    return ["deepspeed_shm_comm", "cpu_adam"] if offload_optimizer else ["deepspeed_shm_comm"]


def is_built(op: str, root: Path) -> bool:
    """True when ``root/op`` holds the op's library (``op.so``, or ``op_v1.so`` after torch bumps it).

    A folder with only a half build (``build.ninja``, object files, a ``lock``) is not built.
    """
    return any((root / op).glob(f"{op}*{SO_SUFFIX}"))


def missing_ops(ops: Iterable[str], root: Path) -> list[str]:
    return [op for op in ops if not is_built(op, root)]


def _load(op: str) -> None:
    from deepspeed.ops.op_builder import cpu

    getattr(cpu, OPS[op])().load(verbose=False)


def ensure_built(ops: Iterable[str], announce: bool = True, load: Callable[[str], None] = _load) -> list[str]:
    """Build the missing ``ops``, after one line saying so (when ``announce``); returns what was missing.

    Nothing is printed (and DeepSpeed is not imported) when every op is already built.
    """
    root = extensions_dir()
    missing = missing_ops(ops, root)
    if missing and announce:
        print(f"[train] building DeepSpeed's CPU ops ({', '.join(missing)}) once into {root} "
              "(1-2 minutes on idle CPUs, longer under load; make test builds them ahead)", flush=True)
    for op in missing:
        started = time.perf_counter()
        load(op)
        if announce:
            print(f"[train] DeepSpeed op {op}: built ({time.perf_counter() - started:.0f}s)", flush=True)
    return missing


def main() -> int:
    """Build (or check) every op here: ``make test``'s set-up step."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "TORCH_EXTENSIONS_DIR" not in os.environ:
        print("TORCH_EXTENSIONS_DIR is not set; DeepSpeed builds into", extensions_dir(), file=sys.stderr)
    for op in OPS:
        started = time.perf_counter()
        _load(op)  # also when built: torch relinks only what changed, and loading proves the library works
        print(f"deepspeed op {op}: ready ({time.perf_counter() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
