"""``mlsys predict`` on the registered model of the session's pipeline run: the scores of the Ray Data
path equal ``load_model(...).rank``'s (the serving path) within 1e-5, bad rows are quarantined with
their reasons, too many stop the run, and the real ``mlsys`` executable scores a CSV.

Small inputs (a few users' candidates): the point is equality and the edges, not speed
(benchmarks/batch_predict.py measures that)."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlsys
from mlsys.api.config import compose_config
from mlsys.api.predict import predict
from mlsys.errors import TooManyBadRowsError
from tests.conftest import MLSYS, REPO

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def model(trained):
    home, _, _ = trained
    return mlsys.load_model("models:/ctr/1", tracking_uri=f"sqlite:///{home}/mlflow.db")


@pytest.fixture(scope="module")
def candidates(trained) -> pd.DataFrame:
    """Six eval users' first 15 eval items each, plus an unknown user and an unknown item."""
    _, _, result = trained
    frame = pd.read_parquet(result.output("transform").eval, columns=["user_id", "item_id"])
    users = frame.user_id.drop_duplicates().head(6)
    rows = frame[frame.user_id.isin(users)].groupby("user_id").head(15)[["user_id", "item_id"]]
    extra = pd.DataFrame({"user_id": [999_999, int(users.iloc[0])], "item_id": [int(rows.item_id.iloc[0]), 999_999]})
    return pd.concat([rows, extra], ignore_index=True).astype("int64")


def _rank_scores(model, rows: pd.DataFrame) -> dict[tuple[int, int], float]:
    out = {}
    for user, group in rows.groupby("user_id"):
        for item in model.rank(int(user), [int(i) for i in group.item_id]).items:
            out[(int(user), item.item_id)] = item.score
    return out


def _cfg(trained, *overrides):
    # Version 1 by number: other tests of the session register more versions on the shared home and move
    # the champion (test_pipeline's model override), so the alias is not the model the fixture loaded.
    return compose_config([*trained[1], "predict.model=ctr/1", *overrides])


def test_scores_equal_load_model_rank_and_bad_rows_are_quarantined(trained, model, candidates, tmp_path):
    bad = pd.DataFrame({"user_id": [np.nan, 1.5, 3.0], "item_id": [5.0, 5.0, -2.0]})  # pandas writes NaN as null
    rows = pd.concat([candidates.astype("float64"), bad], ignore_index=True).sample(frac=1.0, random_state=0)
    rows["request"] = [f"r{i}" for i in range(len(rows))]  # a column of the caller's own: passed through
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), tmp_path / "rows.parquet", row_group_size=40)
    # Small batches: several actors and several part files even for this little input.
    result = predict(_cfg(trained, f"predict.input={tmp_path}/rows.parquet", f"predict.output={tmp_path}/scores",
                          "predict.batch_size=40", "predict.max_bad_fraction=0.05"))
    assert result.rows == len(rows) and result.summary.bad == 3 and result.actors == 2
    assert result.unknown_user_rows == 1 and result.unknown_item_rows == 1
    scored = pd.read_parquet(tmp_path / "scores")
    assert len(list((tmp_path / "scores").glob("part-*.parquet"))) > 1
    assert sorted(scored.row_id) == sorted(set(range(len(rows))) - set(np.flatnonzero(rows.user_id.isna() | (rows.user_id == 1.5)
                                                                                      | (rows.item_id < 0))))
    # Joined back by row_id: every scored row is its input row.
    back = rows.reset_index(drop=True).loc[scored.row_id]
    assert back.request.tolist() == scored.request.tolist()
    expected = _rank_scores(model, candidates)
    got = {(int(u), int(i)): s for u, i, s in zip(scored.user_id, scored.item_id, scored.score)}
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=0, atol=1e-5)
    quarantine = pd.read_parquet(tmp_path / "scores.quarantine" / "bad_rows.parquet")
    assert sorted(zip(quarantine.reason, quarantine.detail)) == [
        ("null_key", "user_id is empty"), ("unparseable", "user_id=1.5 is not an integer"), ("wrong_type", "item_id=-2 is negative")]
    assert set(quarantine.line_number) == set(range(len(rows))) - set(scored.row_id)


def test_too_many_bad_rows_stop_and_leave_only_the_quarantine(trained, candidates, tmp_path):
    rows = candidates.head(20).astype("float64")
    rows.loc[:4, "user_id"] = np.nan  # 5 of 20
    rows.to_parquet(tmp_path / "rows.parquet")
    with pytest.raises(TooManyBadRowsError, match=r"5 of 20: null_key 5\), above predict.max_bad_fraction=0.1"):
        predict(_cfg(trained, f"predict.input={tmp_path}/rows.parquet", f"predict.output={tmp_path}/scores",
                     "predict.max_bad_fraction=0.1"))
    assert not (tmp_path / "scores").exists()
    assert len(pd.read_parquet(tmp_path / "scores.quarantine" / "bad_rows.parquet")) == 5


def _mlsys(*args, timeout=300):
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # joins the session's Ray, which has token auth on
    return subprocess.run([MLSYS, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def test_the_cli_scores_a_csv_as_load_model(trained, ray_local, model, candidates, tmp_path):
    home = trained[0]
    candidates.to_csv(tmp_path / "rows.csv", index=False)
    address = ray_local.get_runtime_context().gcs_address  # join the session's cluster: no third Ray on the machine
    proc = _mlsys("predict", "--model", "ctr/1", "--input", str(tmp_path / "rows.csv"), "--output", str(tmp_path / "out"),
                  f"home.root={home}", f"cluster.address={address}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[predict] ctr version 1: ids from columns 'user_id', 'item_id'" in proc.stdout
    assert f"[predict] scored {len(candidates)} of {len(candidates)} rows" in proc.stdout
    scored = pd.read_parquet(tmp_path / "out").sort_values("row_id")
    assert scored.row_id.tolist() == list(range(len(candidates)))
    expected = _rank_scores(model, candidates)
    np.testing.assert_allclose(scored.score, [expected[(u, i)] for u, i in zip(scored.user_id, scored.item_id)], rtol=0, atol=1e-5)
    again = _mlsys("predict", "--input", str(tmp_path / "rows.csv"), "--output", str(tmp_path / "out"), f"home.root={home}")
    assert again.returncode == 2 and f"--output {tmp_path / 'out'} already exists" in again.stderr
    assert "predict.overwrite=true" in again.stderr


@pytest.mark.parametrize("args, needles", [
    (["--input", "/nonexistent/rows.parquet", "--output", "{tmp}/o"], ["--input /nonexistent/rows.parquet: no such file"]),
    (["--model", "nosuch@champion", "--input", "{tmp}/rows.csv", "--output", "{tmp}/o"], ["No model at 'nosuch@champion'"]),
    (["--input", "{tmp}/wrong.csv", "--output", "{tmp}/o"], ["has no column 'item_id'", "name the item id column 'item_id'"]),
    (["--output", "{tmp}/o"], ["predict.input is not set", "--input PATH"]),
])
def test_cli_errors_are_one_clear_line(trained, tmp_path, args, needles):
    (tmp_path / "rows.csv").write_text("user_id,item_id\n1,2\n")
    (tmp_path / "wrong.csv").write_text("user_id,movie\n1,2\n")
    proc = _mlsys("predict", *(a.format(tmp=tmp_path) for a in args), f"home.root={trained[0]}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mlsys: error:") and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in last, last
