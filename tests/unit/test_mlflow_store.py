"""Tracking stores stay per home within one process (no global MLflow state)."""

import os

import pytest

from mlsys.errors import ModelNotFoundError
from mlsys.config import HomeConfig
from mlsys.registry import mlflow_store


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_two_homes_in_one_process_keep_separate_stores(tmp_path):
    first = mlflow_store.tracking_uri(HomeConfig(root=str(tmp_path / "a")))
    exp = mlflow_store.ensure_experiment(first, "e", str(tmp_path / "a" / "mlartifacts"))
    run = mlflow_store.client(first).create_run(exp)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # creating a client must not set it
    second = mlflow_store.tracking_uri(HomeConfig(root=str(tmp_path / "b")))
    assert second == f"sqlite:///{tmp_path / 'b'}/mlflow.db" != first
    assert mlflow_store.client(second).search_runs([mlflow_store.ensure_experiment(second, "e", str(tmp_path / "b"))]) == []
    assert mlflow_store.client(first).get_run(run.info.run_id).info.run_id == run.info.run_id


def test_resolve_explains_a_missing_model(tmp_path):
    uri = mlflow_store.tracking_uri(HomeConfig(root=str(tmp_path)))
    with pytest.raises(ModelNotFoundError, match="no such model version"):
        mlflow_store.resolve(uri, "ctr@champion")
    with pytest.raises(ModelNotFoundError, match="expected `name@alias`"):
        mlflow_store.resolve(uri, "not a model uri")


def test_explicit_tracking_uri_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert mlflow_store.tracking_uri(HomeConfig(root=str(tmp_path))) == "http://tracking:5000"
    assert mlflow_store.tracking_uri(HomeConfig(root=str(tmp_path), tracking_uri="sqlite:///x.db")) == "sqlite:///x.db"
