"""Experiment loggers beside MLflow: ``logger=wandb`` (``logger=none`` is the default).

MLflow always gets every step's metrics (the train step's per epoch, ``step=epoch``).
An extra logger receives the same metrics once the pipeline has run, cached steps
included, so choosing a logger changes no step's fingerprint and reruns nothing:

- per-epoch metrics of a step as history, ``train/eval_auc`` against ``train/epoch``;
- every other metric in the run summary, ``evaluate/eval_auc``.

``logger.mode=offline`` (the default) writes the run under ``<home>/wandb`` with no
network; upload it later with ``wandb sync <dir>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional, Sequence

from mlsys.errors import MissingDependencyError


class LoggerName(str, Enum):
    none = "none"
    wandb = "wandb"


class WandbMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


@dataclass
class LoggerConfig:
    """``logger=wandb logger.project=ctr logger.mode=online`` (online needs ``wandb login``)."""

    name: LoggerName = LoggerName.none
    project: str = "mlsys"
    entity: Optional[str] = None
    mode: WandbMode = WandbMode.offline
    # wandb writes its run folders under <dir>/wandb/; null: under <home.root>/wandb/.
    dir: Optional[str] = None


@dataclass(frozen=True)
class StepMetrics:
    """What one pipeline step logged: ``(name, value, step)`` triples."""

    step: str
    metrics: Sequence[tuple[str, float, int]]


def split_metrics(steps: Sequence[StepMetrics]) -> tuple[dict[str, dict[int, dict[str, float]]], dict[str, float]]:
    """(history by step name and epoch, summary): a metric logged at an index >= 1 (an
    epoch) is history; every metric's last value also goes to the summary.

    >>> split_metrics([StepMetrics("train", [("auc", 0.6, 1), ("auc", 0.7, 2)]), StepMetrics("evaluate", [("auc", 0.7, 0)])])
    ({'train': {1: {'auc': 0.6}, 2: {'auc': 0.7}}}, {'train/auc': 0.7, 'evaluate/auc': 0.7})
    """
    history: dict[str, dict[int, dict[str, float]]] = {}
    summary: dict[str, float] = {}
    for s in steps:
        for name, value, idx in s.metrics:
            if idx >= 1:
                history.setdefault(s.step, {}).setdefault(idx, {})[name] = value
            summary[f"{s.step}/{name}"] = value  # the last value wins, as in MLflow
    return history, summary


def log_pipeline(cfg: LoggerConfig, run_name: str, config: dict[str, Any], steps: Sequence[StepMetrics], home: str) -> Optional[str]:
    """Send a finished pipeline's metrics to the configured logger; returns its run folder.

    >>> log_pipeline(LoggerConfig(), "ctr-1", {}, [], ".mlsys") is None   # logger=none
    True
    """
    if LoggerName(cfg.name) is LoggerName.none:
        return None
    return _log_wandb(cfg, run_name, config, steps, home)


def _log_wandb(cfg: LoggerConfig, run_name: str, config: dict[str, Any], steps: Sequence[StepMetrics], home: str) -> str:
    import os

    try:
        import wandb
    except ImportError:
        raise MissingDependencyError("logger=wandb", "wandb==0.31.0") from None
    directory = cfg.dir or home  # wandb adds its own `wandb/` folder below
    os.makedirs(directory, exist_ok=True)
    history, summary = split_metrics(steps)
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True)
    run = wandb.init(project=cfg.project, entity=cfg.entity, name=run_name, config=config, dir=directory,
                     mode=WandbMode(cfg.mode).value, settings=settings, reinit="create_new")
    try:
        for step, epochs in history.items():
            run.define_metric(f"{step}/epoch")
            run.define_metric(f"{step}/*", step_metric=f"{step}/epoch")
            for epoch in sorted(epochs):
                run.log({f"{step}/epoch": epoch, **{f"{step}/{k}": v for k, v in epochs[epoch].items()}})
        for key, value in summary.items():
            run.summary[key] = value
        return str(getattr(run.settings, "sync_dir", directory))
    finally:
        run.finish()
        # The run file is written by wandb's service process; stopping it flushes the file,
        # so it is complete when this returns (finish alone returned early on a loaded machine).
        wandb.teardown()


def plain_config(cfg: Any) -> dict[str, Any]:
    """A composed config dataclass as plain data (enums as their values), for a logger's run config."""
    from mlsys.config import plain

    return plain(cfg)
