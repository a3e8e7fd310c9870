"""mlsys on a real three-node Ray cluster: a head and two workers started with ``ray start``.

Each node is its own ``ray start --block`` on its own loopback address, with token auth, its own
logical CPUs and a resource naming it (tests/ray_cluster.py); the nodes share ``MLSYS_HOME`` (one
host: one disk, as NFS would give) and an MLflow tracking server. What a platform engineer does:

- ``ray job submit -- mlsys run ...``: Ray Data tasks on every node, two Ray Train workers one per
  worker node (DeepSpeed ZeRO-2 across them), the model registered on the tracking server;
  ``serve deploy`` of a Serve config file: the ranking app's two replicas, one on each worker node.
- A worker node killed (SIGKILL of its raylet and workers) mid-serving under steady load: the
  replica left answers, the failed requests are counted and bounded, and Serve brings the lost
  replica back on the node when it returns.
- A worker node killed mid-training: Ray Train restarts the worker group from the last checkpoint
  on the nodes left, and the run ends with an AUC within noise of the uninterrupted one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, free_port, wait_until
from tests.mlflow_server import MlflowServer
from tests.ray_cluster import LocalCluster
from tests.train_runs import registered_checkpoints

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a cold cluster: every node imports torch and Ray Data afresh
BIN = Path(sys.executable).parent
WORKERS = {"a": 3, "b": 3}  # logical CPUs: both training workers fit on one node when the other is lost
# A small synthetic log in six blocks (Ray Data tasks to spread); three epochs of a few seconds each.
PIPELINE = ["evaluate.blessing.thresholds={auc:0.6}", "data=synthetic", "data.rows=30000", "data.users=300", "data.items=500", "data.blocks=6", "data.executor=ray",
            "train.num_workers=2", "train.placement_strategy=SPREAD", "train.resources_per_worker={worker:1}",
            "train/strategy=deepspeed_zero2", "train.max_epochs=3", "train.batch_size=128", "train.learning_rate=5e-3",
            # The train step's own task (its Ray Train controller lives beside it) stays on the head, which is not lost.
            "pipeline.resources.train={resources:{node_head:1}}"]
# Serve's proxy on the head only: every node here is one host, where proxies on all of them would share one port.
SERVE_REPLICAS = ["serve.ingress.num_replicas=2", "serve.ingress.resources={worker:60}"]  # 60 of a node's 100: one per node


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster.start(workers=WORKERS, head_cpus=1) as c:
        yield c


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    with MlflowServer.start(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("shared-home")


def _runtime_env(home: Path, tracking: MlflowServer) -> str:
    return json.dumps({"env_vars": {"MLSYS_HOME": str(home), "MLFLOW_TRACKING_URI": tracking.uri}})


def _submit(cluster: LocalCluster, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``ray job submit`` (the head answers before its job agent registers: Ray says "try again later")."""
    deadline = time.monotonic() + 180
    while True:
        proc = subprocess.run([str(BIN / "ray"), "job", "submit", f"--address={cluster.dashboard}", *args],
                              env=cluster.env, capture_output=True, text=True, timeout=timeout)
        if "No available agent to submit job" not in proc.stderr or time.monotonic() > deadline:
            return proc
        time.sleep(3)


def _workers(log: str) -> list[list[str]]:
    """Per attempt of the worker group, the node address of each rank (the `[train] workers:` lines;
    Ray's log deduplication may show a line again, with "[repeated Nx across cluster]")."""
    lines = dict.fromkeys(line[line.index("[train] workers:"):].split("\x1b")[0].strip()
                          for line in log.splitlines() if "[train] workers:" in line)
    return [re.findall(r"rank \d+ on ([\d.]+)", line) for line in lines]


def _final_auc(log: str) -> float:
    return float(re.findall(r"\[train\] epoch 3/3 .*?eval AUC ([\d.]+)", log)[-1])


def _replicas(cluster: LocalCluster, app: str = "ranking", deployment: str = "Ingress") -> list[dict]:
    r = requests.get(f"{cluster.dashboard}/api/serve/applications/", headers=cluster.headers, timeout=10)
    r.raise_for_status()
    deployments = r.json()["applications"].get(app, {}).get("deployments", {})  # none yet while it deploys
    return deployments.get(deployment, {}).get("replicas", [])


