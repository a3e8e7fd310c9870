"""Ray Tune edge: trials of the train step's own training, proposed by Optuna, stopped by ASHA.

Each trial is a Tune function trainable that starts a ``TorchTrainer``
(:func:`mlsys.train.trainer.fit`, the train step's code) with the trial's
parameters; Ray Train hands every epoch's metrics to Tune through
``TuneReportCallback``, so ASHA sees the validation AUC per epoch and stops a
trial at a rung. The trial process itself asks for :data:`TRIAL_DRIVER_CPUS`:
it only waits on its workers, whose CPUs Ray Train requests apart.

The experiment lives at ``<home>/ray_results/<name>`` and the Optuna study in
``<home>/optuna.db`` (``optuna-dashboard sqlite:///<home>/optuna.db``); run
again under the same name, an interrupted experiment is restored
(``Tuner.restore``): finished trials are kept, unfinished ones continue from
their last epoch checkpoint. Trials are MLflow runs nested under the tune
step's run, with their parameters and per-epoch curves (``valid_auc``, ...).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

import ray
from ray.tune import Callback

from mlsys import storage
from mlsys.errors import TuningFailedError
from mlsys.models import InputSpec, ModelConfig
from mlsys.registry import mlflow_store
from mlsys.registry.mlflow_store import Tag
from mlsys.train import trainer
from mlsys.train.config import TrainConfig
from mlsys.tune.config import SchedulerKind, SearcherKind, TuneConfig
from mlsys.tune.space import Distribution, Kind, SearchSpace, trial_configs

# A trial's own process waits on its Ray Train workers; a whole CPU would take one from them or from Ray Data.
TRIAL_DRIVER_CPUS = 0.01
# How often Tune writes its experiment state (Ray's default: at least 10 s): a trial that finished
# less than this before the driver died is run again on restore.
EXPERIMENT_STATE_EVERY_S = "1"
TRIAL_TAG = "mlsys.trial_id"
_CURVES = ("train_loss", "eval_auc", "eval_user_auc", "eval_logloss", "eval_calibration", "epoch_s")


@dataclass(frozen=True)
class TuneResult:
    """What a tuning run found: the best trial's ``params`` (flat keys, config values) and its best
    ``value`` of ``metric`` (at ``epoch``), and what the search cost."""

    params: dict
    metric: str
    value: float
    epoch: int
    trial_id: str
    trials: int  # trials that finished (ran to tune.max_epochs or were stopped early)
    stopped_early: int
    errored: int
    trial_epochs: int  # epochs trained, all trials together
    trial_s: float  # the trials' wall times summed (this run's share of a resumed experiment)
    wall_s: float  # this call's wall time
    resumed: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def holdout(ds: ray.data.Dataset, fraction: float, seed: int) -> tuple[ray.data.Dataset, ray.data.Dataset]:
    """``(train, validation)``: ``ds`` executed once and split at random, ``fraction`` of the rows to
    validation. Every trial reads these same materialized blocks; the eval split stays unseen."""
    train, valid = ds.materialize().train_test_split(test_size=fraction, shuffle=True, seed=seed)
    return train, valid


def _trial(config: dict, *, train_ds, valid_ds, spec: InputSpec, model: ModelConfig, train: TrainConfig,
           tune_cfg: TuneConfig, storage_path: str) -> None:
    """One trial (runs in Tune's trial actor): the train step's training, each epoch reported to Tune."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    model_cfg, train_cfg = trial_configs(config, model, train, tune_cfg)
    trainer.fit(train_ds, valid_ds, spec, model_cfg, train_cfg, storage_path=storage_path,
                run_name=f"trial-{ray.tune.get_context().get_trial_id()}", callbacks=[TuneReportCallback()])


def tune_space(space: SearchSpace) -> dict:
    """The search space as Ray Tune domains (flat keys; list-valued choices as JSON strings)."""
    from ray import tune

    def domain(d: Distribution):
        if d.kind is Kind.choice:
            return tune.choice(d.options())
        low, high = d.values
        return {Kind.uniform: tune.uniform, Kind.loguniform: tune.loguniform}[d.kind](low, high) if d.kind is not Kind.int \
            else tune.randint(low, high + 1)  # randint excludes its upper bound; ours is included

    return {d.key: domain(d) for d in space.distributions}


def _searcher(cfg: TuneConfig, study_name: str, study_db: str | None):
    if SearcherKind(cfg.searcher) is SearcherKind.random:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # max_concurrent here: Tune ignores TuneConfig.max_concurrent_trials for a search generator (it only
        # wraps Searchers in a ConcurrencyLimiter): all 8 trials of a benchmark ran at once, waiting on CPUs
        return BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.max_concurrent_trials)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    storage_ = optuna.storages.RDBStorage(f"sqlite:///{study_db}") if study_db else None
    # constant_liar: trials still running count as bad guesses, so concurrent trials spread out
    sampler = optuna.samplers.TPESampler(n_startup_trials=cfg.startup_trials, constant_liar=True, seed=cfg.seed)
    return OptunaSearch(study_name=study_name, storage=storage_, sampler=sampler)


