"""Typed configuration of the training stage."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Ray Train settings: ``train.num_workers=4 train.use_gpu=true`` scales out."""

    num_workers: int = 2
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    max_epochs: int = 2
    batch_size: int = 512
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self):
        from mlsys.data.config import _require

        _require(self.num_workers >= 1, "train.num_workers", self.num_workers, ">= 1")
        _require(self.cpus_per_worker > 0, "train.cpus_per_worker", self.cpus_per_worker, "> 0")
        _require(self.max_epochs >= 1, "train.max_epochs", self.max_epochs, ">= 1")
        _require(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        _require(self.learning_rate > 0, "train.learning_rate", self.learning_rate, "> 0")
