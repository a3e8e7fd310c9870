"""The one batch scorer: raw feature rows in, click probabilities out, with a model package.

Evaluation, ``mlsys.load_model(...).rank``, serving and the gates score through
:class:`PackageScorer`, so what is measured offline is the graph that serves:
the package's fitted preprocessor, then ONNX Runtime (``engine="onnx"``, what
serving runs) or the trained torch module (``engine="torch"``, for checks).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from mlsys.models import MODEL_INPUTS
from mlsys.registry.package import ModelPackage

Engine = Literal["onnx", "torch"]


class PackageScorer:
    """``PackageScorer(read_package(uri)).score(frame)`` -> one probability per row.

    ``threads``: ONNX Runtime intra-op threads (1 for a serving replica; more for offline batches).
    """

    def __init__(self, package: ModelPackage, engine: Engine = "onnx", threads: int = 1):
        self.package = package
        self.engine = engine
        if engine == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            self._session = ort.InferenceSession(str(package.onnx_path), options, providers=["CPUExecutionProvider"])
        elif engine == "torch":
            self._module = package.torch_model()
        else:
            raise ValueError(f"engine must be 'onnx' or 'torch', got {engine!r}")

    def score(self, frame: pd.DataFrame, batch_size: int = 8192) -> np.ndarray:
        """Probabilities for the rows of ``frame`` (raw features, as in training), in batches of ``batch_size``."""
        if len(frame) <= batch_size:
            return self._score(frame)
        return np.concatenate([self._score(frame.iloc[i : i + batch_size]) for i in range(0, len(frame), batch_size)])

    def _score(self, frame: pd.DataFrame) -> np.ndarray:
        inputs = self.package.preprocessor.transform_batch(frame)
        if self.engine == "onnx":
            return self._session.run(["score"], {k: inputs[k] for k in MODEL_INPUTS})[0]
        import torch

        with torch.no_grad():
            return torch.sigmoid(self._module(*(torch.from_numpy(inputs[k]) for k in MODEL_INPUTS))).numpy()
