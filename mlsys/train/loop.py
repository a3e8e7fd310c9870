"""The per-worker side of training (:func:`train_loop`, run in each Ray Train worker): build the model
under its strategy, restore or warm-start it, then per epoch train on this rank's shard, evaluate on
its eval shard and report (with a checkpoint every ``train.checkpoint_every`` epochs).

Only the workers import this module (and with it torch): the driver's side,
:func:`mlsys.train.trainer.fit`, names the loop through ``trainer._train_loop``, so a tuning
trial's process and Ray Train's controller start without torch.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mlsys import storage
from mlsys.data.datasets import quiet_ray_data
from mlsys.evaluate.metrics import ctr_metrics
from mlsys.models import MODEL_INPUTS, InputSpec, ModelConfig
from mlsys.models.zoo import build_model
from mlsys.train import checkpoint, warm_start
from mlsys.train.config import TrainConfig
from mlsys.train.strategies import Strategy, make_strategy

EVAL_BATCH = 4096


def _gather(values: np.ndarray) -> np.ndarray:
    """Concatenate every rank's ``values`` (all ranks get the result)."""
    return np.concatenate(_gather_objects(values))


def _gather_objects(value) -> list:
    """Every rank's ``value``, by rank (all ranks get the list)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, value)
    return parts


def worker_place(rank: int) -> dict:
    """Where this process runs: ``{"rank", "node_ip", "node_id", "hostname", "pid"}``."""
    import ray.util

    return {"rank": rank, "node_ip": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(), "pid": os.getpid()}


def record_attempt(state: dict, attempt: list[dict]) -> dict:
    """``state`` (fresh, or restored from a checkpoint) with this attempt's workers appended to ``state["workers"]``.

    Kept in the checkpoints' state.json: an attempt that failed before its first checkpoint leaves no entry.
    """
    return {**state, "workers": [*state.get("workers", []), attempt]}


def format_workers(attempt: list[dict]) -> str:
    """Rank 0's line per attempt.

    >>> format_workers([{"rank": 0, "node_ip": "127.0.0.2", "node_id": "3f2a1b77e0"}, {"rank": 1, "node_ip": "127.0.0.3", "node_id": "9c01"}])
    '[train] workers: rank 0 on 127.0.0.2 (node 3f2a1b..), rank 1 on 127.0.0.3 (node 9c01..)'
    """
    return "[train] workers: " + ", ".join(f"rank {w['rank']} on {w['node_ip']} (node {w['node_id'][:6]}..)" for w in attempt)


def build(spec: InputSpec, model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device) -> Strategy:
    """The model, wrapped by its strategy with its optimizer. Warm start loads weights after this
    with ``strategy.load_full_state_dict(weights)``."""
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    return make_strategy(build_model(spec, model_cfg), cfg, device)


class Timer:
    """Splits a loop over batches into waiting for the next batch and working on it."""

    def __init__(self):
        self.data_s = self.compute_s = 0.0
        self.first_batch_at: float | None = None  # wall clock, for the run's timeline

    def batches(self, iterable):
        it = iter(iterable)
        while True:
            asked = time.perf_counter()
            batch = next(it, None)
            got = time.perf_counter()
            self.data_s += got - asked
            if batch is None:
                return
            if self.first_batch_at is None:
                self.first_batch_at = time.time()
            yield batch  # until the loop asks for the next one, its time is compute
            self.compute_s += time.perf_counter() - got


def train_epoch(strategy: Strategy, shard, cfg: TrainConfig, epoch: int, device: torch.device,
                timer: Timer | None = None) -> tuple[float, int]:
    """One pass over this worker's shard; returns (summed loss, rows)."""
    import torch.nn.functional as F

    strategy.module.train()
    loss_sum, rows = 0.0, 0
    batches = shard.iter_torch_batches(
        batch_size=cfg.batch_size, local_shuffle_buffer_size=4 * cfg.batch_size,
        local_shuffle_seed=cfg.seed + epoch, device=device,
    )
    for batch in (timer or Timer()).batches(batches):
        logits = strategy.module(*(batch[k] for k in MODEL_INPUTS))  # (B,)
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"])
        strategy.step(loss)
        loss_sum += float(loss.detach()) * len(logits)  # waits for the step (GPU): all of it is compute
        rows += len(logits)
    return loss_sum, rows


def predict(strategy: Strategy, shard, device: torch.device, user_column: int,
            timer: Timer | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user indices, labels, click probabilities) of every rank's eval shard, gathered on all ranks."""
    strategy.module.eval()
    users, labels, probs = [], [], []
    with torch.no_grad():
        for batch in (timer or Timer()).batches(shard.iter_torch_batches(batch_size=EVAL_BATCH, device=device)):
            probs.append(torch.sigmoid(strategy.module(*(batch[k] for k in MODEL_INPUTS))).float().cpu().numpy())
            labels.append(batch["label"].cpu().numpy())
            users.append(batch["categorical"][:, user_column].cpu().numpy())
    return tuple(_gather(np.concatenate(x)) for x in (users, labels, probs))


