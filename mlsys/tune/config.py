"""Typed configuration of the tuning stage: ``tune=optuna_asha`` picks ``configs/tune/optuna_asha.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict

# What a trial reports per epoch (mlsys.train.loop.eval_metrics, without the eval_ prefix).
METRICS = ("auc", "user_auc", "logloss", "calibration")


class SearcherKind(str, Enum):
    optuna = "optuna"  # Optuna's TPE, its study in <home>/optuna.db
    random = "random"  # Ray Tune's random search (the baseline)


class SchedulerKind(str, Enum):
    asha = "asha"  # asynchronous successive halving: stops the worse trials at each rung
    fifo = "fifo"  # every trial runs tune.max_epochs


@dataclass
class TuneConfig:
    """``tune=optuna_asha tune.num_samples=16 tune.max_concurrent_trials=2``.

    Each trial trains ``tune.workers_per_trial`` workers of ``tune.cpus_per_worker`` CPUs for up to
    ``max_epochs`` epochs on the training split less a ``validation_fraction`` it validates on (the
    eval split stays unseen until the evaluate step) and reports ``metric`` every epoch; ASHA stops
    it at ``grace_period`` * ``reduction_factor``^k epochs when it is not in the top 1/reduction_factor.
    The best trial's parameters become the train step's (:func:`mlsys.tune.space.tuned_configs`).
    ``search_space``: see :mod:`mlsys.tune.space`.
    """

    enabled: bool = False
    searcher: SearcherKind = SearcherKind.optuna
    scheduler: SchedulerKind = SchedulerKind.asha
    num_samples: int = 8
    max_concurrent_trials: int = 2
    # Optuna: trials drawn at random before TPE models the space (Optuna's default, 10, would
    # leave a budget of 8 trials all random)
    startup_trials: int = 3
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    max_epochs: int = 4
    grace_period: int = 1
    reduction_factor: int = 2
    metric: str = "auc"
    mode: str = "max"
    validation_fraction: float = 0.2
    seed: int = 0
    search_space: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        from mlsys.config import require
        from mlsys.tune.space import SearchSpace

        require(self.num_samples >= 1, "tune.num_samples", self.num_samples, ">= 1 (trials)")
        require(self.max_concurrent_trials >= 1, "tune.max_concurrent_trials", self.max_concurrent_trials, ">= 1")
        require(self.startup_trials >= 1, "tune.startup_trials", self.startup_trials, ">= 1")
        require(self.workers_per_trial >= 1, "tune.workers_per_trial", self.workers_per_trial, ">= 1")
        require(self.cpus_per_worker > 0, "tune.cpus_per_worker", self.cpus_per_worker, "> 0")
        require(self.max_epochs >= 1, "tune.max_epochs", self.max_epochs, ">= 1")
        require(1 <= self.grace_period <= self.max_epochs, "tune.grace_period", self.grace_period,
                f"between 1 and tune.max_epochs={self.max_epochs}")
        require(self.reduction_factor >= 2, "tune.reduction_factor", self.reduction_factor, ">= 2")
        require(self.metric in METRICS, "tune.metric", self.metric, f"one of {', '.join(METRICS)}")
        require(self.mode in ("max", "min"), "tune.mode", self.mode, "max or min")
        require(0 < self.validation_fraction < 1, "tune.validation_fraction", self.validation_fraction, "between 0 and 1")
        require(not self.enabled or bool(self.search_space), "tune.search_space", dict(self.search_space),
                "a mapping of keys to distributions when tuning is on (see configs/tune/optuna_asha.yaml)")
        SearchSpace.parse(self.search_space)  # a bad key or distribution fails at compose time

    @property
    def reported_metric(self) -> str:
        """The key trials report ``metric`` under (``eval_auc``)."""
        return f"eval_{self.metric}"
