"""Ray Train edge: a ``TorchTrainer`` running the CTR training loop.

Each worker reads its shard of the preprocessed Ray Datasets, trains with
DDP (gloo on CPU), evaluates on its eval shard, and rank 0 checkpoints every
epoch. A run restarted under the same name resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

from mlsys.evaluate.metrics import auc, logloss
from mlsys.models import MODEL_INPUTS, InputSpec, ModelConfig, build_model
from mlsys.train import checkpoint
from mlsys.train.config import TrainConfig


def _gather(values: np.ndarray) -> np.ndarray:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, values)
    return np.concatenate(parts)


def train_loop(config: dict) -> None:
    """The per-worker loop (``train_loop_per_worker``); ``config`` is plain JSON data."""
    import logging

    import ray.train
    import ray.train.torch
    import torch.nn.functional as F

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one line per epoch is ours

    spec = InputSpec.from_dict(config["spec"])
    model_cfg = ModelConfig(**config["model"])
    cfg = TrainConfig(**config["train"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))

    model = build_model(spec, model_cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "history": []}
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            state = checkpoint.load(Path(d), model, optimizer)
        if rank == 0:
            print(f"[train] resuming after epoch {state['epoch']} from {restored.path}")
    ddp = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()

    train_shard = ray.train.get_dataset_shard("train")
    eval_shard = ray.train.get_dataset_shard("eval")
    for epoch in range(state["epoch"] + 1, cfg.max_epochs + 1):
        started = time.perf_counter()
        ddp.train()
        loss_sum, rows = 0.0, 0
        for batch in train_shard.iter_torch_batches(
            batch_size=cfg.batch_size, local_shuffle_buffer_size=4 * cfg.batch_size, local_shuffle_seed=cfg.seed + epoch, device=device
        ):
            logits = ddp(*(batch[k] for k in MODEL_INPUTS))  # (B,)
            loss = F.binary_cross_entropy_with_logits(logits, batch["label"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(logits)
            rows += len(logits)
        train_s = time.perf_counter() - started

        ddp.eval()
        labels, probs = [], []
        with torch.no_grad():
            for batch in eval_shard.iter_torch_batches(batch_size=4096, device=device):
                probs.append(torch.sigmoid(ddp(*(batch[k] for k in MODEL_INPUTS))).cpu().numpy())
                labels.append(batch["label"].cpu().numpy())
        y, p = _gather(np.concatenate(labels)), _gather(np.concatenate(probs))
        loss_rows = _gather(np.array([loss_sum, rows]))
        metrics = {
            "epoch": epoch,
            "train_loss": float(loss_rows[0::2].sum() / max(loss_rows[1::2].sum(), 1)),
            "eval_auc": auc(y, p),
            "eval_logloss": logloss(y, p),
            "epoch_s": train_s,
            "train_rows": float(loss_rows[1::2].sum()),
        }
        state = {"epoch": epoch, "history": [*state["history"], metrics]}
        if rank == 0:
            print(
                f"[train] epoch {epoch}/{cfg.max_epochs}: loss {metrics['train_loss']:.4f}, "
                f"eval AUC {metrics['eval_auc']:.4f}, logloss {metrics['eval_logloss']:.4f} ({train_s:.1f}s)"
            )
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint.save(Path(tmp), model, optimizer, state)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics, checkpoint=None)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    checkpoint_dir: Path
    history: list[dict]


def fit(
    train_ds: ray.data.Dataset,
    eval_ds: ray.data.Dataset,
    spec: InputSpec,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    storage_path: str,
    run_name: str,
) -> TrainResult:
    """Train with Ray Train; returns the last checkpoint (a local folder) and per-epoch metrics."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "spec": spec.to_dict(),
            "model": {**dataclasses.asdict(model_cfg), "name": str(getattr(model_cfg.name, "value", model_cfg.name))},
            "train": dataclasses.asdict(cfg),
        },
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        datasets={"train": train_ds, "eval": eval_ds},
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=1),
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
