"""Evaluation of a model package on a labelled split (the pipeline's ``evaluate`` step)."""

from __future__ import annotations

import pandas as pd

from mlsys.evaluate.metrics import ctr_metrics
from mlsys.registry.package import read_package
from mlsys.registry.scoring import PackageScorer


def evaluate_package(package_uri: str, split_uri: str, threads: int = 2) -> dict[str, float]:
    """AUC, per-user AUC, logloss and calibration of the package's ONNX graph on the split at ``split_uri``.

    >>> evaluate_package(".mlsys/artifacts/package/<fp>/package", ".mlsys/artifacts/transform/<fp>/eval")  # doctest: +SKIP
    {'auc': 0.78, 'user_auc': 0.69, 'logloss': 0.56, 'calibration': 1.05, 'rows': 19048.0}
    """
    frame = pd.read_parquet(split_uri)
    scores = PackageScorer(read_package(package_uri), engine="onnx", threads=threads).score(frame)
    return ctr_metrics(frame["user_id"].to_numpy(), frame["label"].to_numpy(), scores)
