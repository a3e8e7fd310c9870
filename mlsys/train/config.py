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
