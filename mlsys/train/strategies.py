"""Training strategies: how a model, its gradients and optimizer state are spread over workers.

Plain torch / DeepSpeed, no Ray: the training loop (:mod:`mlsys.train.loop`) runs
inside a Ray Train worker whose ``torch.distributed`` process group is already up
(gloo on CPU, nccl on GPU), and drives a :class:`Strategy`:

>>> strategy = make_strategy(model, cfg, device)   # doctest: +SKIP
>>> loss = loss_fn(strategy.module(*inputs)); strategy.step(loss)   # doctest: +SKIP

Embeddings keep dense gradients under every strategy: DeepSpeed ZeRO cannot shard
torch sparse gradients (docs/training.md, "Embedding gradients").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import torch

from mlsys.train import checkpoint, deepspeed_ops
from mlsys.train.config import StrategyKind, TrainConfig, adam_params, deepspeed_config

DEEPSPEED_DIR = "deepspeed"  # every rank writes its ZeRO shard here; Ray Train merges the folders
DEEPSPEED_TAG = "state"


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def _rank() -> int:
    return torch.distributed.get_rank() if _distributed() else 0


class Strategy(Protocol):
    """What the training loop needs from a strategy; every method is called on every rank."""

    module: torch.nn.Module  # call it for the forward pass (the wrapped model)

    def step(self, loss: torch.Tensor) -> None:
        """Backward pass, gradient exchange and optimizer step."""

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The unsharded weights of the plain model (collective; complete on rank 0)."""

    def load_full_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        """Load plain-model weights on every rank (warm start); before the first step."""

    def save(self, directory: Path) -> None:
        """Write this rank's part of the training state (weights, optimizer) under ``directory``."""

    def load(self, directory: Path) -> None:
        """Restore the training state written by :meth:`save` on every rank."""


class DdpStrategy:
    """``torch.nn.parallel.DistributedDataParallel`` + ``torch.optim.Adam``; rank 0 checkpoints."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
        self.model = model.to(device)
        self.optimizer = torch.optim.Adam(model.parameters(), **adam_params(cfg))
        self.module = model
        if _distributed():
            ids = [device.index] if device.type == "cuda" else None
            self.module = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=ids, bucket_cap_mb=cfg.strategy.bucket_mb, gradient_as_bucket_view=True  # no 2nd gradient copy
            )

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_full_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(weights)

    def save(self, directory: Path) -> None:
        if _rank() == 0:
            checkpoint.save_optimizer(directory, self.optimizer)

    def load(self, directory: Path) -> None:
        checkpoint.load_weights(directory, self.model)
        checkpoint.load_optimizer(directory, self.optimizer)


class DeepSpeedStrategy:
    """A DeepSpeed engine (``deepspeed.initialize``) with ZeRO stage 1, 2 or 3, optionally offloaded."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
        # The accelerator follows the device Ray Train gave us (not a DS_ACCELERATOR=cpu left in the
        # shell by `make`): train.use_gpu=true alone switches it. Set before deepspeed picks one.
        os.environ["DS_ACCELERATOR"] = "cuda" if device.type == "cuda" else "cpu"
        if device.type == "cpu":  # say so before a first-use build of DeepSpeed's C++ ops, not a silent stall
            deepspeed_ops.ensure_built(deepspeed_ops.needed_ops(cfg.strategy.offload_optimizer),
                                       announce=os.environ.get("LOCAL_RANK", "0") == "0")
        import deepspeed

        self.config = deepspeed_config(cfg)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=model.parameters(), config=self.config
        )
        self.module = self.engine
        self.zero_stage = cfg.strategy.zero_stage

    def step(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()

    def _gathered(self, modifier_rank: int | None):
        import contextlib

        import deepspeed

        if self.zero_stage < 3:
            return contextlib.nullcontext()
        return deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()), modifier_rank=modifier_rank)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        with self._gathered(modifier_rank=None):
            if _rank() != 0:
                return {}
            return {k: v.detach().cpu().clone() for k, v in self.engine.module.state_dict().items()}

    def load_full_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        # ZeRO-3: rank 0 writes into the gathered parameters, which are re-partitioned on exit.
        # Every stage keeps an fp32 master copy of its partition in the optimizer, from which the
        # next step writes the parameters back: refresh it, or the loaded weights last one step.
        with self._gathered(modifier_rank=0):
            if self.zero_stage < 3 or _rank() == 0:
                self.engine.module.load_state_dict(weights)
        self.optimizer.refresh_fp32_params()

    def save(self, directory: Path) -> None:
        self.engine.save_checkpoint(str(directory / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)

    def load(self, directory: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(directory / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {directory / DEEPSPEED_DIR}")


STRATEGIES: dict[StrategyKind, type] = {StrategyKind.ddp: DdpStrategy, StrategyKind.deepspeed: DeepSpeedStrategy}


def make_strategy(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> Strategy:
    """The strategy ``cfg.strategy.kind`` names, wrapping ``model`` on ``device``."""
    return STRATEGIES[StrategyKind(cfg.strategy.kind)](model, cfg, device)
