"""Ray Train's overhead against plain PyTorch on the same in-memory data.

Three comparisons (four rows), each side by side in one run, interleaved, medians:

1. Ray Train, 1 worker (2 CPUs), the same loop over in-memory tensors, against
   a plain PyTorch loop in this process (2 threads): epoch time. Target <= 1.10x.
2. Ray Train, 2 workers (1 CPU each, DDP over gloo, half the rows each) against
   plain PyTorch DDP, the same 2 processes started by torch.multiprocessing: epoch
   time. Target <= 1.10x. Also against the one-process loop of 1., which adds what
   data parallelism itself costs on this host (a gloo all-reduce per step).
3. mlsys's trainer (``mlsys.train.trainer.fit``: Ray Data ingest through
   ``iter_torch_batches``, 1 worker with 2 CPUs) against a plain loop fed by a
   ``torch.utils.data.DataLoader`` over the same tensors: epoch time. Target <= 1.25x.

Start-up (``TorchTrainer.fit`` wall time minus the epochs) is reported separately.
The first epoch of every run is a warm-up and is not counted.

    python benchmarks/train_overhead.py [--rows 100000] [--epochs 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Row, interleaved, median, record  # noqa: E402

from mlsys.models import MODEL_INPUTS, InputSpec, ModelConfig  # noqa: E402
from mlsys.models.zoo import build_model  # noqa: E402

SPEC = InputSpec(
    categorical_fields=("user_id", "item_id", "gender", "occupation"),
    categorical_sizes=(2_002, 5_002, 4, 8),
    item_field="item_id",
    multi_hot_fields=("genres",),
    multi_hot_sizes=(20,),
    multi_hot_length=4,
    history_length=20,
    numeric_fields=("age", "year"),
)


def make_data(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Model inputs shaped like the transform step's output, with a learnable signal."""
    rng = np.random.default_rng(seed)
    cat = np.stack([rng.integers(1, n, rows) for n in SPEC.categorical_sizes], axis=1)
    multi_hot = rng.integers(0, SPEC.multi_hot_sizes[0], (rows, SPEC.multi_hot_length))
    history = rng.integers(0, SPEC.item_size, (rows, SPEC.history_length))
    numeric = rng.normal(size=(rows, len(SPEC.numeric_fields))).astype(np.float32)
    label = ((cat[:, 0] + cat[:, 1]) % 3 == 0).astype(np.float32)
    return {"categorical": cat, "multi_hot": multi_hot, "history": history, "numeric": numeric, "label": label}


def _model_and_optimizer():
    torch.manual_seed(0)
    model = build_model(SPEC, ModelConfig())
    return model, _adam(model)


def _adam(model):
    """The optimizer mlsys's trainer steps (DDP strategy), on every side."""
    from mlsys.train.config import TrainConfig, adam_params

    return torch.optim.Adam(model.parameters(), **adam_params(TrainConfig(learning_rate=2e-3)))


def train_batches(model, optimizer, batches) -> int:
    """The loop every side runs: forward, BCE, backward, Adam step. Returns rows seen."""
    import torch.nn.functional as F

    model.train()
    rows = 0
    for batch in batches:
        logits = model(*(batch[k] for k in MODEL_INPUTS))  # (B,)
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        rows += len(logits)
    return rows


def in_memory_batches(data: dict[str, torch.Tensor], batch_size: int, seed: int):
    order = torch.randperm(len(data["label"]), generator=torch.Generator().manual_seed(seed))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield {k: v[idx] for k, v in data.items()}


def epochs_plain(data: dict[str, np.ndarray], epochs: int, batch_size: int, threads: int) -> list[float]:
    torch.set_num_threads(threads)
    tensors = {k: torch.from_numpy(v) for k, v in data.items()}
    model, optimizer = _model_and_optimizer()
    times = []
    for epoch in range(epochs):
        started = time.perf_counter()
        train_batches(model, optimizer, in_memory_batches(tensors, batch_size, epoch))
        times.append(time.perf_counter() - started)
    return times


