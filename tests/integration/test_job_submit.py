"""`ray job submit -- mlsys run` against a real `ray start --head` with token auth."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture
def head_node():
    gcs, dashboard, agent = free_port(), free_port(), free_port()
    # Short: Ray's Unix sockets live under it and paths are capped at 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
         # Not the agent's default port 52365: the suite's own local Ray (ray_local) may hold it, and
         # a head whose agent cannot bind answers every submission "No available agent".
         f"--dashboard-agent-listen-port={agent}", "--dashboard-host=127.0.0.1", "--num-cpus=4", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"{address}/api/version", timeout=2).status_code in (200, 401):
                break
        except requests.ConnectionError:
            time.sleep(1)
    else:
        raise RuntimeError("ray start --head did not come up in 120 s")
    yield address, env
    os.killpg(proc.pid, signal.SIGTERM)  # --block stops what it started; never `ray stop` (kills every Ray on the host)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # its graceful stop took ~35 s here: the head is thrown away anyway
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_runs_the_pipeline(head_node, tmp_path):
    address, env = head_node
    home = tmp_path / "home"
    deadline = time.time() + 180
    while True:  # the head answers before its job agent registers: Ray says "try again later"
        proc = subprocess.run(
            [str(BIN / "ray"), "job", "submit", f"--address={address}", "--working-dir", str(REPO),
             "--runtime-env-json", f'{{"env_vars": {{"MLSYS_HOME": "{home}"}}}}',
             # a small synthetic log: the submission, the job's driver and the pipeline on that cluster are the point
             "--", "mlsys", "run", "data=synthetic", "data.rows=4000", "data.users=60", "data.items=300", "data.blocks=2",
             "train.max_epochs=1"],
            env=env, capture_output=True, text=True, timeout=900,
        )
        if "No available agent to submit job" not in proc.stderr or time.time() > deadline:
            break
        time.sleep(3)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "registered model ctr version 1" in proc.stdout
    assert "succeeded" in proc.stdout
    assert (home / "mlflow.db").exists()