def _scheduler(cfg: TuneConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if SchedulerKind(cfg.scheduler) is SchedulerKind.fifo:
        return FIFOScheduler()
    # time in epochs: a trial restored mid-way reports the epochs it continues from, not 1, 2, ...
    return ASHAScheduler(time_attr="epoch", max_t=cfg.max_epochs, grace_period=cfg.grace_period,
                         reduction_factor=cfg.reduction_factor)


def tune(train_ds: ray.data.Dataset, spec: InputSpec, model: ModelConfig, train: TrainConfig, cfg: TuneConfig, *,
         home: str, name: str, tracking_uri: str, parent_run_id: str, echo: Callable[[str], None] = print) -> TuneResult:
    """Tune ``model``/``train`` over ``cfg.search_space`` on ``train_ds`` (the training split, of which
    ``cfg.validation_fraction`` is held out for the trials' validation).

    ``name`` keys the experiment (``<home>/ray_results/<name>``) and the Optuna study: the same
    name restores an interrupted run. Trials become MLflow runs under ``parent_run_id``.
    """
    from ray import tune as rt

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "Using an existing study ..." on restore
    started = time.perf_counter()
    space = SearchSpace.parse(cfg.search_space, model, train)  # against the configs in force, not the defaults
    train_part, valid_part = holdout(train_ds, cfg.validation_fraction, cfg.seed)
    storage_path = storage.join(home, "ray_results")
    path = storage.join(storage_path, name)
    study_db = storage.join(home, "optuna.db") if "://" not in home else None
    if study_db is None:
        echo(f"[tune] MLSYS_HOME={home} is not a local folder: the Optuna study is kept in memory only")
    trainable = rt.with_resources(
        rt.with_parameters(_trial, train_ds=train_part, valid_ds=valid_part, spec=spec, model=model, train=train,
                           tune_cfg=cfg, storage_path=storage.join(path, "trials")),
        {"CPU": TRIAL_DRIVER_CPUS},
    )
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_STATE_EVERY_S)  # read when the Tuner starts
    # Tune's own tables and notices: our line per trial is the progress output (verbose=0 under the old reporter)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    client = mlflow_store.client(tracking_uri)
    _LIVE[name] = _RunContext(client, client.get_run(parent_run_id).info.experiment_id, parent_run_id, space, cfg, echo)
    resumed = rt.Tuner.can_restore(path)
    if resumed:
        echo(f"[tune] resuming the interrupted tuning run at {path}")
        tuner = rt.Tuner.restore(path, trainable, resume_errored=True, param_space=tune_space(space))
    else:
        echo(f"[tune] {cfg.num_samples} trials of up to {cfg.max_epochs} epochs, {cfg.max_concurrent_trials} at a time "
             f"({SearcherKind(cfg.searcher).value} search, {SchedulerKind(cfg.scheduler).value} scheduler) over "
             + "; ".join(d.describe() for d in space.distributions))
        tuner = rt.Tuner(
            trainable,
            param_space=tune_space(space),
            tune_config=rt.TuneConfig(metric=cfg.reported_metric, mode=cfg.mode, search_alg=_searcher(cfg, name, study_db),
                                      scheduler=_scheduler(cfg), num_samples=cfg.num_samples,
                                      max_concurrent_trials=cfg.max_concurrent_trials),
            run_config=rt.RunConfig(name=name, storage_path=storage_path, verbose=0, callbacks=[_TrialLog(name)],
                                    failure_config=rt.FailureConfig(max_failures=0)),
        )
    try:
        grid = tuner.fit()
    finally:
        log = _LIVE.pop(name)
    return _best(grid, space, cfg, log, resumed, time.perf_counter() - started)


def _best(grid, space: SearchSpace, cfg: TuneConfig, log: "_RunContext", resumed: bool, wall_s: float) -> TuneResult:
    metric, sign = cfg.reported_metric, 1 if cfg.mode == "max" else -1
    best, epochs, stopped, errored = None, 0, 0, 0
    for result in grid:
        history = result.metrics_dataframe
        if result.error is not None or history is None or metric not in history or history.empty:
            errored += result.error is not None
            continue
        epochs += int(history["epoch"].max())
        stopped += int(history["epoch"].max()) < cfg.max_epochs
        row = history.loc[(history[metric] * sign).idxmax()]
        if best is None or sign * row[metric] > sign * best[1][metric]:
            best = (result, row)
    if best is None:
        first = next((r.error for r in grid if r.error is not None), None)
        raise TuningFailedError(len(grid), str(first).strip().splitlines()[-1] if first else "no trial reported a metric",
                                grid.experiment_path)
    result, row = best
    return TuneResult(params=space.decode(result.config), metric=cfg.metric, value=float(row[metric]), epoch=int(row["epoch"]),
                      trial_id=str(row.get("trial_id", result.path.rsplit("/", 1)[-1])),
                      trials=len(grid) - errored, stopped_early=stopped, errored=errored, trial_epochs=epochs,
                      trial_s=sum(log.trial_s.values()), wall_s=wall_s, resumed=resumed)


