"""What a ranking request's features are: one raw feature row per candidate (no Ray, no Feast).

:class:`mlsys.serve.ranker.PackageTables` reads them from a model package,
:class:`mlsys.features.serving.OnlineFeatures` from the online store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import pandas as pd


@dataclass(frozen=True)
class RequestFeatures:
    """The raw feature rows of one request, one per candidate, and what was unknown."""

    frame: pd.DataFrame
    unknown_user: bool
    unknown_items: int


class FeatureSource(Protocol):
    """Where a request's raw features come from."""

    def fetch(self, user_id: int, candidates: Sequence[int]) -> RequestFeatures: ...
