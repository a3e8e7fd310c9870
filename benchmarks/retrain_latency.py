"""Continuous training's latency (issue 15): from a firing alert to the new version serving.

One trained home (MovieLens-100K, DeepFM, 1 epoch); a serving app that follows ``ctr@champion``.
Candidate: the monitor's loop (an alert named in ``monitor.retrain.on_alerts`` fires; the Retrainer
submits ``mlsys run`` with a warm start through the Ray Jobs API; the job's gate and push move the
alias; the app hot-reloads), timed from the alert to ``/healthz`` naming the new version. Baseline:
the same retraining run started by hand in this process (``mlsys.run_pipeline``, the same
overrides), timed from its start to ``/healthz`` naming its version. The ratio is what the loop
adds: the job's own process and Ray connection, the monitor's poll, the app's registry poll.
Each repeat trains one more epoch from the champion (warm start), so every run is a new version.

    python benchmarks/retrain_latency.py [--home /tmp/bench-retrain] [--repeats 3] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Row, median, record  # noqa: E402


def _version(url: str) -> str:
    with urllib.request.urlopen(f"{url}/healthz", timeout=10) as r:
        return json.loads(r.read())["version"]


def _wait_serving(url: str, not_version: str, timeout_s: float = 1200) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        version = _version(url)
        if version != not_version:
            return version
        time.sleep(0.5)
    raise RuntimeError(f"the app still serves version {not_version} after {timeout_s:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default="/tmp/bench-retrain")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    import dataclasses

    import mlsys
    from mlsys.api import monitor as api_monitor
    from mlsys.api.config import compose_config
    from mlsys.api.serving import start_server
    from mlsys.monitor.config import RetrainConfig

    base = [f"home.root={args.home}", "train.max_epochs=1"]
    mlsys.run_pipeline(base)  # the champion (cached after the first time)
    # looser gate: each retrain must be pushed for the clock to stop (a refused one would never serve)
    retrain = [*base[1:], "train.warm_start=models:/ctr@champion", "evaluate.blessing.max_regression.auc=1",
               "evaluate.blessing.max_regression.logloss=1", "evaluate.blessing.max_slice_regression.auc=1", "serve.release.poll_s=1"]
    cfg = compose_config([*base, "serve.model=ctr@champion", "serve.release.poll_s=1", "cluster.num_cpus=4"])
    url = start_server(cfg)
    loop, direct = [], []
    for repeat in range(args.repeats):
        for side in (("loop", "direct") if repeat % 2 == 0 else ("direct", "loop")):
            before = _version(url)
            started = time.perf_counter()
            if side == "direct":
                mlsys.run_pipeline([*base, *retrain[1:], f"train.seed={repeat + 100}"], echo=lambda _: None)
            else:
                rc = RetrainConfig(on_alerts=["feature_drift"], cooldown_s=0, overrides=[*retrain[1:], f"train.seed={repeat}"])
                run_cfg = dataclasses.replace(cfg, monitor=dataclasses.replace(cfg.monitor, retrain=rc))
                controller = api_monitor.Controller(run_cfg)
                controller.step(signals={"drift.linf.gender": 0.0})
                started = time.perf_counter()
                controller.step(signals={"drift.linf.gender": 0.5})  # fires: submits the job
            version = _wait_serving(url, before)
            (loop if side == "loop" else direct).append(time.perf_counter() - started)
            print(f"  repeat {repeat + 1} {side}: version {version} serving after {(loop if side == 'loop' else direct)[-1]:.1f}s", flush=True)
    rows = [Row("retrain latency: alert to the new version serving", "monitor -> Ray job -> gate -> push -> hot reload",
                "the same run started by hand -> hot reload", median(loop), median(direct), "s", args.repeats)]
    notes = ("MovieLens-100K, DeepFM, one epoch warm-started from the champion per run (train.seed differs), the gate's "
             "regression limits opened so every run is pushed; serve.release.poll_s=1. Loop per repeat: "
             + ", ".join(f"{t:.1f}s" for t in loop) + "; by hand: " + ", ".join(f"{t:.1f}s" for t in direct) + ".")
    for row in rows:
        print(row.line())
    print(notes)
    if not args.no_record:
        record("Continuous training: alert to serving", rows, notes)


if __name__ == "__main__":
    main()
