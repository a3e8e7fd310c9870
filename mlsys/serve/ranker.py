"""In-process scoring of one ranking request: the same code serves HTTP and
``mlsys.load_model(...).rank``. No Ray here.

A request is a user id, candidate item ids and its context (the schema's event
features, sent by the caller). A :class:`FeatureSource` turns the ids into raw
feature rows, one per candidate: :class:`PackageTables` reads the
model package's tables (the default, and ``features=none``);
:class:`mlsys.features.serving.OnlineFeatures` reads the Feast online store.
The package's fitted preprocessor encodes the rows exactly as in training;
unknown users or items fall back to its OOV/mean encoding and are counted,
never an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from mlsys.data.feature_schema import HISTORY, ITEM, USER, Table
from mlsys.errors import InvalidRequestError
from mlsys.features.request import FeatureSource, RequestFeatures, column_of, repeated, with_context
from mlsys.registry.package import ModelPackage
from mlsys.registry.scoring import Engine, PackageScorer


@dataclass(frozen=True)
class ScoredItem:
    item_id: int
    score: float


@dataclass(frozen=True)
class Ranking:
    items: list[ScoredItem]
    unknown_user: bool
    unknown_items: int
    # What was scored: the raw feature rows (candidate order) and their scores (for feature logging).
    features: pd.DataFrame = field(default=None, repr=False, compare=False)
    scores: np.ndarray = field(default=None, repr=False, compare=False)


class PackageTables:
    """Features from the model package's tables (user attributes and latest history, item attributes),
    the columns its declared feature schema names."""

    def __init__(self, package: ModelPackage):
        self.schema = package.preprocessor.schema
        self._users = package.users.set_index(USER)
        self._items = package.items.set_index(ITEM)

    def fetch(self, user_id: int, candidates: Sequence[int]) -> RequestFeatures:
        n = len(candidates)
        ids = np.asarray(candidates, dtype=np.int64)
        items = self._items.reindex(pd.Index(ids, name=ITEM))
        known_user = user_id in self._users.index
        user = self._users.loc[user_id] if known_user else None
        columns: dict = {USER: np.full(n, user_id, dtype=np.int64), ITEM: ids}
        for name in self.schema.table_features(Table.users):
            columns[name] = repeated(user[name] if known_user else None, self.schema.kind(name), n)
        for name in self.schema.table_features(Table.items):
            columns[name] = column_of(items[name], self.schema.kind(name))
        columns[HISTORY] = [list(user[HISTORY]) if known_user else []] * n
        unknown_items = int((~pd.Index(ids).isin(self._items.index)).sum())
        return RequestFeatures(pd.DataFrame(columns), not known_user, unknown_items)


class RankingModel:
    """``load_model("models:/ctr@champion").rank(42, [1, 2, 3], k=2)``.

    ``engine="onnx"`` (default, what serving runs) or ``"torch"`` (the trained
    module itself, for checks). ``features``: where request features come
    from (default: the package's tables).
    """

    def __init__(
        self,
        package: ModelPackage,
        engine: Engine = "onnx",
        version: str | None = None,
        max_candidates: int = 1000,
        features: FeatureSource | None = None,
    ):
        self.package = package
        self.version = version
        self.engine = engine
        self.max_candidates = max_candidates
        self.features = features or PackageTables(package)
        self.scorer = PackageScorer(package, engine)

    def request_frame(self, user_id: int, candidates: Sequence[int], context: dict | None = None) -> tuple[pd.DataFrame, bool, int]:
        """The raw feature rows for one request (one per candidate): looked-up features and the request's context."""
        got = self.features.fetch(user_id, candidates)
        return with_context(got.frame, self.package.preprocessor.schema, context), got.unknown_user, got.unknown_items

    def score_frame(self, frame: pd.DataFrame) -> np.ndarray:
        return self.scorer.score(frame)

    def rank(self, user_id: int, candidates: Sequence[int], k: int | None = None, context: dict | None = None) -> Ranking:
        """Score ``candidates`` for ``user_id``; best first, the top ``k`` if given.

        ``context``: the request's own features (the schema's event features, e.g. the device),
        ``{name: value}``; one not given is missing (the OOV bucket or the training mean).
        """
        _validate(user_id, candidates, k, self.max_candidates)
        frame, unknown_user, unknown_items = self.request_frame(int(user_id), [int(c) for c in candidates], context)
        scores = self.score_frame(frame)
        order = np.argsort(-scores, kind="stable")[: k or len(candidates)]
        return Ranking(
            items=[ScoredItem(int(frame[ITEM].iat[i]), float(scores[i])) for i in order],
            unknown_user=unknown_user,
            unknown_items=unknown_items,
            features=frame,
            scores=scores,
        )


def _validate(user_id, candidates, k, max_candidates: int) -> None:
    if isinstance(user_id, bool) or not isinstance(user_id, (int, np.integer)):
        raise InvalidRequestError(f"user_id must be an integer, got {user_id!r}")
    if not isinstance(candidates, (list, tuple, np.ndarray)) or len(candidates) == 0:
        raise InvalidRequestError("candidates must be a non-empty list of item ids")
    if len(candidates) > max_candidates:
        raise InvalidRequestError(f"candidates has {len(candidates)} items, more than the limit {max_candidates}; split the request")
    bad = [c for c in candidates if isinstance(c, bool) or not isinstance(c, (int, np.integer))]
    if bad:
        raise InvalidRequestError(f"candidates must be integer item ids, got {bad[0]!r}")
    if k is not None and (not isinstance(k, (int, np.integer)) or k < 1):
        raise InvalidRequestError(f"k must be a positive integer, got {k!r}")

