"""The evaluation gate and the push on real Ray, MLflow and Serve (docs/release.md): the first model
of a registry is blessed by the value thresholds, infra-validated in a sandbox Serve app and pushed;
a worse candidate is refused with a one-line reason and never serves; a blessed one is pushed and
the running app (following the alias) serves it without a restart, over HTTP; ``mlsys model
rollback`` brings the previous version back in the running app; a package that cannot load is
refused by infra validation; ``mlsys model history`` shows all of it.

The registered model is ``gated`` (its own name: the session's ``ctr`` is left alone); its
pipelines reuse the session's trained home, so only the steps after ``evaluate`` run for version 1.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import requests

import mlsys
from mlsys.api import serving
from mlsys.api.config import compose_config
from mlsys.registry import pushes
from mlsys.registry.mlflow_store import client, resolve
from mlsys.storage import read_json
from tests.conftest import MLSYS, REPO, free_port, wait_until
from tests.packages import variant

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")

NAME = "gated"


def _run(trained, *more, capsys=None):
    home, overrides, _ = trained
    return mlsys.run_pipeline([*overrides, f"registry.model_name={NAME}", *more])


def _champion(uri: str) -> str:
    return str(client(uri).get_model_version_by_alias(NAME, "champion").version)


def _tags(uri: str, version: str) -> dict:
    return dict(client(uri).get_model_version(NAME, version).tags or {})


@pytest.fixture(scope="module")
def first(trained):
    """Version 1: the session's trained package, the registry's first model."""
    result = _run(trained)
    return f"sqlite:///{trained[0]}/mlflow.db", result


@pytest.fixture(scope="module")
def app(trained, first, serve_port):
    from ray import serve

    home, overrides, _ = trained
    cfg = compose_config([*overrides, f"serve.port={serve_port}", f"serve.model={NAME}@champion", "serve.app_name=gated",
                          "serve.log_level=WARNING", "serve.release.poll_s=0.5"])
    url = serving.start_server(cfg)
    yield url
    serve.delete(cfg.serve.app_name)


def _health(url: str) -> dict:
    return requests.get(f"{url}/healthz", timeout=10).json()


def test_the_first_model_is_blessed_by_value_thresholds_validated_in_a_sandbox_and_pushed(first):
    uri, result = first
    assert [s.status for s in result.steps if s.name in ("train", "package", "evaluate")] == ["cached"] * 3
    tags = _tags(uri, "1")
    assert tags[pushes.PushTag.BLESSED] == "true", tags
    assert tags[pushes.PushTag.BLESSING].startswith("blessed: auc")
    assert tags[pushes.PushTag.INFRA].startswith("infra validated: 30 canned requests, scores within")
    assert tags[pushes.PushTag.PUSHED] == "pushed: champion is version 1"
    assert _champion(uri) == "1"
    decision = read_json(result.output("push").decision)
    assert decision["pushed"] and decision["via"] == f"push step (MLflow run {result.steps[-1].run_id})"
    blessing = read_json(result.output("bless").blessing)
    assert blessing["blessed"] and blessing["champion_version"] is None
    evaluation = read_json(result.output("bless").evaluation)
    assert evaluation  # written; its content is tests/unit/test_evaluation_gate.py's
    assert "<html" in open(result.output("bless").report).read().lower()


def test_infra_validation_finds_a_serve_restarted_elsewhere_on_another_port(trained, first, ray_local, tmp_path):
    """A process keeps its Serve client (and its HTTP options) from the Serve it last used; here Serve is then
    shut down and started on another port by another process (a Ray task). The sandbox must deploy into the
    running Serve and call it on its real port (CI: a push step polled a port long gone and refused a good model)."""
    import dataclasses

    import ray
    from ray import serve

    from mlsys.evaluate.config import InfraValidationConfig
    from mlsys.serve.sandbox import validate_in_sandbox

    uri, result = first
    serve.shutdown()
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})  # this process's client: that port

    @ray.remote(num_cpus=0)
    def restart_serve_elsewhere(port: int) -> int:
        from ray.serve.context import _disconnect

        # This worker may have run a pipeline step's sandbox and kept a client of the Serve just shut
        # down; Serve's shutdown asks only that one ("nothing to shut down") and the start then joins
        # the running Serve on its old port.
        _disconnect()
        serve.shutdown()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        return port

    port = ray.get(restart_serve_elsewhere.remote(free_port()))
    cfg = compose_config(trained[1])
    infra = validate_in_sandbox(resolve(uri, f"{NAME}/1").source, NAME, "1", result.output("transform").eval, cfg.serve,
                                dataclasses.replace(InfraValidationConfig(), requests=5, timeout_s=30))
    assert infra.passed, infra.reason
    assert f":{port}/sandbox/" in infra.where, infra.where
    serve.shutdown()


SHUTDOWN_SCRIPT = """
import sys, time
import ray
from ray import serve

