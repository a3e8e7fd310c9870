"""MLflow edge: tracking store location, experiments, model versions and aliases.

The embedded default keeps MLflow's metadata in SQLite under ``MLSYS_HOME``
and its artifacts beside it; a cluster points ``MLFLOW_TRACKING_URI`` (or
``home.tracking_uri``) at a tracking server.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from mlsys import storage
from mlsys.errors import ModelNotFoundError
from mlsys.config import HomeConfig

class Tag:
    """The MLflow tag names mlsys writes on runs and model versions (lineage, the CLI and the dashboard read them)."""

    PARENT = "mlflow.parentRunId"  # MLflow's own: a step run's pipeline run
    PIPELINE = "mlsys.pipeline"
    OVERRIDES = "mlsys.overrides"
    SWEEP = "mlsys.sweep"  # on the pipeline runs of one `mlsys run -m` sweep: its id (filter: tags."mlsys.sweep" = '<id>')
    STEP = "mlsys.step"
    FINGERPRINT = "mlsys.fingerprint"  # on step runs and on the model version they registered
    INPUTS = "mlsys.inputs"  # JSON: the upstream outputs a step read
    OUTPUTS = "mlsys.outputs"  # JSON: the artifact URIs a step wrote
    CACHED = "mlsys.cached"
    CACHED_FROM = "mlsys.cached_from_run"
    REASON = "mlsys.reason"  # why a step ran (see mlsys run --explain)
    WARM_START = "mlsys.warm_start"
    RESOURCES = "mlsys.resources"  # JSON: what a step's Ray task asked for (num_cpus, num_gpus, memory, resources)

    @staticmethod
    def step_fact(name: str) -> str:
        """A tag a step sets about its own run (``StepContext.set_tag``): ``mlsys.<name>``."""
        return f"mlsys.{name}"


_MODEL_URI = re.compile(r"^(?:models:/)?(?P<name>[A-Za-z0-9_.-]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))$")


def tracking_uri(home: HomeConfig) -> str:
    if home.tracking_uri:
        return home.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = storage.absolute(home.root)
    if "://" in root:
        raise ModelNotFoundError(root, "a remote MLSYS_HOME needs a tracking server: set MLFLOW_TRACKING_URI")
    os.makedirs(root, exist_ok=True)
    return f"sqlite:///{root}/mlflow.db"


def client(uri: str):
    """A client bound to ``uri``. Never ``mlflow.set_tracking_uri``: it also sets the
    MLFLOW_TRACKING_URI environment variable, so every later home in the process
    (a notebook, a test session) would silently write to the first one's store."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(uri: str, name: str, artifact_root: str) -> str:
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return c.create_experiment(name, artifact_location=storage.join(storage.absolute(artifact_root), name))


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    source: str
    run_id: str


def register(uri: str, run_id: str, package_dir: str, name: str, alias: str | None, tags: dict) -> ResolvedModel:
    """Log the package into the run's artifacts and make it a registered version."""
    from mlflow.exceptions import MlflowException

    c = client(uri)
    c.log_artifacts(run_id, package_dir, artifact_path="package")
    source = storage.join(c.get_run(run_id).info.artifact_uri, "package")
    try:
        c.create_registered_model(name)
    except MlflowException as e:
        if "already exists" not in str(e).lower() and getattr(e, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = c.create_model_version(name, source=source, run_id=run_id, tags={k: str(v) for k, v in tags.items()})
    if alias:
        c.set_registered_model_alias(name, alias, mv.version)
    return ResolvedModel(name, str(mv.version), source, run_id)


def resolve(uri: str, model: str) -> ResolvedModel:
    """``models:/ctr@champion``, ``ctr@champion`` or ``ctr/3`` -> its version and package source."""
    from mlflow.exceptions import MlflowException

    m = _MODEL_URI.match(model)
    if not m:
        raise ModelNotFoundError(model, "expected `name@alias`, `name/version` or `models:/name@alias`")
    c = client(uri)
    try:
        if m["alias"]:
            mv = c.get_model_version_by_alias(m["name"], m["alias"])
        else:
            mv = c.get_model_version(m["name"], m["version"])
    except MlflowException as e:
        raise ModelNotFoundError(model, f"the registry at {uri} has no such model version ({e.message.splitlines()[0]})") from None
    source = mv.source
    if source.startswith("file://"):
        source = source[len("file://"):]
    return ResolvedModel(m["name"], str(mv.version), source, mv.run_id)