def _running_replica_nodes(cluster: LocalCluster) -> list[str]:
    nodes = {n["node_id"]: n["node_ip"] for n in cluster.alive_nodes()}
    return sorted(nodes.get(r["node_id"], "?") for r in _replicas(cluster) if r["state"] == "RUNNING")


@pytest.fixture(scope="module")
def pipeline_run(cluster, tracking, home):
    """The pipeline submitted as a Ray job; its ``ray job submit`` output and Ray job id."""
    proc = _submit(cluster, "--working-dir", str(REPO), "--runtime-env-json", _runtime_env(home, tracking),
                   "--", "mlsys", "run", *PIPELINE)
    out = proc.stdout + proc.stderr
    (home / "pipeline-job.log").write_text(out)  # for a failing test's reader
    assert proc.returncode == 0, out[-6000:]
    return out


def test_a_submitted_pipeline_runs_across_the_nodes(cluster, tracking, pipeline_run):
    out = pipeline_run
    assert "registered model ctr version 1" in out and "succeeded" in out
    # Two Ray Train workers, one on each worker node, sharing a ZeRO-2 run.
    assert [sorted(ips) for ips in _workers(out)] == [["127.0.0.2", "127.0.0.3"]], out[-4000:]
    assert re.search(r"\[train\] epoch 3/3 \(zero2, 2 workers on cpu\)", out), out[-4000:]

    # Ray Data's tasks of this job ran on every node.
    submission = re.search(r"(raysubmit_\w+)", out).group(1)
    job = requests.get(f"{cluster.dashboard}/api/jobs/{submission}", headers=cluster.headers, timeout=10).json()
    tasks = requests.get(f"{cluster.dashboard}/api/v0/tasks", headers=cluster.headers, timeout=30, params={
        "filter_keys": "job_id", "filter_predicates": "=", "filter_values": job["driver_info"]["id"], "limit": 10000}).json()
    data_tasks = [t for t in tasks["data"]["result"]["result"] if t["type"] == "NORMAL_TASK" and t["name"] != "_execute"]
    assert {cluster.node_of(t["node_id"]) for t in data_tasks} == {"head", "a", "b"}, sorted({t["name"] for t in data_tasks})

    # The registry and the step records are on the tracking server; the train step's record says where it ran.
    import mlflow

    client = mlflow.MlflowClient(tracking.uri)
    assert client.get_model_version_by_alias("ctr", "champion").version == "1"
    train_run = client.search_runs([client.get_experiment_by_name("ctr").experiment_id], "tags.`mlsys.step` = 'train'")[0]
    assert cluster.node_of(train_run.data.tags["mlsys.node_id"]) == "head"
    assert json.loads(train_run.data.tags["mlsys.resources"])["resources"] == {"node_head": 1}
    assert sorted(w["node_ip"] for w in json.loads(train_run.data.tags["mlsys.train_workers"])) == ["127.0.0.2", "127.0.0.3"]


@pytest.fixture(scope="module")
def served(cluster, tracking, home, pipeline_run, tmp_path_factory):
    """``serve deploy`` of a Serve config file for the registered model: two replicas, one per worker node."""
    port = free_port()
    config = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{
            "name": "ranking", "route_prefix": "/", "import_path": "mlsys.api.serving:app_builder",
            "args": {"overrides": ["serve.model=ctr@champion", f"home.root={home}", f"home.tracking_uri={tracking.uri}",
                                   f"serve.port={port}", *SERVE_REPLICAS]},
        }],
    }
    path = tmp_path_factory.mktemp("serve") / "ranking.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    proc = subprocess.run([str(BIN / "serve"), "deploy", str(path), f"--address={cluster.dashboard}"],
                          env=cluster.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cluster.wait_for(lambda: _running_replica_nodes(cluster) == ["127.0.0.2", "127.0.0.3"], "a replica on each worker node", 300)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.post(f"{url}/v1/rank", json=_BODY, timeout=10).ok, "the ranking app to answer", 120)
    return url