ray.init(num_cpus=1, include_dashboard=False)

@ray.remote
def start_and_stop(port):  # as the push step's sandbox, in its task, ends the Serve it started
    from mlsys.serve.app import shutdown_serve

    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
    shutdown_serve()

ray.get(start_and_stop.remote(int(sys.argv[1])))
time.sleep(3)  # what the raylet has to say reaches this driver asynchronously
try:
    ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
    print("controller alive")
except ValueError:
    print("controller gone")
ray.shutdown()
"""


def test_the_sandbox_ends_the_serve_it_started_without_rays_retry_warning(tmp_path):
    """serve.shutdown() makes Ray print "Task ServeController.graceful_shutdown failed. There are infinite retries
    remaining ..." (the controller kills itself while answering); the sandbox's shutdown_serve ends Serve as
    well, quietly. On its own embedded Ray: the session's Serve must keep running."""
    import sys

    script = tmp_path / "shutdown.py"
    script.write_text(SHUTDOWN_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(free_port())], cwd=REPO, capture_output=True, text=True,
                          timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "controller gone" in proc.stdout, out[-3000:]
    assert "graceful_shutdown failed" not in out, out[-3000:]


def test_a_worse_candidate_is_refused_with_one_line_reason_and_never_serves(trained, first, app, capsys):
    uri, _ = first
    capsys.readouterr()
    worse = _run(trained, "train.learning_rate=0.000001", "evaluate.blessing.thresholds.auc=0.5")
    out = capsys.readouterr().out
    version = worse.output("register").version
    line = next(l for l in out.splitlines() if l.startswith("gate: "))  # the run's summary
    assert line.startswith("gate: not blessed: auc") and "< champion" in line, line  # the metric, the values, the threshold
    assert "(evaluate.blessing." in line, line
    assert f"[bless] {NAME} version {version}: not blessed: auc" in out  # the step's own line (from its Ray task)
    assert "push: not pushed: not blessed: auc" in out
    assert _tags(uri, version)[pushes.PushTag.BLESSED] == "false"
    assert pushes.PushTag.INFRA not in _tags(uri, version)  # never sandboxed
    assert _champion(uri) == "1" and _health(app)["version"] == "1"


