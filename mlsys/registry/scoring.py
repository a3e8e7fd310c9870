"""The one batch scorer: raw feature rows (or their encoded model inputs) in, click probabilities out.

Evaluation, ``mlsys.load_model(...).rank``, serving, batch prediction and the gates
score through :class:`PackageScorer`, so what is measured offline is the graph that
serves: the package's fitted preprocessor, then one of its engines:

- ``onnx``: the fused ``model.onnx`` on ONNX Runtime (what a fused replica runs);
- ``split``: the sparse half in NumPy, then ``dense.onnx`` (what the split graph's
  embedding and dense deployments run, here in one process);
- ``torch``: the trained torch module itself, for checks.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from mlsys.models import MODEL_INPUTS
from mlsys.registry.package import ModelPackage

Engine = Literal["onnx", "split", "torch"]
ENGINES = ("onnx", "split", "torch")


class PackageScorer:
    """``PackageScorer(read_package(uri)).score(frame)`` -> one probability per row.

    ``threads``: ONNX Runtime intra-op threads (1 for a serving replica; more for offline batches).
    ``providers``: ONNX Runtime execution providers, best first (e.g. ``["CUDAExecutionProvider"]``).
    """

    def __init__(self, package: ModelPackage, engine: Engine = "onnx", threads: int = 1, providers: list[str] | None = None):
        from mlsys.registry.onnx_graphs import onnx_session

        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.package = package
        self.engine = engine
        if engine == "onnx":
            self._session = onnx_session(package.onnx_path, threads, providers)
        elif engine == "split":
            from mlsys.registry.halves import DenseScorer, SparseLookup

            self._sparse = SparseLookup.load(package.path)
            self._dense = DenseScorer(package.path, threads, providers)
        else:
            self._module = package.torch_model()

    def score(self, frame: pd.DataFrame, batch_size: int = 8192) -> np.ndarray:
        """Probabilities for the rows of ``frame`` (raw features, as in training), in batches of ``batch_size``."""
        if len(frame) <= batch_size:
            return self._score(frame)
        return np.concatenate([self._score(frame.iloc[i : i + batch_size]) for i in range(0, len(frame), batch_size)])

    def _score(self, frame: pd.DataFrame) -> np.ndarray:
        return self.score_inputs(self.package.preprocessor.transform_batch(frame))

    def score_inputs(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities for encoded model inputs (``{name: array}`` for :data:`~mlsys.models.MODEL_INPUTS`)."""
        if self.engine == "onnx":
            return self._session.run(["score"], {k: inputs[k] for k in MODEL_INPUTS})[0]
        if self.engine == "split":
            return self._dense.score(self._sparse(*(inputs[k] for k in MODEL_INPUTS)))
        import torch

        with torch.no_grad():
            return torch.sigmoid(self._module(*(torch.from_numpy(inputs[k]) for k in MODEL_INPUTS))).numpy()
