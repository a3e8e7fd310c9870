"""The pipeline's own overhead.

Measures, for the default pipeline on MovieLens (``train.max_epochs=1``):

1. the wall time of ``mlsys run`` (a fresh process, fresh home: Ray start-up,
   imports, MLflow, scheduling) against the sum of its steps' compute time
   (what each step's function took inside its Ray task);
2. the wall time of a fully cached re-run against the fresh run.

    python benchmarks/pipeline_overhead.py [--repeats 3] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Row, median, record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MLSYS = str(Path(sys.executable).parent / "mlsys")


def run(home: Path, overrides: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([MLSYS, "run", f"home.root={home}", *overrides], cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def step_compute(home: Path) -> dict[str, float]:
    return {p.parent.name: json.loads(p.read_text())["seconds"] for p in (home / "cache").glob("*/*.json")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", default=["train.max_epochs=1"])
    args = parser.parse_args()
    walls, computes, cached, per_step = [], [], [], []
    for i in range(args.repeats):
        home = Path(tempfile.mkdtemp(prefix="mlsys-bench-"))
        try:
            walls.append(run(home, args.overrides))
            steps = step_compute(home)
            computes.append(sum(steps.values()))
            per_step.append(steps)
            cached.append(run(home, args.overrides))  # same home: every step cached
        finally:
            shutil.rmtree(home, ignore_errors=True)
        print(f"  repeat {i + 1}: wall {walls[-1]:.1f}s, steps {computes[-1]:.1f}s, cached re-run {cached[-1]:.1f}s", flush=True)
    step_medians = {s: median([p[s] for p in per_step]) for s in per_step[0]}
    rows = [
        Row("fresh run", "`mlsys run` wall", "sum of step compute", median(walls), median(computes), "s", args.repeats),
        Row("cached re-run", "`mlsys run` again, all cached", "fresh `mlsys run`", median(cached), median(walls), "s", args.repeats),
    ]
    notes = (
        "Per-step compute (median s): "
        + ", ".join(f"{s} {v:.1f}" for s, v in sorted(step_medians.items(), key=lambda kv: -kv[1]))
        + f". Overrides: `{' '.join(args.overrides)}`. The gap between wall and step compute is process start-up and imports,"
        " Ray start-up (started lazily, only when a step must run), MLflow bookkeeping and task scheduling."
    )
    record("Pipeline overhead", rows, notes)


if __name__ == "__main__":
    main()
