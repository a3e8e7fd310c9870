"""Evaluation of model packages on a labelled split: one package's metrics (the pipeline's ``evaluate``
step), or the candidate beside the champion, sliced, with confidence intervals (the ``bless`` step)."""

from __future__ import annotations

import pandas as pd

from mlsys.evaluate.config import EvaluateConfig
from mlsys.evaluate.metrics import ctr_metrics
from mlsys.evaluate.slices import Evaluation, compare, slice_frame
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


def evaluate_candidate(candidate_package: str, champion_package: str | None, train_uri: str, eval_uri: str,
                       cfg: EvaluateConfig, threads: int = 2) -> Evaluation:
    """The candidate and (when there is one) the champion, each package's ONNX graph on the same eval rows,
    overall and per slice (user activity and item popularity from the training split, ``cfg.slices``).

    >>> ev = evaluate_candidate(".../package", champion_uri, ".../transform/<fp>/train", ".../transform/<fp>/eval",
    ...                         EvaluateConfig(slices=["gender"]))  # doctest: +SKIP
    >>> print(ev.table())  # doctest: +SKIP
    """
    frame = pd.read_parquet(eval_uri)
    train = pd.read_parquet(train_uri, columns=["user_id", "item_id"])  # slices need only the training counts
    slices = slice_frame(frame, train, cfg)  # before scoring: a bad evaluate.slices fails fast
    packages = {"candidate": candidate_package, **({"champion": champion_package} if champion_package else {})}
    scores = {name: PackageScorer(read_package(uri), engine="onnx", threads=threads).score(frame) for name, uri in packages.items()}
    return compare(frame, slices, scores, cfg)
