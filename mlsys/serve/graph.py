"""The inference graph's stages as plain Python: what each Serve deployment holds and runs.

``mlsys/serve/app.py`` wraps these in deployments; here they are tested without a cluster.

- :class:`EmbeddingStage`: the package's sparse half (the embedding table, NumPy), encoded
  model inputs -> :class:`Embedded` (SparseOutput tensors tagged with the package's identity);
- :class:`DenseStage`: the dense half (``dense.onnx``), a batch of :class:`Embedded` -> scores,
  refusing rows embedded by another package (the halves of a version move together);
- :class:`FusedStage`: the fused graph, a batch of encoded inputs -> scores (one replica);
- :func:`user_side_scorer`: for DIN and bst_cached, the user side once per request (and cached).

Batches are lists of requests (what ``@serve.batch`` hands a method): their rows are
concatenated, scored in one ONNX Runtime call, and split back per request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from mlsys.errors import VersionMismatchError
from mlsys.registry.package import ModelPackage
from mlsys.registry.scoring import PackageScorer


def package_identity(package: ModelPackage) -> str:
    """A short digest of every file of the package (from its verified manifest): two packages with
    the same identity score identically."""
    return hashlib.sha256(json.dumps(package.manifest["files"], sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Embedded:
    """What the embedding deployment sends the dense one: SparseOutput tensors of some rows, and
    the identity of the package whose table embedded them."""

    package: str
    tensors: dict[str, np.ndarray]


def concat_rows(parts: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Requests' arrays stacked along the row axis, and each request's row count."""
    sizes = [len(next(iter(p.values()))) for p in parts]
    if len(parts) == 1:
        return parts[0], sizes
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}, sizes


def split_rows(scores: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """``scores`` of stacked requests, back per request."""
    return np.split(scores, np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [scores]


class EmbeddingStage:
    """``EmbeddingStage(package)(inputs) -> Embedded``: the sparse half on a CPU replica."""

    def __init__(self, package: ModelPackage):
        from mlsys.models import MODEL_INPUTS
        from mlsys.registry.halves import SparseLookup

        self.identity = package_identity(package)
        self._inputs = MODEL_INPUTS
        self._lookup = SparseLookup.load(package.path)

    def __call__(self, inputs: dict[str, np.ndarray]) -> Embedded:
        return Embedded(self.identity, self._lookup(*(inputs[k] for k in self._inputs)))


class DenseStage:
    """``DenseStage(package).score([Embedded, ...]) -> [scores, ...]``: the dense half, batched."""

    def __init__(self, package: ModelPackage, threads: int = 1, providers: list[str] | None = None):
        from mlsys.registry.halves import DenseScorer

        self.identity = package_identity(package)
        self._dense = DenseScorer(package.path, threads, providers)
        self.providers = self._dense.session.get_providers()

    def score(self, batch: list[Embedded]) -> list[np.ndarray]:
        for part in batch:
            if part.package != self.identity:
                raise VersionMismatchError("dense", self.identity, part.package)
        tensors, sizes = concat_rows([part.tensors for part in batch])
        return split_rows(self._dense.score(tensors), sizes)


class FusedStage:
    """``FusedStage(scorer).score([inputs, ...]) -> [scores, ...]``: the fused graph, batched."""

    def __init__(self, scorer: PackageScorer):
        self._scorer = scorer

    def score(self, batch: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        inputs, sizes = concat_rows(batch)
        return split_rows(self._scorer.score_inputs(inputs), sizes)


def user_side_scorer(package: ModelPackage, cache_size: int):
    """The package's user-side scorer (DIN, bst_cached: the user's side encoded once per request, kept for
    ``cache_size`` users), or None for a model without one (:mod:`mlsys.registry.user_side`)."""
    from mlsys.registry.user_side import UserSideScorer, UserStateCache

    if not UserSideScorer.available(package.path):
        return None
    return UserSideScorer(package.path, package.spec, UserStateCache(max(cache_size, 1)))


@dataclass(eq=False)  # compared and hashed by identity: one object per loaded version
class ServedVersion:
    """One model version as the ingress serves it: its package, ranker (feature fetch and encoding),
    v2 signature, fused scorer and user side. Built whole before it serves a request, and
    replaced whole (a release never mixes two versions' parts)."""

    version: str | None  # None: a package served by path
    uri: str
    ranker: object  # mlsys.serve.ranker.RankingModel
    identity: str
    signature: object  # mlsys.serve.v2.Signature
    fused: FusedStage
    user_side: object  # UserSideScorer | None
    kinds: dict | None = None  # feature -> FeatureKind of the training statistics (online sketches type columns alike)

    @classmethod
    def load(cls, uri: str, version: str, max_candidates: int, features=None, user_cache_size: int = 0,
             user_side: bool = True) -> "ServedVersion":
        """Read and verify the package at ``uri`` (checksums: a corrupt one raises) and build its parts."""
        from mlsys.registry.package import read_package
        from mlsys.serve.ranker import RankingModel
        from mlsys.serve.v2 import Signature

        package = read_package(uri)
        ranker = RankingModel(package, engine="onnx", version=version, max_candidates=max_candidates, features=features)
        training = package.training_statistics()
        return cls(version if version is None else str(version), uri, ranker, package_identity(package), Signature.of(package.preprocessor.schema),
                   FusedStage(ranker.scorer), user_side_scorer(package, user_cache_size) if user_side else None,
                   {name: f.kind for name, f in training.features.items()} if training is not None else None)


class StageCache:
    """The embedding or dense deployment's stages by package URI, the most recent ``size`` kept:
    while a release switches, requests of the old and the new version are both served."""

    def __init__(self, build, size: int = 3):
        import threading
        from collections import OrderedDict

        self._build, self._size = build, size
        self._stages: "OrderedDict[str, object]" = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, uri: str):
        with self._lock:
            stage = self._stages.get(uri)
            if stage is None:
                stage = self._stages[uri] = self._build(uri)
                while len(self._stages) > self._size:
                    self._stages.popitem(last=False)
            else:
                self._stages.move_to_end(uri)
            return stage

    def __len__(self) -> int:
        return len(self._stages)
