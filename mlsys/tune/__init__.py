"""Hyperparameter tuning: search spaces in config (:mod:`~mlsys.tune.space`), Ray Tune with Optuna
and ASHA running the train step's own training per trial (:mod:`~mlsys.tune.tuner`, the Ray edge)."""

from mlsys.tune.config import SchedulerKind, SearcherKind, TuneConfig

__all__ = ["SchedulerKind", "SearcherKind", "TuneConfig"]
