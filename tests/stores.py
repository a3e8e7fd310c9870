"""A small real Feast store (SQLite online) under a home, built and materialized as the pipeline's
features and materialize steps do: three users, four items, three events at T0, T0+60 and T0+120."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlsys.features import FeaturesConfig
from mlsys.features.materialize import materialize
from mlsys.features.training import write_offline_sources
from tests.schemas import movielens_like

T0 = 880_000_000  # 1997-11-20


def small_store(home: str, project: str, **online) -> FeaturesConfig:
    """``online``: FeaturesConfig's online-store keys (``online="redis", redis_port=...``); SQLite by default."""
    features = FeaturesConfig(name="feast", project=project, **online)
    users = pd.DataFrame({"user_id": np.arange(1, 4, dtype=np.int64), "age": np.float32(30.0), "gender": "F", "occupation": "writer"})
    items = pd.DataFrame({"item_id": np.arange(1, 5, dtype=np.int64), "year": np.float32(1995.0), "genres": [["Drama"]] * 4})
    events = pd.DataFrame([(1, 1, T0, 5), (1, 2, T0 + 60, 2), (2, 1, T0 + 120, 4)], columns=["user_id", "item_id", "timestamp", "rating"])
    write_offline_sources(features, str(home), movielens_like(history_length=2), events.assign(label=(events.rating >= 4).astype(np.float32)),
                          users, items)
    materialize(features, str(home))
    return features
