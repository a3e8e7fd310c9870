"""Fault tolerance with real process kills.

- A training worker killed (SIGKILL of its PID, found through Ray's State API) mid-epoch:
  Ray Train restarts the worker group from the last checkpoint and the run finishes with
  an AUC within noise of an uninterrupted run.
- The driver (`mlsys run`) killed mid-training: the same command run again resumes the
  Ray Train run (same name and storage path) from its last checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mlsys.models import ModelConfig
from tests.conftest import wait_until
from mlsys.train.config import TrainConfig

MLSYS = str(Path(sys.executable).parent / "mlsys")
MODEL = ModelConfig(embed_dim=8, mlp_dims=[32])


def _checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints Ray Train has registered (listed in its run snapshot), oldest first.

    A folder on storage is not enough: a worker killed after uploading but before the
    controller took its report leaves a folder that the restarted group never sees.
    """
    import json

    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, ValueError):  # not written yet, or caught mid-write
        return []
    return [run_dir / r["checkpoint_dir_name"] for r in snapshot["checkpoint_results"]]


def _train_worker_pids() -> list[int]:
    import ray
    from ray.util.state import list_actors

    filters = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
    return sorted(a.pid for a in list_actors(address=ray.get_runtime_context().gcs_address, filters=filters))


@pytest.fixture(scope="module")
def data(ray_local):
    from mlsys.train.synthetic import synthetic_dataset, synthetic_spec

    spec = synthetic_spec(users=300, items=500)
    train = synthetic_dataset(spec, rows=40_000, seed=0).materialize()
    evaluation = synthetic_dataset(spec, rows=4_000, seed=0, start=40_000).materialize()
    return spec, train, evaluation


def _fit(data, storage: Path, name: str):
    from mlsys.train import trainer

    spec, train, evaluation = data
    cfg = TrainConfig(num_workers=2, cpus_per_worker=0.5, max_epochs=3, batch_size=128, learning_rate=5e-3, max_failures=1)
    return trainer.fit(train, evaluation, spec, MODEL, cfg, str(storage), name)


def test_a_killed_worker_resumes_from_the_last_checkpoint(data, tmp_path):
    killed: list[int] = []

    def kill_one_worker_in_epoch_two():
        pids = wait_until(lambda: p if len(p := _train_worker_pids()) == 2 else None, "the training workers", 300, interval=0.05)
        wait_until(lambda: _checkpoints(tmp_path / "killed"), "the epoch-1 checkpoint", 300, interval=0.05)
        time.sleep(1.0)  # into epoch 2 (about 4 s here)
        os.kill(pids[-1], signal.SIGKILL)  # a real worker process
        killed.append(pids[-1])

    killer = threading.Thread(target=kill_one_worker_in_epoch_two, daemon=True)
    killer.start()
    interrupted = _fit(data, tmp_path, "killed")
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    state = interrupted.checkpoint_dir / "state.json"
    import json

    assert json.loads(state.read_text())["resumed_after"] == [1], "the group restarted from the epoch-1 checkpoint"
    assert [h["epoch"] for h in interrupted.history] == [1, 2, 3]

    uninterrupted = _fit(data, tmp_path, "uninterrupted")
    assert interrupted.history[-1]["eval_auc"] == pytest.approx(uninterrupted.history[-1]["eval_auc"], abs=0.01)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two pipeline runs up to training, on 2 CPUs
def test_a_killed_driver_resumes_when_the_command_runs_again(tmp_path):
    home = tmp_path / "home"
    # A small synthetic set: the point is the kill and the resume, not MovieLens (whose epochs took ~25 s each here).
    cmd = [MLSYS, "run", f"home.root={home}", "data=synthetic", "data.rows=30000", "data.users=300", "data.items=500",
           "data.blocks=1", "train.batch_size=256", "train.max_epochs=3", "pipeline.until=train"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # the embedded local Ray
    log = (tmp_path / "first.log").open("w")
    driver = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        run_dir = wait_until(lambda: next(iter((home / "ray_results").glob("train-*")), None), "the Ray Train run folder", 1200, interval=0.05)
        wait_until(lambda: _checkpoints(run_dir), "the epoch-1 checkpoint", 600, interval=0.05)
        os.kill(driver.pid, signal.SIGKILL)  # the driver only; its embedded Ray shares its fate
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
        _reap_session(driver.pid)
    assert driver.returncode == -signal.SIGKILL

    with (tmp_path / "again.log").open("w") as log:
        again = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=1200)
    out = (tmp_path / "again.log").read_text()
    assert again.returncode == 0, out[-3000:]
    assert "[transform] cached" in out and "[train] resuming after epoch" in out
    import json

    state = json.loads((_checkpoints(run_dir)[-1] / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3] and state["resumed_after"]


def _reap_session(sid: int) -> None:
    """Ray processes of the killed driver that outlive it (fate sharing is best effort)."""
    try:
        os.killpg(sid, signal.SIGKILL)
    except ProcessLookupError:
        pass
