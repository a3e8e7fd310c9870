"""tune=optuna_asha on MovieLens: real Ray Tune trials of the train step's training, a tiny budget.

One tuning pipeline run is shared by the checks (module fixture); upstream steps come from the
session's default pipeline (the ``trained`` fixture's home and overrides), so only tune, train,
package and evaluate run. The interrupted run is a real `mlsys run` killed after its first trial.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import MLSYS, REPO

TUNE = ["tune=optuna_asha", "tune/search_space=small", "tune.num_samples=3", "tune.max_epochs=2", "tune.max_concurrent_trials=2"]


@pytest.fixture(scope="module")
def tuned(trained):
    import mlsys

    home, overrides, default = trained
    result = mlsys.run_pipeline([*overrides, *TUNE, "pipeline.until=evaluate"])
    return home, overrides, default, result


def _client(home):
    from mlsys.config import HomeConfig
    from mlsys.registry import mlflow_store

    return mlflow_store.client(mlflow_store.tracking_uri(HomeConfig(root=str(home))))


def _eval_auc(result) -> float:
    return dict((n, v) for n, v, _ in next(r for r in result.steps if r.name == "evaluate").metrics)["eval_auc"]


def test_tuning_trains_its_best_configuration_and_beats_the_default(tuned):
    from mlsys import storage
    from mlsys.registry.package import read_package

    home, _, default, result = tuned
    status = {r.name: r.status for r in result.steps}
    assert status == {**{s: "cached" for s in ("ingest", "statistics", "schema", "validate", "features", "materialize", "transform")},
                      **{s: "ran" for s in ("tune", "train", "package", "evaluate")}}, status
    best = storage.read_json(result.output("tune").best)
    assert set(best["params"]) == {"model.embed_dim", "train.learning_rate"} and best["trials"] == 3 and not best["resumed"]
    assert best["params"]["model.embed_dim"] in (8, 16) and 3e-3 <= best["params"]["train.learning_rate"] <= 3e-2
    assert best["trial_epochs"] <= 3 * 2 and 0.6 < best["value"] < 1

    # The train step trained the best configuration (lineage: its run's tag, the package's manifest and model config)
    runs = {r.name: r for r in result.steps}
    train_run = _client(home).get_run(runs["train"].run_id)
    assert json.loads(train_run.data.tags["mlsys.tuned"])["params"] == best["params"]
    assert json.loads(train_run.data.tags["mlsys.inputs"])["tuned"] == {"best": result.output("tune").best}
    package = read_package(result.output("package").package)
    assert package.model_config.embed_dim == best["params"]["model.embed_dim"]
    assert package.manifest["lineage"]["tuned"]["params"] == best["params"]

    tuned_auc, default_auc = _eval_auc(result), _eval_auc(default)
    assert tuned_auc > default_auc, (tuned_auc, default_auc, best)


def test_trials_are_nested_runs_with_curves_and_the_study_is_in_optuna_db(tuned):
    import optuna

    from mlsys import storage

    home, _, _, result = tuned
    tune_step = next(r for r in result.steps if r.name == "tune")
    client = _client(home)
    trials = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{tune_step.run_id}'")
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)
    epochs = []
    for run in trials:
        assert set(run.data.params) == {"model.embed_dim", "train.learning_rate"}
        curve = client.get_metric_history(run.info.run_id, "valid_auc")
        epochs.append(sorted(m.step for m in curve))
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == len(curve)
    # one value per epoch; the first trial at ASHA's rung always continues, the others may be stopped there
    assert all(e in ([1], [1, 2]) for e in epochs) and [1, 2] in epochs, epochs

    best = storage.read_json(result.output("tune").best)
    study = optuna.load_study(study_name=f"tune-{tune_step.fingerprint[:16]}", storage=f"sqlite:///{home}/optuna.db")
    assert len(study.trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.best_value == pytest.approx(best["value"])


def _start(args, env):
    return subprocess.Popen([MLSYS, "run", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _read_until(proc, needle: str, timeout: float) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if needle in line:
            return lines
        assert time.monotonic() < deadline, f"no {needle!r} within {timeout:g} s:\n{''.join(lines[-40:])}"
    raise AssertionError(f"exited ({proc.wait()}) before {needle!r}:\n{''.join(lines[-40:])}")


def test_an_interrupted_tuning_run_resumes_and_keeps_its_finished_trials(tuned, ray_local):
    from mlsys import storage

    home, overrides, _, _ = tuned
    # another experiment (seed, budget), one trial at a time: killed once the first has finished
    args = [*overrides, "tune=optuna_asha", "tune/search_space=small", "tune.num_samples=2", "tune.max_epochs=1",
            "tune.max_concurrent_trials=1", "tune.seed=1", "pipeline.until=tune",
            f"cluster.address={ray_local.get_runtime_context().gcs_address}"]  # the session's Ray: no second one
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONUNBUFFERED": "1"}
    first = _start(args, env)
    try:
        lines = _read_until(first, "[tune] 1/2 trials done", timeout=150)
        time.sleep(2.5)  # Tune writes its experiment state every second (tuner.EXPERIMENT_STATE_EVERY_S)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finished = next(line for line in lines if "[tune] trial " in line).split("[tune] trial ")[1].split()[0]

    second = subprocess.run([MLSYS, "run", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-4000:]
    assert "[tune] resuming the interrupted tuning run" in out, out[-4000:]
    assert "[tune] 1 of 2 trials had finished; they are kept, not run again" in out, out[-4000:]
    assert f"[tune] trial {finished} " not in out, out[-4000:]  # not run again
    assert "[tune] 2/2 trials done" in out, out[-4000:]
    assert "Progress bars disabled" not in out, out[-4000:]  # Ray Data's notice, from the trials' train workers too

    client = _client(home)
    exp = client.get_experiment_by_name("ctr")
    assert len(client.search_runs([exp.experiment_id], f"tags.`mlsys.trial_id` = '{finished}'")) == 1
    tune_runs = client.search_runs([exp.experiment_id], "tags.`mlsys.step` = 'tune' and attributes.status = 'FINISHED'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
    best = storage.read_json(json.loads(tune_runs[0].data.tags["mlsys.outputs"])["best"])
    assert best["resumed"] and best["trials"] == 2
