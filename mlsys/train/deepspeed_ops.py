"""Build DeepSpeed's CPU ops once, at install time (``make setup``).

DeepSpeed compiles C++ ops on first use (1-2 minutes), in every fresh
environment and in every Ray Train worker that lacks them. Building them
into ``TORCH_EXTENSIONS_DIR`` ahead of time makes the first training run
as fast as the next one. ``python -m mlsys.train.deepspeed_ops``.
"""

from __future__ import annotations

import os
import sys
import time

OPS = ("ShareMemCommBuilder", "FusedAdamBuilder", "CPUAdamBuilder")


def main() -> int:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "TORCH_EXTENSIONS_DIR" not in os.environ:
        print("TORCH_EXTENSIONS_DIR is not set; DeepSpeed would build into ~/.cache", file=sys.stderr)
    from deepspeed.ops.op_builder import cpu

    for name in OPS:
        started = time.perf_counter()
        getattr(cpu, name)().load(verbose=False)
        print(f"deepspeed op {name}: ready ({time.perf_counter() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
