"""Fault tolerance with real process kills: the driver (`mlsys run`) killed mid-training, and
the same command run again resumes the Ray Train run (same name and storage path) from its
last checkpoint.

Workers lost mid-training (a whole node: its raylet and workers, SIGKILLed) are survived by
Ray Train restarting the worker group from the last checkpoint: test_multinode.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.train_runs import registered_checkpoints

MLSYS = str(Path(sys.executable).parent / "mlsys")


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
        wait_until(lambda: registered_checkpoints(run_dir), "the epoch-1 checkpoint", 600, interval=0.05)
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

    state = json.loads((registered_checkpoints(run_dir)[-1] / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3] and state["resumed_after"]


def _reap_session(sid: int) -> None:
    """Ray processes of the killed driver that outlive it (fate sharing is best effort)."""
    try:
        os.killpg(sid, signal.SIGKILL)
    except ProcessLookupError:
        pass
