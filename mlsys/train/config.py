"""Typed configuration of the training stage, strategies included.

``train/strategy=deepspeed_zero2`` picks ``configs/train/strategy/deepspeed_zero2.yaml``,
a :class:`StrategyConfig`; the DeepSpeed JSON config is generated from it by
:func:`deepspeed_config`, never written by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, Dict, Optional


# Ray Train's ScalingConfig.placement_strategy: how the workers' placement group bundles spread over nodes.
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class StrategyKind(str, Enum):
    ddp = "ddp"
    deepspeed = "deepspeed"


@dataclass
class StrategyConfig:
    """How gradients and optimizer state are shared between workers.

    ``kind=ddp``: every worker holds the full model and Adam state; gradients are all-reduced.
    ``kind=deepspeed``: ZeRO ``zero_stage`` 1 shards the optimizer state, 2 also the gradients,
    3 also the parameters; ``offload_optimizer`` keeps the optimizer state (and its step) in CPU
    memory, ``offload_params`` (stage 3) the parameters too.
    """

    kind: StrategyKind = StrategyKind.ddp
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    # Communication bucket size, MB of fp32: DDP's all-reduce buckets; DeepSpeed's reduce and
    # all-gather buckets (whose default, 5e8 elements = 2 GB, would dwarf small models).
    bucket_mb: int = 25

    def __post_init__(self):
        from mlsys.config import require

        ddp = StrategyKind(self.kind) is StrategyKind.ddp
        require(self.zero_stage in (0, 1, 2, 3), "train.strategy.zero_stage", self.zero_stage, "0, 1, 2 or 3")
        require(not ddp or self.zero_stage == 0, "train.strategy.zero_stage", self.zero_stage,
                 "0 with kind=ddp (pick train/strategy=deepspeed_zero1|2|3 for ZeRO)")
        require(ddp or self.zero_stage >= 1, "train.strategy.zero_stage", self.zero_stage, "1, 2 or 3 with kind=deepspeed")
        require(not self.offload_optimizer or not ddp, "train.strategy.offload_optimizer", self.offload_optimizer,
                 "false with kind=ddp (offload is a DeepSpeed feature)")
        require(not self.offload_params or self.zero_stage == 3, "train.strategy.offload_params", self.offload_params,
                 "false unless zero_stage=3 (ZeRO-Offload of parameters needs stage 3)")
        require(self.bucket_mb >= 1, "train.strategy.bucket_mb", self.bucket_mb, ">= 1")

    @property
    def label(self) -> str:
        """``ddp``, ``zero2``, ``zero3+offload``: a short name for logs and tables."""
        if StrategyKind(self.kind) is StrategyKind.ddp:
            return "ddp"
        offload = "+offload" if self.offload_optimizer or self.offload_params else ""
        return f"zero{self.zero_stage}{offload}"


@dataclass
class TrainConfig:
    """Ray Train settings: ``train.num_workers=4 train.use_gpu=true`` scales out.

    ``checkpoint_every`` epochs a checkpoint is written (the last epoch always is);
    ``max_failures`` worker-group failures are survived by restarting from the last one.
    Where the workers run: ``placement_strategy`` (Ray's PACK, SPREAD, STRICT_PACK, STRICT_SPREAD)
    and ``resources_per_worker`` (custom resources and ``memory`` in bytes, beside ``cpus_per_worker``
    and ``use_gpu``): ``train.resources_per_worker={worker: 1} train.placement_strategy=SPREAD``.
    """

    # Keys that say where the workers run, not what they compute: left out of the train step's
    # fingerprint (mlsys.pipeline.fingerprint.config_values), so moving training reruns nothing.
    fingerprint_exclude: ClassVar[tuple[str, ...]] = ("placement_strategy", "resources_per_worker")

    num_workers: int = 2
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    max_epochs: int = 2
    batch_size: int = 512
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    checkpoint_every: int = 1
    checkpoints_to_keep: int = 2
    max_failures: int = 1
    # Incremental learning: continue from a registered model (`models:/ctr@champion`, `ctr/3`,
    # or a package folder); new ids get fresh embedding rows. null: a cold start.
    warm_start: Optional[str] = None
    placement_strategy: str = "PACK"
    resources_per_worker: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        from mlsys.config import require, require_custom_resources

        require(self.num_workers >= 1, "train.num_workers", self.num_workers, ">= 1")
        require(self.cpus_per_worker > 0, "train.cpus_per_worker", self.cpus_per_worker, "> 0")
        require(self.max_epochs >= 1, "train.max_epochs", self.max_epochs, ">= 1")
        require(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        require(self.learning_rate > 0, "train.learning_rate", self.learning_rate, "> 0")
        require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, ">= 0")
        require(self.checkpoint_every >= 1, "train.checkpoint_every", self.checkpoint_every, ">= 1 (epochs)")
        require(self.checkpoints_to_keep >= 1, "train.checkpoints_to_keep", self.checkpoints_to_keep, ">= 1")
        require(self.max_failures >= -1, "train.max_failures", self.max_failures, ">= 0, or -1 for unlimited")
        require(self.placement_strategy in PLACEMENT_STRATEGIES, "train.placement_strategy", self.placement_strategy,
                f"one of {', '.join(PLACEMENT_STRATEGIES)}")
        require_custom_resources(self.resources_per_worker, "train.resources_per_worker",
                                 {"CPU": "train.cpus_per_worker", "GPU": "train.use_gpu"})  # memory has no key of its own here

    def worker_resources(self) -> dict[str, float]:
        """Ray Train's ``resources_per_worker``: ``{"CPU": cpus_per_worker, "GPU": 1 (use_gpu), **resources_per_worker}``."""
        out = {**self.resources_per_worker, "CPU": self.cpus_per_worker}
        if self.use_gpu:
            out["GPU"] = 1
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of ``dataclasses.asdict`` (the form that travels to Ray Train workers)."""
        return cls(**{**d, "strategy": StrategyConfig(**d["strategy"])})


def deepspeed_config(cfg: TrainConfig) -> dict:
    """The DeepSpeed config dict for ``cfg.strategy`` (kind=deepspeed).

    >>> deepspeed_config(TrainConfig(strategy=StrategyConfig(kind="deepspeed", zero_stage=2)))["zero_optimization"]["stage"]
    2

    ``train_micro_batch_size_per_gpu`` is our per-worker batch; there is no gradient
    accumulation, so the global batch is ``batch_size * num_workers``, as with DDP.
    Precision stays fp32 (CPU has no fast fp16/bf16 Adam path here; see docs/training.md).
    """
    s = cfg.strategy
    bucket = s.bucket_mb * 2**20 // 4  # elements
    zero: dict = {"stage": s.zero_stage, "reduce_bucket_size": bucket, "allgather_bucket_size": bucket}
    if s.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cfg.use_gpu}
    if s.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": cfg.use_gpu}
    return {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": 1,
        "train_batch_size": cfg.batch_size * cfg.num_workers,
        "optimizer": {"type": "Adam", "params": _adam_params(cfg)},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "wall_clock_breakdown": False,
        "steps_per_print": 10**9,  # our per-epoch line is the progress output
    }


def adam_params(cfg: TrainConfig) -> dict:
    """``torch.optim.Adam(params, **adam_params(cfg))``: the optimizer DDP and ZeRO (without offload) step.

    ``fused=True``: one kernel for all parameters instead of a loop of small ops per
    tensor (CPU and CUDA; the same update to float rounding).
    """
    return {"lr": cfg.learning_rate, "weight_decay": cfg.weight_decay, "fused": True}


def _adam_params(cfg: TrainConfig) -> dict:
    """Adam with L2 weight decay (``adam_w_mode=False``): the update torch.optim.Adam makes under DDP.

    Without offload it *is* torch.optim.Adam (``torch_adam``, fused): no DeepSpeed op to compile,
    on CPU or GPU. ZeRO-Offload steps the optimizer on the CPU with DeepSpeedCPUAdam (a prebuilt C++ op).
    """
    if not cfg.strategy.offload_optimizer:
        return {**adam_params(cfg), "adam_w_mode": False, "torch_adam": True}
    return {"lr": cfg.learning_rate, "weight_decay": cfg.weight_decay, "adam_w_mode": False}
