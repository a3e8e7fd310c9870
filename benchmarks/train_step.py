"""The train step's fixed costs at MovieLens-100K: where its wall time goes, before and after.

Runs ``mlsys.train.trainer.fit`` as the pipeline's train step calls it, on the transform
step's output (``preprocessor.transform(mlsys.data.datasets.read_parquet(...))``, DeepFM, 2 Ray Train
workers x 1 CPU over gloo, ``train.max_epochs=2``, the embedded Ray with 4 logical CPUs),
three ways side by side in one process, interleaved, medians:

- after: the trainer as it is: datasets of at most ``trainer.SMALL_ROWS`` rows are executed
  once, before the worker group starts, and each worker iterates its rows from the object
  store; Ray Train's controller polls every ``trainer.HEALTH_CHECK_INTERVAL_S``;
- before: the same code with both off (``small_rows=0``: Ray Train's streaming split, which
  executes read + transform again for every epoch of every split; Ray's 2 s poll), which is
  what the trainer did before;
- after, encoded in-process: the trainer as it is, given datasets the step would encode in its
  own process (``pd.read_parquet`` + ``preprocessor.transform_batch``, then ``from_arrow``;
  that time counts as start-up): what the train step gains by passing small data materialized.

Each run's wall time is split with rank 0's timeline (``TrainResult.timeline``) and its
per-epoch metrics into consecutive parts: start-up (``fit`` called until the first training
batch), compute (forward/backward/step and evaluation forward, rank 0), data iteration
(waiting for batches after the first), checkpointing (the report with its checkpoint),
other in-loop work (metric gathers, AUC) and teardown (rank 0 done until ``fit`` returns).
Target: wall <= 3x compute + a start-up of <= 15 s.

    python benchmarks/train_step.py [--home /tmp/bench-home] [--epochs 2] [--repeats 3]

The transform output is read from the newest ``<home>/artifacts/transform/*``; without one,
``mlsys run pipeline.until=transform home.root=<home>`` makes it first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Row, median, record  # noqa: E402

MLSYS = str(Path(sys.executable).parent / "mlsys")
PARTS = ["start-up", "compute", "data iteration", "checkpointing", "other in-loop", "teardown"]
STARTUP = ["executing small datasets", "until the loop runs", "model build", "waiting for data"]
POLL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def transform_output(home: Path) -> Path:
    outputs = sorted((home / "artifacts" / "transform").glob("*/preprocessor.json"), key=lambda p: p.stat().st_mtime)
    if not outputs:
        subprocess.run([MLSYS, "run", "pipeline.until=transform", f"home.root={home}"], check=True)
        return transform_output(home)
    return outputs[-1].parent


def breakdown(result, wall: float) -> dict[str, float]:
    """Consecutive parts of one run's wall time (s), from rank 0's timeline and metrics."""
    t, h = result.timeline, result.history
    first = t["epochs"][0]["first_batch"]
    compute = sum(e["train_compute_s"] + e["eval_compute_s"] for e in h)
    data = sum(e["train_data_s"] + e["eval_data_s"] for e in h) - (first - t["data_ready"])  # the first wait is start-up
    checkpointing = sum(e["reported"] - e["evaluated"] for e in t["epochs"])
    return {
        "wall": wall,
        "start-up": first - t["fit"],
        "executing small datasets": t["small_executed"] - t["fit"],  # before: nothing (all stream)
        "until the loop runs": t["worker_started"] - t["small_executed"],  # controller, worker actors, process group
        "model build": t["ready"] - t["worker_started"],  # model, DDP, optimizer (imports torch._dynamo)
        "waiting for data": first - t["ready"],
        "compute": compute,
        "per-epoch compute": compute / len(h),
        "data iteration": data,
        "checkpointing": checkpointing,
        "other in-loop": (t["finished"] - first) - compute - data - checkpointing,
        "teardown": t["done"] - t["finished"],
        "auc": h[-1]["eval_auc"],
    }


def main() -> None:
    import ray

    from mlsys import storage
    from mlsys.cluster import connect
    from mlsys.config import ClusterConfig
    from mlsys.data.datasets import read_parquet
    from mlsys.data.preprocessor import CtrPreprocessor
    from mlsys.models import ModelConfig
    from mlsys.train import trainer
    from mlsys.train.config import TrainConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--home", default="/tmp/bench-home")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    data = transform_output(Path(args.home))
    connect(ClusterConfig(address="local", num_cpus=4))  # the embedded default
    ray.data.DataContext.get_current().enable_progress_bars = False  # as the pipeline's steps run
    preprocessor = CtrPreprocessor.from_json(storage.read_text(str(data / "preprocessor.json")))
    storage_path = tempfile.mkdtemp(prefix="mlsys-train-step-")
    cfg = TrainConfig(max_epochs=args.epochs)  # configs/train/default.yaml: 2 workers x 1 CPU, DDP, batch 512

    def lazy(split: str):  # as the train step builds them (a read task per file)
        return preprocessor.transform(read_parquet(str(data / split)))

    def in_process(split: str):
        import pandas as pd
        import pyarrow as pa
        from ray.data.extensions import ArrowTensorArray

        arrays = preprocessor.transform_batch(pd.read_parquet(data / split))
        return ray.data.from_arrow(pa.table({k: ArrowTensorArray.from_numpy(v) if v.ndim > 1 else v for k, v in arrays.items()}))

    sides = {  # name: (datasets, small_rows, Ray Train's poll interval)
        "after": (lazy, trainer.SMALL_ROWS, None),
        "before": (lazy, 0, "2"),  # Ray's default
        "in-process": (in_process, trainer.SMALL_ROWS, None),
    }
    runs: dict[str, list[dict]] = {name: [] for name in sides}

    def run(name: str) -> None:
        datasets, small_rows, poll = sides[name]
        os.environ.pop(POLL, None)
        if poll:
            os.environ[POLL] = poll
        started = time.perf_counter()
        train, evaluation = datasets("train"), datasets("eval")
        encoded = time.perf_counter() - started  # in-process encoding; building lazy datasets is instant
        result = trainer.fit(train, evaluation, preprocessor.input_spec(), ModelConfig(), cfg, storage_path,
                             f"{name.replace(' ', '-')}-{time.time_ns()}", small_rows=small_rows)
        parts = breakdown(result, time.perf_counter() - started)
        parts["start-up"] += encoded
        parts["executing small datasets"] += encoded
        runs[name].append(parts)
        print(f"  {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in parts.items()), flush=True)

    load = [os.getloadavg()[0]]
    names = list(sides)
    for i in range(args.repeats):  # each repeat starts with another side
        for name in names[i % len(names):] + names[: i % len(names)]:
            run(name)
        load.append(os.getloadavg()[0])
        print(f"  repeat {i + 1}/{args.repeats} done, load {load[-1]:.1f}", flush=True)
    med = {s: {k: median([r[k] for r in rs]) for k in rs[0]} for s, rs in runs.items()}
    for m in med.values():
        m["after the first batch"] = m["wall"] - m["start-up"]
    label = {"after": "after: small datasets executed once", "before": "before: streamed, executed every epoch",
             "in-process": "after, given datasets encoded in-process"}
    n = args.repeats
    rows = [Row(f"train step {k}", label[s], label["before"], med[s][k], med["before"][k], "s", n)
            for s in ("after", "in-process") for k in ("wall", "start-up", "after the first batch")]
    rows += [Row(f"(wall - start-up) / compute, {s} (target <= 3)", "wall - start-up", "compute",
                 med[s]["after the first batch"], med[s]["compute"], "s", n) for s in sides]
    table = "\n".join([
        "| part (median s) | " + " | ".join(sides) + " |",
        "|---|" + "---|" * len(sides),
        *(f"| {'- ' if k in STARTUP else ''}{k} | " + " | ".join(f"{med[s][k]:.2f}" for s in sides) + " |"
          for k in ["wall", "start-up", *STARTUP, *PARTS[1:], "per-epoch compute"]),
        "| eval AUC, last epoch | " + " | ".join(f"{med[s]['auc']:.4f}" for s in sides) + " |",
    ])

    def verdict(s: str) -> str:
        m = med[s]
        budget = 3 * m["compute"] + m["start-up"]
        return (f"{s}: wall {m['wall']:.1f} s against 3 x compute + start-up = {budget:.1f} s "
                f"({'met' if m['wall'] <= budget else 'missed'}), start-up {m['start-up']:.1f} s "
                f"({'met' if m['start-up'] <= 15 else 'missed'})")

    notes = (
        f"MovieLens-100K transform output ({data.name}), DeepFM defaults, {args.epochs} epochs, 2 Ray Train workers x 1 CPU "
        f"(DDP, gloo), batch 512, embedded Ray with num_cpus=4. after and before: the datasets built as the train step "
        f"builds them (`preprocessor.transform(mlsys.data.datasets.read_parquet(...))`); in-process: `pd.read_parquet` + "
        f"`preprocessor.transform_batch` + `ray.data.from_arrow` before `fit` (counted in its start-up). Medians of {n} "
        f"runs per side, interleaved; compute and data waits are rank 0's. Where the time went:\n\n{table}\n\n"
        f"Target (train step wall <= 3x compute + <= 15 s start-up): {verdict('after')}; {verdict('in-process')}; "
        f"{verdict('before')}. 1-minute load average {load[0]:.1f} at the start, then "
        f"{', '.join(f'{x:.1f}' for x in load[1:])} after each repeat (2 cores, shared machine)."
    )
    if args.no_record:
        print("\n".join(r.line() for r in rows) + "\n" + notes)
    else:
        record("Train step fixed costs (MovieLens-100K)", rows, notes)


if __name__ == "__main__":
    main()
