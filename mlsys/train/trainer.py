"""Ray Train edge: a Train V2 trainer (``TorchTrainer``; for one DDP worker, ``DataParallelTrainer``, see
:func:`_trainer_class`) running the CTR training loop (:mod:`mlsys.train.loop`).

Each worker reads its shard of the preprocessed Ray Datasets (a small dataset is
executed once, before the worker group starts, and held in the object store; a large
one streams through Ray Train's split, executed again every epoch), trains under the
strategy ``train.strategy`` names (DDP, or DeepSpeed ZeRO 1/2/3 with optional
offload; see :mod:`mlsys.train.strategies`), evaluates on its eval shard, and
checkpoints every ``train.checkpoint_every`` epochs: rank 0 writes the full
weights and run state, every rank its part of the optimizer state, and Ray Train
merges the ranks' folders into one checkpoint. A worker that dies restarts the
group from the last checkpoint (``train.max_failures``); a run started again
under the same name and storage path (a killed driver, run again) resumes from it.

Where a run's time went is in its per-epoch metrics (``train_compute_s``,
``train_data_s``, ``eval_compute_s``, ``eval_data_s``) and in ``TrainResult.timeline``;
where its workers ran, per attempt (the first and every restart), in ``TrainResult.workers``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import ray

from mlsys import storage
from mlsys.models import InputSpec, ModelConfig
from mlsys.train import checkpoint
from mlsys.train.config import StrategyKind, TrainConfig

if TYPE_CHECKING:
    from mlsys.train import warm_start

# A dataset of at most this many rows is executed once and held in the object store: streamed,
# Ray Data executed the whole read + transform again for every epoch of every split (at
# MovieLens-100K, 80k rows of ~270 bytes encoded, that took longer than the training). Larger
# datasets stream; finding out costs executing up to this many rows first, then thrown away.
# It runs before the worker group starts: run beside it (a task started before the trainer),
# Ray Train's own start took 24-70 s instead of 10-19 s on 2 shared cores (docs/benchmarks.md).
SMALL_ROWS = 1_000_000
# How often Ray Train's controller polls its workers (Ray's default: 2 s); a finished run waits
# for the next poll: fit returned 2.9-4.8 s after the last epoch with 2 s, 0.7-2.0 s with 0.5 s.
HEALTH_CHECK_INTERVAL_S = "0.5"


def split_bounds(rows: int, world: int, equal: bool) -> list[int]:
    """Row indices that cut ``rows`` into ``world`` contiguous parts, as ``streaming_split`` parts a
    dataset: ``equal`` parts drop the remainder, so every rank steps as often (DDP's all-reduce
    needs that); else the parts differ by at most a row and keep them all.

    >>> split_bounds(10, 3, equal=True), split_bounds(10, 3, equal=False)
    ([3, 6, 9], [3, 6])
    """
    if equal:
        return [rows // world * (r + 1) for r in range(world)]
    return [rows * (r + 1) // world for r in range(world - 1)]


def _small_parts(ds: ray.data.Dataset, max_rows: int, world: int, equal: bool) -> list | None:
    """``ds`` executed and cut into one materialized part per rank when it has at most ``max_rows``
    rows, else ``None``.

    Ray Data knows no row count before executing a transform, so this executes at most
    ``max_rows + 1`` rows (the limit stops the read). Executed here, the blocks are owned by
    this process (the driver): they outlive a failed worker group.
    """
    from ray.data.dataset import MaterializedDataset

    head = ds if isinstance(ds, MaterializedDataset) else ds.limit(max_rows + 1).materialize()
    rows = head.count()  # a materialized dataset knows its count
    if rows > max_rows:
        return None
    return [head] if world == 1 else head.split_at_indices(split_bounds(rows, world, equal))[:world]


def _train_loop(config: dict) -> None:
    """What Ray Train runs in each worker: :func:`mlsys.train.loop.train_loop`, imported there, so that
    this module (the driver's side, and a tuning trial's) imports no torch."""
    from mlsys.train.loop import train_loop

    train_loop(config)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    checkpoint_dir: Path
    history: list[dict]
    # Wall-clock times (time.time) of this call (fit, small_executed, trainer_returned, done) and of rank 0's loop:
    # worker_started, ready (model built, checkpoint restored), data_ready, per epoch first_batch,
    # evaluated and reported (checkpoint written), finished. Empty if rank 0's record is missing.
    timeline: dict = dataclasses.field(default_factory=dict)
    # Where the workers ran: one list per attempt (the first run, then each restart from a checkpoint),
    # each ``[{"rank", "node_ip", "node_id", "hostname", "pid"}, ...]`` by rank.
    workers: list[list[dict]] = dataclasses.field(default_factory=list)


def _trainer_class(cfg: TrainConfig) -> type:
    """``TorchTrainer``, whose backend starts torch's process group on the workers; for one DDP worker,
    which needs none (the loop's collectives are skipped at world size 1), the same Train V2 trainer
    without that backend. Then neither this process nor Ray Train's controller imports torch (~1.3 s
    each at every tuning trial's start; ``ray.train.torch`` imports it at its top)."""
    if cfg.num_workers == 1 and StrategyKind(cfg.strategy.kind) is StrategyKind.ddp:
        from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

        return DataParallelTrainer
    from ray.train.torch import TorchTrainer

    return TorchTrainer


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
    small_rows: int = SMALL_ROWS,
    callbacks: list | None = None,
) -> TrainResult:
    """Train with Ray Train; returns the last checkpoint (a local folder) and per-epoch metrics.

    A run of the same ``run_name`` under the same ``storage_path`` that was interrupted
    (driver killed, cluster lost) resumes from its last checkpoint. A dataset of at most
    ``small_rows`` rows is executed once, before the worker group starts (0: always stream).
    ``callbacks``: Ray Train ``UserCallback``s (a tuning trial passes Tune's ``TuneReportCallback``,
    which hands every epoch's metrics to Ray Tune).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    fit_started = time.time()
    datasets = {"train": train_ds, "eval": eval_ds}
    small = {} if small_rows <= 0 else {name: parts for name, ds in datasets.items()
                                        if (parts := _small_parts(ds, small_rows, cfg.num_workers, equal=name == "train")) is not None}
    executed = time.time()

    resources = cfg.worker_resources()  # CPU, GPU and train.resources_per_worker (custom, memory)
    # Train V2 tees a worker's print into its logger too, so each epoch line showed twice; our
    # lines are plain prints (propagated to the controller and workers by Ray Train).
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", HEALTH_CHECK_INTERVAL_S)  # propagated to the controller
    timeline_uri = storage.join(storage_path, run_name, "timeline.json")
    trainer = _trainer_class(cfg)(
        _train_loop,
        train_loop_config={**train_loop_config(spec, model_cfg, cfg, warm), "small": small, "timeline": timeline_uri},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources,
                                     placement_strategy=cfg.placement_strategy),
        datasets={n: ds for n, ds in datasets.items() if n not in small} or None,  # the ones that stream
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            callbacks=callbacks,
        ),
    )
    result = trainer.fit()
    returned = time.time()
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint (see {storage_path}/{run_name})")
    local = Path(result.checkpoint.path)
    if not local.is_dir():  # remote storage (s3://, gs://): fetch the last checkpoint
        local = Path(result.checkpoint.to_directory())
    state = checkpoint.load_state(local)
    timeline = storage.read_json(timeline_uri) if storage.exists(timeline_uri) else {}
    timeline.update(fit=fit_started, small_executed=executed, trainer_returned=returned, done=time.time())
    return TrainResult(checkpoint_dir=local, history=state["history"], timeline=timeline, workers=state.get("workers", []))
