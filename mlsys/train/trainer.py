"""Ray Train edge: a ``TorchTrainer`` (Train V2) running the CTR training loop.

Each worker reads its shard of the preprocessed Ray Datasets, trains under the
strategy ``train.strategy`` names (DDP, or DeepSpeed ZeRO 1/2/3 with optional
offload; see :mod:`mlsys.train.strategies`), evaluates on its eval shard, and
checkpoints every ``train.checkpoint_every`` epochs: rank 0 writes the full
weights and run state, every rank its part of the optimizer state, and Ray Train
merges the ranks' folders into one checkpoint. A worker that dies restarts the
group from the last checkpoint (``train.max_failures``); a run started again
under the same name and storage path (a killed driver, run again) resumes from it.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

from mlsys.evaluate.metrics import ctr_metrics
from mlsys.models import MODEL_INPUTS, InputSpec, ModelConfig, build_model
from mlsys.train import checkpoint, warm_start
from mlsys.train.config import TrainConfig
from mlsys.train.strategies import Strategy, make_strategy

EVAL_BATCH = 4096


def _gather(values: np.ndarray) -> np.ndarray:
    """Concatenate every rank's ``values`` (all ranks get the result)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, values)
    return np.concatenate(parts)


def build(spec: InputSpec, model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device) -> Strategy:
    """The model, wrapped by its strategy with its optimizer. Warm start loads weights after this
    with ``strategy.load_full_state_dict(weights)``."""
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    return make_strategy(build_model(spec, model_cfg), cfg, device)


def train_epoch(strategy: Strategy, shard, cfg: TrainConfig, epoch: int, device: torch.device) -> tuple[float, int]:
    """One pass over this worker's shard; returns (summed loss, rows)."""
    import torch.nn.functional as F

    strategy.module.train()
    loss_sum, rows = 0.0, 0
    batches = shard.iter_torch_batches(
        batch_size=cfg.batch_size, local_shuffle_buffer_size=4 * cfg.batch_size,
        local_shuffle_seed=cfg.seed + epoch, device=device,
    )
    for batch in batches:
        logits = strategy.module(*(batch[k] for k in MODEL_INPUTS))  # (B,)
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"])
        strategy.step(loss)
        loss_sum += float(loss.detach()) * len(logits)
        rows += len(logits)
    return loss_sum, rows


def predict(strategy: Strategy, shard, device: torch.device, user_column: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user indices, labels, click probabilities) of every rank's eval shard, gathered on all ranks."""
    strategy.module.eval()
    users, labels, probs = [], [], []
    with torch.no_grad():
        for batch in shard.iter_torch_batches(batch_size=EVAL_BATCH, device=device):
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
    """The per-worker loop (``train_loop_per_worker``); ``config`` is plain JSON data."""
    import logging

    import ray.train
    import ray.train.torch

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one line per epoch is ours
    # "Reporting training result N: TrainingReport(...)" every epoch comes from a logger named by its file path.
    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    spec = InputSpec.from_dict(config["spec"])
    model_cfg = ModelConfig(**config["model"])
    cfg = TrainConfig.from_dict(config["train"])
    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)

    strategy = build(spec, model_cfg, cfg, device)
    warm_start.apply(strategy, config.get("warm_start"), spec, model_cfg, cfg.seed, rank)
    state = {"epoch": 0, "history": [], "resumed_after": []}
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            strategy.load(Path(d))
            state = checkpoint.load_state(Path(d))
        state["resumed_after"] = [*state.get("resumed_after", []), state["epoch"]]  # a record of restarts
        if rank == 0:
            print(f"[train] resuming after epoch {state['epoch']} from {restored.path}")

    train_shard = ray.train.get_dataset_shard("train")
    eval_shard = ray.train.get_dataset_shard("eval")
    for epoch in range(state["epoch"] + 1, cfg.max_epochs + 1):
        started = time.perf_counter()
        loss_sum, rows = train_epoch(strategy, train_shard, cfg, epoch, device)
        train_s = time.perf_counter() - started
        loss_rows = _gather(np.array([loss_sum, rows]))
        metrics = {
            "epoch": epoch,
            "train_loss": float(loss_rows[0::2].sum() / max(loss_rows[1::2].sum(), 1)),
            **eval_metrics(*predict(strategy, eval_shard, device, spec.categorical_fields.index("user_id"))),
            "epoch_s": train_s,
            "train_rows": float(loss_rows[1::2].sum()),
        }
        state = {**state, "epoch": epoch, "strategy": cfg.strategy.label, "history": [*state["history"], metrics]}
        if rank == 0:
            print(
                f"[train] epoch {epoch}/{cfg.max_epochs} ({cfg.strategy.label}, {cfg.num_workers} workers on {device.type}): "
                f"loss {metrics['train_loss']:.4f}, eval AUC {metrics['eval_auc']:.4f}, "
                f"user AUC {metrics['eval_user_auc']:.4f}, logloss {metrics['eval_logloss']:.4f}, "
                f"calibration {metrics['eval_calibration']:.3f} ({train_s:.1f}s)"
            )
        _report(strategy, metrics, state, save=epoch % cfg.checkpoint_every == 0 or epoch == cfg.max_epochs)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    checkpoint_dir: Path
    history: list[dict]


def train_loop_config(spec: InputSpec, model_cfg: ModelConfig, cfg: TrainConfig, warm: warm_start.WarmStart | None = None) -> dict:
    """What travels to the workers: plain JSON data (str enums become their values)."""
    import json

    return json.loads(json.dumps({"spec": spec.to_dict(), "model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(cfg),
                                  "warm_start": dataclasses.asdict(warm) if warm and warm.active else None}))


def fit(
    train_ds: ray.data.Dataset,
    eval_ds: ray.data.Dataset,
    spec: InputSpec,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    storage_path: str,
    run_name: str,
    warm: warm_start.WarmStart | None = None,
) -> TrainResult:
    """Train with Ray Train; returns the last checkpoint (a local folder) and per-epoch metrics.

    A run of the same ``run_name`` under the same ``storage_path`` that was interrupted
    (driver killed, cluster lost) resumes from its last checkpoint.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = 1
    # Train V2 tees a worker's print into its logger too, so each epoch line showed twice; our
    # lines are plain prints (propagated to the controller and workers by Ray Train).
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=train_loop_config(spec, model_cfg, cfg, warm),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        datasets={"train": train_ds, "eval": eval_ds},
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint (see {storage_path}/{run_name})")
    local = Path(result.checkpoint.path)
    if not local.is_dir():  # remote storage (s3://, gs://): fetch the last checkpoint
        local = Path(result.checkpoint.to_directory())
    state = checkpoint.load_state(local)
    return TrainResult(checkpoint_dir=local, history=state["history"])
