"""The default pipeline end to end on real Ray, real MLflow (SQLite): runs,
lineage, caching, and rerunning only what an override changes."""

import json
import re
from pathlib import Path

import mlsys
from mlsys.registry import mlflow_store
from mlsys.config import HomeConfig

STEPS = ["ingest", "statistics", "schema", "validate", "features", "materialize", "transform", "tune", "train", "package", "evaluate",
         "register", "bless", "push"]


def _client(home):
    return mlflow_store.client(mlflow_store.tracking_uri(HomeConfig(root=str(home))))


def test_first_run_runs_every_step_and_learns(trained):
    home, _, result = trained
    assert [s.name for s in result.steps] == STEPS
    assert all(s.status == "ran" for s in result.steps)
    metrics = json.loads(Path(result.output("evaluate").metrics).read_text())
    assert metrics["auc"] > 0.70, metrics  # popularity alone gives ~0.68 on this split
    assert 0.0 < metrics["logloss"] < 0.69
    assert result.output("register").version == "1"


def test_every_step_is_a_nested_mlflow_run_with_lineage(trained):
    home, _, result = trained
    client = _client(home)
    children = client.search_runs([result.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    by_step = {r.data.tags["mlsys.step"]: r for r in children}
    assert sorted(by_step) == sorted(STEPS)
    for report in result.steps:
        run = by_step[report.name]
        assert run.data.tags["mlsys.fingerprint"] == report.fingerprint
        assert json.loads(run.data.tags["mlsys.outputs"])
    assert by_step["train"].data.params["model.embed_dim"] == "16"
    assert by_step["ingest"].data.params["data.source"] == "movielens"
    assert "eval_auc" in by_step["evaluate"].data.metrics

    # Walk back from the champion to the data it came from.
    version = client.get_model_version_by_alias("ctr", "champion")
    assert version.run_id == by_step["register"].info.run_id
    register_inputs = json.loads(by_step["register"].data.tags["mlsys.inputs"])
    assert register_inputs["packaged"] == json.loads(by_step["package"].data.tags["mlsys.outputs"])
    package_inputs = json.loads(by_step["package"].data.tags["mlsys.inputs"])
    assert package_inputs["trained"] == json.loads(by_step["train"].data.tags["mlsys.outputs"])
    train_inputs = json.loads(by_step["train"].data.tags["mlsys.inputs"])
    assert train_inputs["data"] == json.loads(by_step["transform"].data.tags["mlsys.outputs"])
    transform_inputs = json.loads(by_step["transform"].data.tags["mlsys.inputs"])
    ingest_outputs = json.loads(by_step["ingest"].data.tags["mlsys.outputs"])
    assert transform_inputs["ingested"] == ingest_outputs
    assert Path(ingest_outputs["events"]).is_dir()


def test_unchanged_rerun_reuses_every_step(trained):
    home, overrides, first = trained
    again = mlsys.run_pipeline(overrides)
    assert [s.status for s in again.steps] == ["cached"] * len(STEPS)
    assert [s.fingerprint for s in again.steps] == [s.fingerprint for s in first.steps]
    assert again.run_id != first.run_id
    assert again.output("register") == first.output("register")


def test_explain_says_what_would_run_and_why(trained):
    home, overrides, _ = trained
    lines = mlsys.explain_pipeline([*overrides, "model.embed_dim=8"]).splitlines()
    action = {line.split()[0]: line.split()[1] for line in lines if not line.startswith(" ")}
    assert action == {**{s: "reuse" for s in STEPS[:7]}, **{s: "run" for s in STEPS[7:]}}
    train = "\n".join(lines[[i for i, line in enumerate(lines) if line.startswith("train ")][0]:])
    # against the latest run of the step (16 here alone; 12 after test_gate's sweep in the suite)
    assert re.search(r"config model\.embed_dim: (16|12) -> 8", train), train
    # The command line prints the same, and runs nothing.
    import subprocess

    from tests.conftest import MLSYS

    out = subprocess.run([MLSYS, "run", "--explain", *overrides], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert [line.split()[1] for line in out.stdout.splitlines() if not line.startswith(" ")] == ["reuse"] * len(STEPS)


def test_model_override_reruns_only_downstream_steps(trained):
    home, overrides, first = trained
    changed = mlsys.run_pipeline([*overrides, "model.embed_dim=8"])
    status = {s.name: s.status for s in changed.steps}
    assert status == {"ingest": "cached", "statistics": "cached", "schema": "cached", "validate": "cached",
                      "features": "cached", "materialize": "cached", "transform": "cached",
                      "tune": "ran", "train": "ran", "package": "ran", "evaluate": "ran", "register": "ran", "bless": "ran",
                      "push": "ran"}
    assert changed.output("register").version == "2"
    # The new model really has the new width.
    package = json.loads((Path(changed.output("register").package) / "model.json").read_text())
    assert package["config"]["embed_dim"] == 8
