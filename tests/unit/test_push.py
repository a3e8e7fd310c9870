"""Pushes and rollbacks of the serving alias in a real MLflow registry (SQLite), and infra validation's verdict."""

import json

import pytest

from mlsys.config import HomeConfig
from mlsys.errors import AliasMoveError
from mlsys.evaluate.config import InfraValidationConfig
from mlsys.evaluate.infra import judge, refused
from mlsys.registry import mlflow_store, pushes, releases


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    """Model ``m`` with versions 1-3 (empty package folders: the registry does not read them)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = mlflow_store.tracking_uri(HomeConfig(root=str(tmp_path)))
    c = mlflow_store.client(uri)
    c.create_registered_model("m")
    for n in range(3):
        (tmp_path / f"p{n}").mkdir()
        c.create_model_version("m", source=str(tmp_path / f"p{n}"))
    return uri


def _champion(uri):
    return str(mlflow_store.client(uri).get_model_version_by_alias("m", "champion").version)


def test_a_push_moves_the_alias_and_records_who_what_when_and_from(registry):
    first = pushes.push(registry, "m", "1", "champion", by="ana@h", via="pipeline run r1", reason="blessed: first")
    assert first.previous is None and _champion(registry) == "1"
    second = pushes.push(registry, "m", "2", "champion", by="ana@h", via="pipeline run r2", reason="blessed: better")
    assert second.previous == "1" and _champion(registry) == "2"
    moves = next(r for r in pushes.history(registry, "m") if r["version"] == "2")["moves"]
    assert [(m["action"], m["by"], m["via"], m["from"]) for m in moves] == [("push", "ana@h", "pipeline run r2", "1")]
    assert moves[0]["at"] > 0 and moves[0]["reason"] == "blessed: better"
    assert releases.read(registry, "m").previous == "1"  # `mlsys release rollback` would go there too


def test_rollback_goes_to_the_previous_champion_once_then_needs_a_target(registry):
    pushes.push(registry, "m", "1", "champion", by="a", via="v", reason="r")
    pushes.push(registry, "m", "2", "champion", by="a", via="v", reason="r")
    back = pushes.rollback(registry, "m", "champion", by="bob@h", via="mlsys model rollback")
    assert (back.previous, back.version, _champion(registry)) == ("2", "1", "1")
    with pytest.raises(AliasMoveError, match="no earlier champion is recorded; name one with --to N"):
        pushes.rollback(registry, "m", "champion", by="a", via="v")
    pushes.rollback(registry, "m", "champion", by="a", via="v", to="3")
    assert _champion(registry) == "3"
    one = next(r for r in pushes.history(registry, "m") if r["version"] == "1")
    assert [m["action"] for m in one["moves"]] == ["push", "rollback"] and one["moves"][1]["from"] == "2"


def test_no_push_or_rollback_during_a_release(registry):
    pushes.push(registry, "m", "1", "champion", by="a", via="v", reason="r")
    releases.start(registry, "m", "2", "canary", 10.0)
    with pytest.raises(AliasMoveError, match="version 2 is in canary release; `mlsys release promote` or `mlsys release rollback`"):
        pushes.push(registry, "m", "3", "champion", by="a", via="v", reason="r")
    with pytest.raises(AliasMoveError, match="in canary release"):
        pushes.rollback(registry, "m", "champion", by="a", via="v", to="3")
    assert _champion(registry) == "1"


def test_history_lists_every_version_with_its_gate_tags(registry):
    pushes.record(registry, "m", "2", {pushes.PushTag.BLESSED: "false", pushes.PushTag.BLESSING: "not blessed: auc 0.6 < 0.7",
                                       "eval_auc": "0.6"})
    rows = pushes.history(registry, "m")
    assert [r["version"] for r in rows] == ["3", "2", "1"]
    two = rows[1]
    assert two["blessed"] is False and two["blessing"] == "not blessed: auc 0.6 < 0.7" and two["metrics"] == {"auc": 0.6}
    assert rows[0]["blessed"] is None and rows[0]["moves"] == []
    json.dumps(rows)  # JSON-ready (the dashboard reads it)


CFG = InfraValidationConfig(tolerance=1e-5, p99_budget_ms=50.0)


def test_infra_verdict_passes_only_same_items_close_scores_within_budget():
    want = [{1: 0.5, 2: 0.25}, {3: 0.125}]
    ok = judge(want, [{1: 0.5, 2: 0.250001}, {3: 0.125}], [3.0, 4.0], CFG)
    assert ok.passed and ok.max_abs_error == pytest.approx(1e-6) and ok.requests == 2 and "p99" in ok.reason
    off = judge(want, [{1: 0.5, 2: 0.26}, {3: 0.125}], [3.0, 4.0], CFG)
    assert not off.passed and "request 0 scored 0.01 away from the offline scorer (evaluate.infra.tolerance=1e-05)" in off.reason
    slow = judge(want, [{1: 0.5, 2: 0.25}, {3: 0.125}], [3.0, 80.0], CFG)
    assert not slow.passed and "> evaluate.infra.p99_budget_ms=50" in slow.reason
    errors = judge(want, ["HTTP 500: boom", {3: 0.125}], [3.0, 4.0], CFG)
    assert not errors.passed and "1 of 2 canned requests failed, e.g. request 0: HTTP 500: boom" in errors.reason
    items = judge(want, [{1: 0.5}, {3: 0.125}], [3.0, 4.0], CFG)
    assert not items.passed and "answered items [1], expected [1, 2]" in items.reason
    assert refused("the package does not load: X").reason == "infra validation failed: the package does not load: X"