# -- trial logging: MLflow runs and progress lines, in the process that runs Tune ---------------


@dataclass
class _RunContext:
    client: object
    experiment_id: str
    parent_run_id: str
    space: SearchSpace
    cfg: TuneConfig
    echo: Callable[[str], None]
    runs: dict = dataclasses.field(default_factory=dict)  # trial id -> MLflow run id
    started: dict = dataclasses.field(default_factory=dict)  # trial id -> perf_counter at start
    trial_s: dict = dataclasses.field(default_factory=dict)  # trial id -> wall time (this run's share)
    best: tuple | None = None  # (value, trial id)
    announced: bool = False


# The live context of each running experiment, by name: Tune pickles its callbacks into the
# experiment state and restores them with it, so the callback holds only the name.
_LIVE: dict[str, _RunContext] = {}


class _TrialLog(Callback):
    """One MLflow run per trial under the tune step's run, per-epoch curves, a line per finished trial."""

    def __init__(self, name: str):
        self.name = name

    @property
    def ctx(self) -> _RunContext:
        return _LIVE[self.name]

    def on_step_begin(self, iteration, trials, **info):
        ctx = self.ctx
        if not ctx.announced:
            ctx.announced = True
            done = [t for t in trials if t.status == "TERMINATED"]
            for t in done:  # restored: the best so far includes them
                self._track(ctx, t, (t.last_result or {}).get(ctx.cfg.reported_metric))
            if done:
                ctx.echo(f"[tune] {len(done)} of {ctx.cfg.num_samples} trials had finished; they are kept, not run again")

    def on_trial_start(self, iteration, trials, trial, **info):
        ctx = self.ctx
        run = ctx.client.create_run(ctx.experiment_id, run_name=f"trial-{trial.trial_id}",
                                    tags={Tag.PARENT: ctx.parent_run_id, TRIAL_TAG: trial.trial_id})
        ctx.runs[trial.trial_id] = run.info.run_id
        ctx.started[trial.trial_id] = time.perf_counter()
        for key, value in ctx.space.decode(trial.config).items():
            ctx.client.log_param(run.info.run_id, key, json.dumps(value) if isinstance(value, list) else str(value))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        ctx = self.ctx
        run_id, epoch = ctx.runs.get(trial.trial_id), int(result.get("epoch", 0))
        if run_id is None:
            return
        # valid_*: the trial's held-out part of the training split, not the eval split
        for key in _CURVES:
            if key in result:
                ctx.client.log_metric(run_id, key.replace("eval_", "valid_"), float(result[key]), step=epoch)
        self._track(ctx, trial, result.get(ctx.cfg.reported_metric))

    @staticmethod
    def _track(ctx: _RunContext, trial, value) -> None:
        sign = 1 if ctx.cfg.mode == "max" else -1
        if value is not None and (ctx.best is None or sign * value > sign * ctx.best[0]):
            ctx.best = (float(value), trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trials, trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trials, trial, "FAILED")

    def _finish(self, trials, trial, status: str) -> None:
        ctx = self.ctx
        if trial.trial_id in ctx.started:
            ctx.trial_s[trial.trial_id] = time.perf_counter() - ctx.started.pop(trial.trial_id)
        if trial.trial_id in ctx.runs:
            ctx.client.set_terminated(ctx.runs[trial.trial_id], status=status)
        last = trial.last_result or {}
        epoch, value = int(last.get("epoch", 0)), last.get(ctx.cfg.reported_metric)
        how = ("failed" if status == "FAILED" else
               f"stopped early by ASHA after {epoch}/{ctx.cfg.max_epochs} epochs" if epoch < ctx.cfg.max_epochs else
               f"ran {epoch}/{ctx.cfg.max_epochs} epochs")
        shown = f", valid {ctx.cfg.metric} {value:.4f}" if value is not None else ""
        params = ", ".join(f"{k}={_short(v)}" for k, v in ctx.space.decode(trial.config).items())
        ctx.echo(f"[tune] trial {trial.trial_id} {how}{shown} ({params}, {ctx.trial_s.get(trial.trial_id, 0):.0f}s)")
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + (trial.status not in ("TERMINATED", "ERROR"))
        running = sum(t.status == "RUNNING" for t in trials) - (trial.status == "RUNNING")
        best = f"; best valid {ctx.cfg.metric} {ctx.best[0]:.4f} (trial {ctx.best[1]})" if ctx.best else ""
        ctx.echo(f"[tune] {done}/{ctx.cfg.num_samples} trials done, {max(running, 0)} running{best}")


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, list) else str(value)