def eval_metrics(users: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Per-epoch evaluation metrics: ``eval_auc``, ``eval_user_auc``, ``eval_logloss``, ``eval_calibration``."""
    return {f"eval_{k}": v for k, v in ctr_metrics(users, labels, probs).items() if k != "rows"}


def _report(strategy: Strategy, metrics: dict, state: dict, save: bool) -> None:
    """Report this epoch to Ray Train; with ``save``, every rank contributes its checkpoint part."""
    import ray.train

    if not save:
        ray.train.report(metrics, checkpoint=None)
        return
    weights = strategy.full_state_dict()  # collective (ZeRO-3 gathers)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        strategy.save(directory)  # collective (DeepSpeed: every rank its shard)
        if ray.train.get_context().get_world_rank() == 0:
            checkpoint.save_weights(directory, weights)
            checkpoint.save_state(directory, state)
        has_files = any(directory.iterdir())
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if has_files else None)


def train_loop(config: dict) -> None:
    """The per-worker loop (``train_loop_per_worker``); ``config`` is plain JSON data, and under
    ``small`` the small datasets' parts (:func:`mlsys.train.trainer._small_parts`)."""
    timeline = {"worker_started": time.time()}  # rank 0's, wall clock
    import logging

    import ray.train
    import ray.train.torch

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one line per epoch is ours
    # "Reporting training result N: TrainingReport(...)" every epoch comes from a logger named by its file path.
    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    quiet_ray_data()  # iterating the datasets' shards: no "Progress bars disabled" notice, no per-dataset lines
    spec = InputSpec.from_dict(config["spec"])
    model_cfg = ModelConfig(**config["model"])
    cfg = TrainConfig.from_dict(config["train"])
    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)

    strategy = build(spec, model_cfg, cfg, device)
    warm_start.apply(strategy, config.get("warm_start"), spec, model_cfg, cfg.seed, rank)
    state = {"epoch": 0, "history": [], "resumed_after": [], "workers": []}
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            strategy.load(Path(d))
            state = checkpoint.load_state(Path(d))
        state["resumed_after"] = [*state.get("resumed_after", []), state["epoch"]]  # a record of restarts
        if rank == 0:
            print(f"[train] resuming after epoch {state['epoch']} from {restored.path}")
    attempt = _gather_objects(worker_place(rank))
    state = record_attempt(state, attempt)
    if rank == 0:
        print(format_workers(attempt))

    timeline["ready"] = time.time()
    small = config.get("small", {})  # a small dataset's part per rank; the others stream
    train_shard, eval_shard = (small[n][rank] if n in small else ray.train.get_dataset_shard(n) for n in ("train", "eval"))
    timeline.update(data_ready=time.time(), epochs=[])
    for epoch in range(state["epoch"] + 1, cfg.max_epochs + 1):
        train_timer, eval_timer = Timer(), Timer()
        started = time.perf_counter()
        loss_sum, rows = train_epoch(strategy, train_shard, cfg, epoch, device, train_timer)
        train_s = time.perf_counter() - started
        loss_rows = _gather(np.array([loss_sum, rows]))
        metrics = {
            "epoch": epoch,
            "train_loss": float(loss_rows[0::2].sum() / max(loss_rows[1::2].sum(), 1)),
            **eval_metrics(*predict(strategy, eval_shard, device, spec.categorical_fields.index("user_id"), eval_timer)),
            "epoch_s": train_s,
            "train_rows": float(loss_rows[1::2].sum()),
            # this rank's time: stepping the model, and waiting for batches, in training and evaluation
            "train_compute_s": train_timer.compute_s,
            "train_data_s": train_timer.data_s,
            "eval_compute_s": eval_timer.compute_s,
            "eval_data_s": eval_timer.data_s,
        }
        state = {**state, "epoch": epoch, "strategy": cfg.strategy.label, "history": [*state["history"], metrics]}
        if rank == 0:
            print(
                f"[train] epoch {epoch}/{cfg.max_epochs} ({cfg.strategy.label}, {cfg.num_workers} workers on {device.type}): "
                f"loss {metrics['train_loss']:.4f}, eval AUC {metrics['eval_auc']:.4f}, "
                f"user AUC {metrics['eval_user_auc']:.4f}, logloss {metrics['eval_logloss']:.4f}, "
                f"calibration {metrics['eval_calibration']:.3f} ({train_s:.1f}s)"
            )
        evaluated = time.time()
        _report(strategy, metrics, state, save=epoch % cfg.checkpoint_every == 0 or epoch == cfg.max_epochs)
        timeline["epochs"].append({"epoch": epoch, "first_batch": train_timer.first_batch_at, "evaluated": evaluated,
                                   "reported": time.time()})
    if rank == 0 and config.get("timeline"):
        storage.write_json(config["timeline"], {**timeline, "finished": time.time()})