_BODY = {"user_id": 1, "candidates": list(range(1, 21))}


def test_a_lost_node_mid_serving_is_survived_and_its_replica_comes_back(cluster, served):
    assert _running_replica_nodes(cluster) == ["127.0.0.2", "127.0.0.3"]
    outcomes: list[tuple[float, bool]] = []  # (time, answered)
    stop = threading.Event()

    def steady_load():
        session = requests.Session()
        while not stop.is_set():
            t = time.monotonic()
            try:
                ok = session.post(f"{served}/v1/rank", json=_BODY, timeout=10).status_code == 200
            except requests.RequestException:
                ok = False
            outcomes.append((t, ok))
            time.sleep(0.02)

    load = threading.Thread(target=steady_load, daemon=True)
    load.start()
    try:
        wait_until(lambda: sum(ok for _, ok in outcomes) >= 50, "50 answers before the loss", 120)
        killed_at = time.monotonic()
        cluster.kill("b")
        # The replica left keeps answering while the head notices the loss.
        wait_until(lambda: sum(ok for t, ok in outcomes if t > killed_at + 5) >= 50, "50 answers after the loss", 180)
        cluster.wait_for(lambda: _running_replica_nodes(cluster) == ["127.0.0.2"], "Serve to see one replica left", 120)
        cluster.add_worker("b", WORKERS["b"])
        cluster.wait_for(lambda: _running_replica_nodes(cluster) == ["127.0.0.2", "127.0.0.3"], "the replica back on node b", 300)
        back_at = time.monotonic()
        wait_until(lambda: sum(ok for t, ok in outcomes if t > back_at) >= 20, "answers with both replicas again", 60)
    finally:
        stop.set()
        load.join(timeout=15)
    after = [ok for t, ok in outcomes if t >= killed_at]
    failed = after.count(False)
    print(f"\nnode b lost mid-serving: {len(outcomes)} requests, {failed} failed after the loss "
          f"({len(after)} sent from the kill until the replica was back)")
    assert all(ok for t, ok in outcomes if t < killed_at), "no failure before the loss"
    assert failed <= 20, f"{failed} of {len(after)} requests failed after the node was lost"


def test_a_lost_node_mid_training_resumes_on_the_nodes_left(cluster, tracking, home, pipeline_run):
    # The same training with a restart budget of 2 (only train reruns), and node b killed once its worker is past the first checkpoint.
    submission = f"lost-node-{int(time.time())}"
    proc = _submit(cluster, "--no-wait", f"--submission-id={submission}", "--runtime-env-json", _runtime_env(home, tracking),
                   "--", "mlsys", "run", *PIPELINE, "pipeline.until=train", "train.max_failures=2")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    def job():
        return requests.get(f"{cluster.dashboard}/api/jobs/{submission}", headers=cluster.headers, timeout=10).json()

    def logs() -> str:
        return requests.get(f"{cluster.dashboard}/api/jobs/{submission}/logs", headers=cluster.headers, timeout=10).json()["logs"]

    def run_dir():
        if "[train] workers:" not in logs():  # this run's worker group is up; older runs' folders are in the same place
            return None
        return max((home / "ray_results").glob("train-*"), key=lambda p: p.stat().st_mtime, default=None)

    folder = wait_until(run_dir, "the training workers", 600, interval=0.5)
    wait_until(lambda: registered_checkpoints(folder), "the epoch-1 checkpoint", 300, interval=0.1)
    cluster.kill("b")
    wait_until(lambda: job()["status"] in ("SUCCEEDED", "FAILED", "STOPPED"), "the job to end", 900, interval=2)
    out = logs()
    assert job()["status"] == "SUCCEEDED", out[-6000:]
    attempts = _workers(out)
    assert sorted(attempts[0]) == ["127.0.0.2", "127.0.0.3"] and attempts[-1] == ["127.0.0.2", "127.0.0.2"], attempts
    assert "[train] resuming after epoch 1" in out, out[-4000:]
    assert _final_auc(out) == pytest.approx(_final_auc(pipeline_run), abs=0.02)
    cluster.add_worker("b", WORKERS["b"])  # as the next test would expect it
