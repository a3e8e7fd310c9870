"""Per-worker peak memory of DeepSpeed ZeRO-1/2/3 (and ZeRO-3 + offload) against DDP.

A DeepFM with large embedding tables (>= 50M parameters, synthetic InputSpec) trains a few
steps under each strategy in a real Ray Train run of 2 CPU workers (gloo), through the same
``mlsys.train.loop.build`` the pipeline uses. Each worker samples its own resident memory
(``/proc/self/status`` VmRSS every 10 ms) and reports:

- *peak while stepping*: the highest RSS during the training steps, minus the RSS just before
  the model was built (imports, Ray, gloo): what the strategy holds for parameters, gradients
  and Adam state while it trains;
- *peak incl. construction*: the same from before the model was built, so it includes building
  the full model on every rank and DeepSpeed's flattening/partitioning copies;
- *process peak* (VmHWM): the lifetime high-water mark.

Strategies run interleaved, ``--repeats`` times each; medians are reported against DDP with the
ZeRO paper's per-worker formulas beside them. Appends a section to docs/benchmarks.md.

    python benchmarks/deepspeed_memory.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

GiB = 2**30
STRATEGIES = ("ddp", "zero1", "zero2", "zero3", "zero3_offload")


def _strategy(name: str):
    from mlsys.train.config import StrategyConfig

    if name == "ddp":
        return StrategyConfig()
    stage = int(name[4])
    offload = name.endswith("offload")
    return StrategyConfig(kind="deepspeed", zero_stage=stage, offload_optimizer=offload, offload_params=offload)


def _status(key: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process, bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


class _PeakSampler:
    """Highest VmRSS seen by a background thread between start and stop."""

    def __init__(self, interval: float = 0.01):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _status("VmRSS"))
            time.sleep(self.interval)

    def __enter__(self):
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._started
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status("VmRSS"))


def _train_steps(strategy, spec, cfg, steps: int, rank: int, device) -> None:
    """``steps`` training steps on synthetic batches (different rows per rank)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from mlsys.models import MODEL_INPUTS
    from mlsys.train.synthetic import encoded_batch

    for step in range(steps):
        batch = encoded_batch(spec, np.arange(cfg.batch_size) + (step * 2 + rank) * cfg.batch_size, seed=0)
        tensors = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
        loss = F.binary_cross_entropy_with_logits(strategy.module(*(tensors[k] for k in MODEL_INPUTS)), tensors["label"])
        strategy.step(loss)


def _worker(config: dict) -> None:
    """One Ray Train worker: build under the strategy, train ``steps`` batches, report memory."""
    import ray.train
    import ray.train.torch
    import torch

    from mlsys.models import InputSpec, ModelConfig
    from mlsys.train import loop
    from mlsys.train.config import TrainConfig

    spec, cfg = InputSpec.from_dict(config["spec"]), TrainConfig.from_dict(config["train"])
    torch.set_num_threads(1)
    device = ray.train.torch.get_device()
    rank = ray.train.get_context().get_world_rank()
    before = _status("VmRSS")
    with _PeakSampler() as sampler:
        strategy = loop.build(spec, ModelConfig(**config["model"]), cfg, device)
        params = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in strategy.module.parameters())
        with _PeakSampler() as stepping:
            _train_steps(strategy, spec, cfg, config["steps"], rank, device)
    mine = {"state_peak": sampler.peak - before, "step_peak": stepping.peak - before, "process_peak": _status("VmHWM")}
    every: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(every, mine)
    # The larger worker is the one that must fit; ranks differ little (ZeRO partitions evenly).
    metrics = {k: max(w[k] for w in every) for k in mine} | {"params": params, "step_s": stepping.seconds / config["steps"]}
    # Train V2 keeps the metrics of checkpointed reports only: rank 0 attaches a small one.
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "memory.json").write_text(json.dumps(metrics))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)


def measure(name: str, spec, model_cfg, steps: int, storage: str) -> dict:
    """One Ray Train run of ``name``; the larger worker's memory, bytes."""
    import dataclasses

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from mlsys.train.config import TrainConfig

    cfg = TrainConfig(num_workers=2, cpus_per_worker=1.0, batch_size=512, strategy=_strategy(name))
    config = json.loads(json.dumps({"spec": spec.to_dict(), "model": dataclasses.asdict(model_cfg),
                                    "train": dataclasses.asdict(cfg), "steps": steps}))
    result = TorchTrainer(
        _worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1.0}),
        run_config=RunConfig(name=f"mem-{name}-{time.time_ns()}", storage_path=storage),
    ).fit()
    return result.metrics