def epochs_dataloader(data: dict[str, np.ndarray], epochs: int, batch_size: int, threads: int) -> list[float]:
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(threads)
    keys = [*MODEL_INPUTS, "label"]
    loader = DataLoader(TensorDataset(*(torch.from_numpy(data[k]) for k in keys)), batch_size=batch_size, shuffle=True)
    model, optimizer = _model_and_optimizer()
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        train_batches(model, optimizer, (dict(zip(keys, b)) for b in loader))
        times.append(time.perf_counter() - started)
    return times


def _ddp_process(rank: int, world: int, port: int, data: dict, epochs: int, batch_size: int, out: str) -> None:
    """One process of the plain-PyTorch DDP baseline: the Ray worker's loop, launched by torch.multiprocessing."""
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    tensors = {k: torch.from_numpy(np.array(v[rank::world])) for k, v in data.items()}
    model, _ = _model_and_optimizer()
    model = torch.nn.parallel.DistributedDataParallel(model)  # what ray.train.torch.prepare_model does on CPU
    optimizer = _adam(model)
    times = []
    for epoch in range(epochs):
        started = time.perf_counter()
        train_batches(model, optimizer, in_memory_batches(tensors, batch_size, epoch))
        times.append(time.perf_counter() - started)
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.destroy_process_group()


def epochs_ddp(data: dict[str, np.ndarray], workers: int, epochs: int, batch_size: int) -> list[float]:
    """Epoch times of plain PyTorch DDP: ``workers`` processes x 1 thread, gloo, no Ray."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times.json")
        mp.spawn(_ddp_process, args=(workers, port, data, epochs, batch_size, out), nprocs=workers)
        return json.loads(Path(out).read_text())


def _ray_loop(config: dict) -> None:
    """Ray Train worker: the same loop over its share of the in-memory rows."""
    import ray
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    data = ray.get(config["data"][0])
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    tensors = {k: torch.from_numpy(np.array(v[rank::world])) for k, v in data.items()}  # a writable copy
    model, _ = _model_and_optimizer()
    model = ray.train.torch.prepare_model(model)
    optimizer = _adam(model)
    times = []
    for epoch in range(config["epochs"]):
        started = time.perf_counter()
        train_batches(model, optimizer, in_memory_batches(tensors, config["batch_size"], epoch))
        times.append(time.perf_counter() - started)
    # Train V2 returns metrics with a checkpoint only: rank 0 reports its times in one.
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "times.json").write_text(json.dumps(times))
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)


def epochs_ray(data_ref, workers: int, epochs: int, batch_size: int, storage: str) -> tuple[list[float], float]:
    """(epoch times, start-up seconds) of a Ray Train run over in-memory data."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cpus = 2 // workers
    trainer = TorchTrainer(
        _ray_loop,
        train_loop_config={"data": [data_ref], "threads": cpus, "epochs": epochs, "batch_size": batch_size},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=f"overhead-{workers}-{time.time_ns()}", storage_path=storage),
    )
    started = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - started
    with result.checkpoint.as_directory() as d:
        times = json.loads((Path(d) / "times.json").read_text())
    return times, wall - sum(times)


def epochs_mlsys(train_ds, eval_ds, epochs: int, batch_size: int, storage: str) -> tuple[list[float], float]:
    """(epoch times, start-up and evaluation seconds) of mlsys's trainer with Ray Data ingest."""
    from mlsys.train import trainer
    from mlsys.train.config import TrainConfig

    cfg = TrainConfig(num_workers=1, cpus_per_worker=2.0, max_epochs=epochs, batch_size=batch_size, checkpoint_every=10**6)
    started = time.perf_counter()
    result = trainer.fit(train_ds, eval_ds, SPEC, ModelConfig(), cfg, storage, f"overhead-data-{time.time_ns()}")
    wall = time.perf_counter() - started
    times = [h["epoch_s"] for h in result.history]
    return times, wall - sum(times)


