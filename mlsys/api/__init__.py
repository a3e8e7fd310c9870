"""The Python API: the layer the command line calls, and the one notebooks and jobs use.

It is the composition root: Hydra overrides become a typed
:class:`~mlsys.api.config.MlsysConfig` here (:func:`compose_config`), and
objects built from it are passed down to the pipeline and the stages.

>>> import mlsys
>>> result = mlsys.run_pipeline(["train.max_epochs=1"])                      # doctest: +SKIP
>>> print(mlsys.explain_pipeline(["model.embed_dim=32"]))                    # doctest: +SKIP
>>> mlsys.load_model("models:/ctr@champion").rank(1, [50, 172, 181], k=2)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from mlsys.api.config import MlsysConfig, compose_config
from mlsys.pipeline.runner import PipelineResult
from mlsys.serve.ranker import Engine, RankingModel

__all__ = ["MlsysConfig", "compose_config", "explain_pipeline", "load_model", "run_pipeline"]


def run_pipeline(overrides: list[str] | None = None, echo: Callable[[str], None] = print) -> PipelineResult:
    """Compose the Hydra config with ``overrides`` and run its pipeline on Ray.

    >>> result = run_pipeline(["model.embed_dim=32"])   # doctest: +SKIP
    >>> [(s.name, s.status) for s in result.steps]      # doctest: +SKIP
    [('ingest', 'cached'), ('transform', 'cached'), ('train', 'ran'), ...]
    """
    from mlsys.api.pipeline import execute_pipeline

    return execute_pipeline(compose_config(overrides), overrides or [], echo)


def explain_pipeline(overrides: list[str] | None = None) -> str:
    """What :func:`run_pipeline` with ``overrides`` would reuse or run, and why; runs nothing.

    >>> print(explain_pipeline(["model.embed_dim=32"]))  # doctest: +SKIP
    ingest      reuse  1c8316623cae  (computed in run 178a32c41f57)
    train       run    5be1f1f8a0c2  config model.embed_dim: 16 -> 32
    """
    from mlsys.api.pipeline import explain

    return explain(compose_config(overrides))


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