def formulas(psi: float, n: int) -> dict[str, tuple[float, float]]:
    """Per-worker bytes: (ZeRO paper, mixed precision K=12) and (this run: fp32, Adam)."""
    k = 12
    paper = {"ddp": (2 + 2 + k) * psi, "zero1": 4 * psi + k * psi / n, "zero2": 2 * psi + (2 + k) * psi / n,
             "zero3": (2 + 2 + k) * psi / n}
    # fp32 on CPU: params 4, grads 4 (DDP's buckets are views of them); torch Adam under DDP
    # holds m and v (K=8), DeepSpeed's ZeRO optimizer an fp32 master copy of its partition too (K=12).
    fp32 = {"ddp": 16 * psi, "zero1": 8 * psi + 12 * psi / n, "zero2": 4 * psi + 16 * psi / n, "zero3": 20 * psi / n}
    paper["zero3_offload"], fp32["zero3_offload"] = paper["zero3"], fp32["zero3"]
    return {s: (paper[s], fp32[s]) for s in paper}


def main() -> int:
    import ray

    from mlsys.models import ModelConfig
    from mlsys.train.synthetic import synthetic_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=760_000, help="users and items (each); sets the parameter count")
    parser.add_argument("--embed-dim", type=int, default=32)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "torch_extensions"))

    spec = synthetic_spec(users=args.vocab, items=args.vocab)
    model_cfg = ModelConfig(embed_dim=args.embed_dim)
    ray.init(num_cpus=4, include_dashboard=True, logging_level="WARNING")
    runs: dict[str, list[dict]] = {s: [] for s in STRATEGIES}
    with tempfile.TemporaryDirectory() as storage:
        for repeat in range(args.repeats):
            order = STRATEGIES if repeat % 2 == 0 else tuple(reversed(STRATEGIES))
            for name in order:
                try:
                    m = measure(name, spec, model_cfg, args.steps, storage)
                except Exception as e:  # one strategy failing must not hide the others' numbers
                    print(f"  repeat {repeat + 1}/{args.repeats} {name}: FAILED: {str(e).splitlines()[0][:300]}", flush=True)
                    continue
                runs[name].append(m)
                print(f"  repeat {repeat + 1}/{args.repeats} {name}: peak while stepping {m['step_peak'] / GiB:.2f} GiB, "
                      f"incl. construction {m['state_peak'] / GiB:.2f} GiB, "
                      f"process peak {m['process_peak'] / GiB:.2f} GiB, {m['step_s']:.2f} s/step", flush=True)
    ray.shutdown()

    failed = [s for s in STRATEGIES if not runs[s]]
    if "ddp" in failed:
        print("the DDP baseline failed: nothing to compare", file=sys.stderr)
        return 1
    ran = [s for s in STRATEGIES if runs[s]]
    psi = runs["ddp"][0]["params"]
    med = {s: {k: harness.median([r[k] for r in runs[s]]) for k in ("state_peak", "step_peak", "process_peak", "step_s")} for s in ran}
    theory = formulas(psi, 2)
    rows = []
    zero = [s for s in ran if s.startswith("zero")]
    for s in zero:
        rows.append(harness.Row(f"peak while training steps, per worker, {s} vs ddp (GiB above start, lower is better)", s, "ddp",
                                med[s]["step_peak"] / GiB, med["ddp"]["step_peak"] / GiB, "GiB", args.repeats))
    for s in zero:
        rows.append(harness.Row(f"peak incl. model construction, per worker, {s} vs ddp (GiB above start)", s, "ddp",
                                med[s]["state_peak"] / GiB, med["ddp"]["state_peak"] / GiB, "GiB", args.repeats))
    for s in zero:
        rows.append(harness.Row(f"process peak (VmHWM) per worker, {s} vs ddp", s, "ddp",
                                med[s]["process_peak"] / GiB, med["ddp"]["process_peak"] / GiB, "GiB", args.repeats))
    table = ["| strategy | measured peak while stepping | measured ratio to DDP | fp32 formula (this run) | fp32 ratio | "
             "ZeRO paper, mixed precision K=12 | paper ratio | step time |", "|---|---|---|---|---|---|---|---|"]
    for s in ran:
        paper, fp32 = theory[s]
        table.append(f"| {s} | {med[s]['step_peak'] / GiB:.2f} GiB | {med[s]['step_peak'] / med['ddp']['step_peak']:.2f} | "
                     f"{fp32 / GiB:.2f} GiB | {fp32 / theory['ddp'][1]:.2f} | {paper / GiB:.2f} GiB | "
                     f"{paper / theory['ddp'][0]:.2f} | {med[s]['step_s']:.2f} s |")
    for line in table:
        print(line)
    if not args.no_record:
        notes = (f"Model: DeepFM, embed_dim {args.embed_dim}, users and items vocabularies {args.vocab:,} each: "
                 f"Psi = {psi:,} parameters. 2 Ray Train workers on CPU (gloo, DS_ACCELERATOR=cpu), batch 512, "
                 f"{args.steps} steps per run, strategies interleaved."
                 + (f" Failed (no numbers): {', '.join(failed)}." if failed else "") + "\n\n" + "\n".join(table))
        harness.record("DeepSpeed ZeRO memory per worker", rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