def to_dataset(data: dict[str, np.ndarray], blocks: int):
    import pandas as pd
    import ray
    from ray.data.extensions import TensorArray

    bounds = np.linspace(0, len(data["label"]), blocks + 1).astype(int)
    frames = [
        pd.DataFrame({k: TensorArray(v[a:b]) if v.ndim > 1 else v[a:b] for k, v in data.items()})
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    return ray.data.from_pandas(frames).materialize()


def main() -> None:
    import ray

    from mlsys.cluster import connect
    from mlsys.config import ClusterConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is a warm-up")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    connect(ClusterConfig(address="local", num_cpus=4))
    data = make_data(args.rows)
    data_ref = ray.put(data)
    train_ds, eval_ds = to_dataset(data, 8), to_dataset(make_data(2_000, seed=1), 1)
    storage = tempfile.mkdtemp(prefix="mlsys-overhead-")
    startup: dict[str, list[float]] = {"ray1": [], "ray2": [], "mlsys": []}

    def steady(times: list[float]) -> float:
        return median(times[1:])  # the first epoch warms caches and threads

    def ray_side(key: str, workers: int):
        def run() -> float:
            times, start = epochs_ray(data_ref, workers, args.epochs, args.batch_size, storage)
            startup[key].append(start)
            return steady(times)
        return run

    def mlsys_side() -> float:
        times, start = epochs_mlsys(train_ds, eval_ds, args.epochs, args.batch_size, storage)
        startup["mlsys"].append(start)
        return steady(times)

    plain = lambda: steady(epochs_plain(data, args.epochs, args.batch_size, threads=2))  # noqa: E731
    ddp = lambda: steady(epochs_ddp(data, 2, args.epochs, args.batch_size))  # noqa: E731
    loader = lambda: steady(epochs_dataloader(data, args.epochs, args.batch_size, threads=2))  # noqa: E731
    load = [__import__("os").getloadavg()[0]]
    rows = []
    for name, candidate, baseline, label, base_label in [
        ("epoch, 1 worker", ray_side("ray1", 1), plain, "Ray Train, 1 worker x 2 CPUs, in-memory", "plain PyTorch loop, 2 threads"),
        ("epoch, 2 workers", ray_side("ray2", 2), ddp, "Ray Train, 2 workers x 1 CPU (DDP), in-memory", "plain PyTorch DDP, 2 processes x 1 thread"),
        ("epoch, 2 workers against one process", ray_side("ray2", 2), plain, "Ray Train, 2 workers x 1 CPU (DDP), in-memory", "plain PyTorch loop, 2 threads"),
        ("epoch, Ray Data ingest", mlsys_side, loader, "mlsys trainer, Ray Data, 1 worker x 2 CPUs", "torch DataLoader loop, 2 threads"),
    ]:
        print(f"{name}:", flush=True)
        c, b = interleaved(candidate, baseline, args.repeats)
        rows.append(Row(name, label, base_label, median(c), median(b), "s", args.repeats))
    load.append(__import__("os").getloadavg()[0])
    notes = (
        f"{args.rows:,} rows, batch {args.batch_size}, DeepFM (embed 16, MLP 128-64), {args.epochs} epochs per run, "
        f"the first a warm-up; epoch time is the median of the others. Start-up (fit wall time minus epochs, "
        f"median): 1 worker {median(startup['ray1']):.1f} s, 2 workers {median(startup['ray2']):.1f} s, "
        f"mlsys trainer {median(startup['mlsys']):.1f} s (includes its per-epoch evaluation and the final checkpoint). "
        f"1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (2 cores, shared machine)."
    )
    if args.no_record:
        print("\n".join(r.line() for r in rows) + "\n" + notes)
    else:
        record("Ray Train overhead against plain PyTorch", rows, notes)


if __name__ == "__main__":
    main()
