"""Data validation gates training: planted drift stops the pipeline, bad rows are quarantined."""

import json
from pathlib import Path

import pandas as pd
import pytest

import mlsys
from mlsys.errors import StepFailedError
from mlsys.registry import mlflow_store

SMALL = ["data=synthetic", "data.rows=20000", "data.users=400", "data.items=800", "data.blocks=2", "train.max_epochs=1"]


@pytest.fixture(scope="module")
def span_one(tmp_path_factory, ray_local):
    home = tmp_path_factory.mktemp("spans")
    result = mlsys.run_pipeline([f"home.root={home}", *SMALL, "pipeline.until=validate"])
    return home, result


def test_a_run_writes_statistics_schema_anomalies_and_a_report(span_one):
    home, result = span_one
    assert [s.name for s in result.steps] == ["ingest", "statistics", "schema", "validate"]
    train = json.loads(Path(result.output("statistics").train).read_text())
    assert train["format"] == "mlsys.statistics/1" and train["features"]["gender"]["kind"] == "categorical"
    schema = Path(result.output("schema").schema).read_text()
    assert "gender:" in schema and "domain:" in schema
    html = Path(result.output("validate").report).read_text()
    assert "gender" in html and "Plotly.newPlot" in html
    # The report is linked from the validate step's MLflow run.
    client = mlflow_store.client(f"sqlite:///{home}/mlflow.db")
    run_id = next(s.run_id for s in result.steps if s.name == "validate")
    assert [a.path for a in client.list_artifacts(run_id, "validation")] == ["validation/report.html"]


def test_an_unchanged_next_span_passes(span_one):
    home, result = span_one
    previous = result.output("statistics").train
    nxt = mlsys.run_pipeline([f"home.root={home}", *SMALL, "data.span=1", f"validation.previous_statistics={previous}", "pipeline.until=validate"])
    assert nxt.steps[-1].status == "ran"


def test_planted_drift_stops_the_pipeline_naming_the_feature(span_one):
    home, result = span_one
    previous = result.output("statistics").train
    with pytest.raises(StepFailedError) as failure:
        mlsys.run_pipeline([f"home.root={home}", *SMALL, "data.span=1", "data.gender_share=0.7", f"validation.previous_statistics={previous}"])
    message = str(failure.value)
    assert failure.value.step == "validate"
    assert "gender" in message and "linf=" in message and "threshold 0.1" in message and "report.html" in message
    # Training never started: no train step output exists for this home beyond span one's (none).
    assert not (home / "artifacts" / "train").exists()


def test_every_spans_statistics_are_a_series(span_one):
    """Offline sample monitoring: the spans the tests above ingested, followed feature by feature (API and CLI)."""
    import subprocess

    from mlsys.monitor.spans import span_series
    from tests.conftest import MLSYS

    home, _ = span_one
    points = span_series(f"sqlite:///{home}/mlflow.db", "gender")
    assert [p.span for p in points] == ["0", "1", "1"] and all(p.source == "synthetic" for p in points)
    share = [dict(p.top)["F"] for p in points]
    assert abs(share[1] - share[0]) < 0.05 and share[2] - share[0] > 0.15  # the planted span: gender_share=0.7 (0.5 before)
    ages = span_series(f"sqlite:///{home}/mlflow.db", "age")
    assert all(p.mean is not None and p.missing_rate == 0.0 for p in ages)
    out = subprocess.run([MLSYS, "monitor", "spans", "--feature", "gender", f"home.root={home}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "gender (train split) across 3 statistics runs" in out.stdout and "synthetic span 1" in out.stdout, out.stderr


def _csv_with_bad_rows(tmp_path, good: int):
    from mlsys.data.movielens import movielens_dir

    lines = (movielens_dir() / "ml-100k.inter").read_text().splitlines()[1 : good + 1]
    body = [",".join(line.split("\t")) for line in lines]
    bad = ["7,,881250949,4", "x1,242,881250949,3", "196,242,881250949", "196,242,3,-5", "196,242,881250949,nan", "1,2,3,4,5"]
    path = tmp_path / "clicks.csv"
    path.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(body[:100] + bad + body[100:]) + "\n")
    return path, len(bad)


def test_bad_rows_are_quarantined_with_reasons(tmp_path, ray_local):
    path, n_bad = _csv_with_bad_rows(tmp_path, 5000)
    home = tmp_path / "home"
    result = mlsys.run_pipeline([f"home.root={home}", "data=csv", f"data.path={path}", "data.columns.rating=rating", "pipeline.until=ingest"])
    out = result.output("ingest")
    quarantined = pd.read_parquet(out.quarantine)
    assert len(quarantined) == n_bad
    assert set(quarantined.reason) == {"null_key", "unparseable", "wrong_field_count", "wrong_type"}
    events = pd.read_parquet(out.events)
    assert len(events) == 5000  # nothing dropped: 5000 good + 6 quarantined = every data line
    metrics = dict((n, v) for n, v, _ in result.steps[0].metrics)
    assert metrics["bad_rows"] == n_bad and metrics["rows_read"] == 5000 + n_bad


def test_too_many_bad_rows_stop_ingestion(tmp_path, ray_local):
    path, _ = _csv_with_bad_rows(tmp_path, 200)
    with pytest.raises(StepFailedError) as failure:
        mlsys.run_pipeline([f"home.root={tmp_path / 'home'}", "data=csv", f"data.path={path}", "data.columns.rating=rating", "pipeline.until=ingest"])
    message = str(failure.value)
    assert "malformed" in message and "data.max_bad_fraction=0.01" in message and "quarantine" in message
