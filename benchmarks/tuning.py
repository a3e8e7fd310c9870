"""Tuning (``tune=optuna_asha``): what the search costs and what early stopping and TPE buy.

Three comparisons, all in one run on the same data (the training split of a pipeline run up to
``transform``; MovieLens-100K by default), the same search space (``configs/tune/search_space/ctr.yaml``)
and the same trial budget:

1. Scheduling overhead: a tuning run's wall time against the sum of its trials' wall times divided
   by the concurrency (what perfect packing would take). Median over every run below. Target <= 1.2x.
2. ASHA against no early stopping (FIFO), both with random search of the same seed, so both try
   the same configurations: trial-epochs spent (target <= 0.5x) at an equal best AUC (within 0.002).
3. TPE (Optuna) against random search, both under ASHA: the best validation AUC after N trials,
   median over the seeds.

    python benchmarks/tuning.py [--trials 8] [--epochs 6] [--reduction-factor 3] [--concurrency 2] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Row, record  # noqa: E402


def training_split(home: str, overrides: list[str]):
    """(the training split as model inputs, the input spec, model and train configs, tracking URI)."""
    import mlsys
    from mlsys.api.config import compose_config
    from mlsys.cluster import connect
    from mlsys.data.datasets import read_parquet
    from mlsys.data.preprocessor import CtrPreprocessor
    from mlsys.registry import mlflow_store

    result = mlsys.run_pipeline([f"home.root={home}", "pipeline.until=transform", *overrides], echo=lambda _: None)
    cfg = compose_config([f"home.root={home}", "tune=optuna_asha", *overrides])
    connect(cfg.cluster)  # a cached pipeline starts no Ray
    import logging

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # as the pipeline's steps run (trials inherit it)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    data = result.output("transform")
    preprocessor = CtrPreprocessor.load(data.preprocessor)
    return (preprocessor.transform(read_parquet(data.train)), preprocessor.input_spec(), cfg,
            mlflow_store.tracking_uri(cfg.home))


def run_tuning(ds, spec, cfg, tracking_uri: str, home: str, label: str, **tune_fields):
    """One tuning run of ``cfg.tune`` with ``tune_fields`` replaced, in a fresh experiment."""
    import dataclasses

    from mlsys.registry import mlflow_store
    from mlsys.tune import tuner

    tune_cfg = dataclasses.replace(cfg.tune, **tune_fields)
    client = mlflow_store.client(tracking_uri)
    exp = mlflow_store.ensure_experiment(tracking_uri, "tuning-benchmark", f"{home}/mlartifacts")
    parent = client.create_run(exp, run_name=label).info.run_id
    result = tuner.tune(ds, spec, cfg.model, cfg.train, tune_cfg, home=home, name=f"bench-{label}-{time.time_ns()}",
                        tracking_uri=tracking_uri, parent_run_id=parent, echo=lambda line: None)
    client.set_terminated(parent)
    packing = result.wall_s / (result.trial_s / tune_cfg.max_concurrent_trials)
    overlap = _most_at_once(client, exp, parent)
    print(f"  {label}: best AUC {result.value:.4f}, {result.trial_epochs} trial-epochs, {result.stopped_early} stopped early, "
          f"wall {result.wall_s:.0f}s, trials {result.trial_s:.0f}s summed ({packing:.2f}x of perfect packing), "
          f"at most {overlap} trials at once (their MLflow runs' start and end)", flush=True)
    return result


def _most_at_once(client, experiment_id: str, parent: str) -> int:
    """The most trials whose MLflow runs (created at a trial's start, ended at its end) overlapped."""
    from mlsys.registry.mlflow_store import Tag

    runs = client.search_runs([experiment_id], f"tags.`{Tag.PARENT}` = '{parent}'", max_results=1000)
    edges = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time or r.info.start_time, -1) for r in runs],
                   key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6, help="a trial's most epochs (ASHA's max_t)")
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--home", default=None, help="where the data and runs go (default: a temporary folder)")
    parser.add_argument("--no-record", action="store_true", help="print, do not append to docs/benchmarks.md")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the data, e.g. data=synthetic")
    args = parser.parse_args()

    home = args.home or tempfile.mkdtemp(prefix="mlsys-bench-tuning-")
    ds, spec, cfg, tracking_uri = training_split(home, args.overrides)
    budget = dict(num_samples=args.trials, max_epochs=args.epochs, grace_period=1, reduction_factor=args.reduction_factor,
                  max_concurrent_trials=args.concurrency)
    print(f"{args.trials} trials of up to {args.epochs} epochs, {args.concurrency} at a time, over "
          f"{cfg.tune.search_space}; home {home}", flush=True)

    runs = {}
    for seed in range(args.seeds):
        runs["random", "asha", seed] = run_tuning(ds, spec, cfg, tracking_uri, home, f"random-asha-{seed}", searcher="random",
                                                  scheduler="asha", seed=seed, **budget)
        runs["optuna", "asha", seed] = run_tuning(ds, spec, cfg, tracking_uri, home, f"tpe-asha-{seed}", searcher="optuna",
                                                  scheduler="asha", seed=seed, **budget)
        if seed == 0:  # the same configurations as random-asha-0, every trial to the end
            runs["random", "fifo", 0] = run_tuning(ds, spec, cfg, tracking_uri, home, "random-fifo-0", searcher="random",
                                                   scheduler="fifo", seed=0, **budget)

    med = statistics.median
    walls = [r.wall_s for r in runs.values()]
    packed = [r.trial_s / args.concurrency for r in runs.values()]
    asha, fifo = runs["random", "asha", 0], runs["random", "fifo", 0]
    tpe = [runs["optuna", "asha", s].value for s in range(args.seeds)]
    rnd = [runs["random", "asha", s].value for s in range(args.seeds)]
    ratios = [w / p for w, p in zip(walls, packed)]
    rows = [
        Row("tuning wall time", "wall time of a run", "trials' times summed / concurrency", med(walls), med(packed), "s", len(runs)),
        Row("trial-epochs, same configurations", "ASHA", "no early stopping (FIFO)", asha.trial_epochs, fifo.trial_epochs, "epochs", 1),
        Row("best validation AUC, same configurations", "ASHA", "no early stopping (FIFO)", 100 * asha.value, 100 * fifo.value,
            "AUC x100", 1),
        Row(f"best validation AUC after {args.trials} trials", "TPE (Optuna)", "random search", 100 * med(tpe), 100 * med(rnd),
            "AUC x100", args.seeds),
    ]
    notes = (
        f"{args.trials} trials of up to {args.epochs} epochs ({args.concurrency} at a time, 1 Ray Train worker of 1 CPU each), "
        f"ASHA grace period 1, reduction factor {args.reduction_factor}; search space {cfg.tune.search_space}; data overrides "
        f"{args.overrides or ['data=movielens (default)']}; AUC on the trials' validation part (20% of the training split). "
        f"Wall over perfect packing per run (median {med(ratios):.2f}x; target <= 1.2x): "
        + ", ".join(f"{'-'.join(map(str, k))} {w / p:.2f}x" for k, w, p in zip(runs, walls, packed))
        + f". ASHA vs FIFO: {asha.trial_epochs / fifo.trial_epochs:.2f}x the trial-epochs (target <= 0.5x), best AUC "
        f"{asha.value - fifo.value:+.4f} (target within 0.002). TPE - random per seed: "
        + ", ".join(f"{t - r:+.4f}" for t, r in zip(tpe, rnd)) + "."
    )
    if args.no_record:
        for row in rows:
            print(row.line())
        print(notes)
    else:
        record("Tuning: packing, ASHA against FIFO, TPE against random", rows, notes)


if __name__ == "__main__":
    main()
