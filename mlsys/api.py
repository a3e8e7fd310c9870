"""The Python API: run the pipeline, load a registered model and rank in-process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from mlsys.pipeline.runner import PipelineResult
from mlsys.serve.ranker import Engine, RankingModel


def run_pipeline(overrides: list[str] | None = None, echo: Callable[[str], None] = print) -> PipelineResult:
    """Compose the Hydra config with ``overrides`` and run its pipeline on Ray.

    >>> result = run_pipeline(["model.embed_dim=32"])   # doctest: +SKIP
    >>> [(s.name, s.status) for s in result.steps]      # doctest: +SKIP
    [('ingest', 'cached'), ('transform', 'cached'), ('train', 'ran'), ...]
    """
    from mlsys.cli.commands import execute_pipeline
    from mlsys.cli.config import compose_config

    return execute_pipeline(compose_config(overrides), overrides or [], echo)


def load_model(uri: str = "models:/ctr@champion", engine: Engine = "onnx", tracking_uri: str | None = None) -> RankingModel:
    """A registered model (``models:/ctr@champion``, ``ctr/3``) or a package folder, ready to ``.rank``.

    >>> load_model("models:/ctr@champion").rank(1, [50, 172, 181], k=2).items  # doctest: +SKIP
    """
    from mlsys.config import HomeConfig
    from mlsys.registry import mlflow_store
    from mlsys.registry.package import read_package

    if (Path(uri) / "manifest.json").exists():
        return RankingModel(read_package(uri), engine=engine)
    home = HomeConfig(root=os.environ.get("MLSYS_HOME", ".mlsys"), tracking_uri=tracking_uri)
    resolved = mlflow_store.resolve(mlflow_store.tracking_uri(home), uri)
    return RankingModel(read_package(resolved.source), engine=engine, version=resolved.version)