def test_a_blessed_candidate_is_pushed_and_served_without_restart_then_rolled_back(trained, first, app):
    uri, _ = first
    before = _health(app)
    better = _run(trained, "model.embed_dim=12", "evaluate.blessing.max_regression.auc=0.05",
                  "evaluate.blessing.max_regression.logloss=0.05", "evaluate.blessing.max_slice_regression.auc=0.1")
    version = better.output("register").version
    assert read_json(better.output("push").decision)["pushed"], read_json(better.output("push").decision)
    assert _champion(uri) == version
    health = wait_until(lambda: (h := _health(app))["version"] == version and h, f"the app to serve version {version}")
    assert health["replica_pid"] == before["replica_pid"]  # hot reload, no restart
    model = mlsys.load_model(f"models:/{NAME}/{version}", tracking_uri=uri)
    user, items = 1, [1, 2, 3, 50, 172]
    want = {i.item_id: i.score for i in model.rank(user, items).items}
    body = requests.post(f"{app}/v1/rank", json={"user_id": user, "candidates": items}, timeout=30).json()
    assert body["version"] == version
    assert all(abs(i["score"] - want[i["item_id"]]) <= 1e-5 for i in body["items"])

    proc = subprocess.run([MLSYS, "model", "rollback", NAME, f"home.root={trained[0]}"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"champion rolled back from version {version} to version 1" in proc.stdout
    wait_until(lambda: _health(app)["version"] == "1", "the app to serve version 1 again")
    assert _health(app)["replica_pid"] == before["replica_pid"]


def test_a_package_that_cannot_load_is_refused_by_infra_validation(trained, first, tmp_path, ray_local):
    uri, _ = first
    broken = variant(resolve(uri, f"{NAME}/1").source, tmp_path / "corrupt", "corrupt")
    version = str(client(uri).create_model_version(NAME, source=broken).version)
    champion = _champion(uri)
    session_ray = f"cluster.address={ray_local.get_runtime_context().gcs_address}"  # no second Ray
    proc = subprocess.run([MLSYS, "model", "push", NAME, "--version", version, f"home.root={trained[0]}", session_ray],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_AUTH_MODE": "token"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "not pushed: infra validation failed: the package does not load: ArtifactIntegrityError" in proc.stderr
    assert _champion(uri) == champion
    assert _tags(uri, version)[pushes.PushTag.INFRA].startswith("infra validation failed: the package does not load")


def test_model_history_lists_versions_aliases_metrics_decisions_and_pushes(trained, first):
    proc = subprocess.run([MLSYS, "model", "history", NAME, f"home.root={trained[0]}"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"{NAME}: " in out and "champion" in out
    assert "gate: blessed: auc" in out and "gate: not blessed: auc" in out
    assert "infra: infra validated" in out and "infra: infra validation failed" in out
    assert "push at " in out and "via push step (MLflow run" in out and "rollback at " in out and "via mlsys model rollback" in out
    rows = pushes.history(f"sqlite:///{trained[0]}/mlflow.db", NAME)
    json.dumps(rows)


def test_a_sweep_runs_every_combination_reusing_shared_steps_and_ends_with_a_table(trained, ray_local):
    """``mlsys run -m``: both values of ``model.embed_dim`` were trained earlier in the session (16 by the
    session's pipeline, 12 by the blessed candidate above), so each run reuses every step up to evaluate."""
    home, overrides, _ = trained
    session_ray = f"cluster.address={ray_local.get_runtime_context().gcs_address}"
    proc = subprocess.run([MLSYS, "run", "-m", *overrides, "model.embed_dim=16,12", "registry.model_name=swept",
                           "evaluate.infra.enabled=false", session_ray], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "RAY_AUTH_MODE": "token"})
    out = proc.stdout
    assert proc.returncode == 0, (out + proc.stderr)[-4000:]
    assert "[sweep] run 1/2: " in out and "[sweep] run 2/2: " in out
    table = out[out.index("\nsweep "):].splitlines()
    sweep_id = table[1].split()[1]
    assert table[2].split()[:5] == ["model.embed_dim", "auc", "logloss", "version", "outcome"]
    rows = [line.split() for line in table[3:5]]
    assert [r[0] for r in rows] == ["16", "12"] and [r[3] for r in rows] == ["1", "2"]
    assert all(0.5 < float(r[1]) < 1 for r in rows)
    assert rows[0][4] == "pushed:"  # the first model of `swept`; the second is judged against it
    assert out.count("train       cached") == 2, out[-3000:]
    c = client(f"sqlite:///{home}/mlflow.db")
    runs = c.search_runs([c.get_experiment_by_name("ctr").experiment_id], f"tags.\"mlsys.sweep\" = '{sweep_id}'")
    assert sorted(r.data.tags["mlsys.sweep.index"] for r in runs) == ["1", "2"]
