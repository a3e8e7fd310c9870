"""Request features from the online store: the ranker's :class:`~mlsys.serve.ranker.FeatureSource`
for ``features=feast``.

One request (a user, candidate items) is one :meth:`OnlineFeatureReader.read_many`
over every view of the ranking service: the user views for one key, the item
views for all candidates. The answer becomes the raw rows the preprocessor
reads, one per candidate, with the columns named as in the training set
(``user_id``, ``item_id`` and every feature of the service).

Defaults for what the store does not have (the same nulls the point-in-time
join gives a training row, encoded by the one fitted preprocessor):

==========================  ==========================================================
missing value of a          becomes
==========================  ==========================================================
string feature              ``None``: the out-of-vocabulary bucket
number feature              ``NaN``: the training mean after scaling
list feature                ``[]``: all padding (no multi-hot values, no behaviour history)
==========================  ==========================================================

A user with no row in any user view is *unknown*, an item with no row in any
item view likewise; both are scored and counted, never an error. A schema without
item-table features has no item view: then no item is looked up and none is unknown.

>>> source = OnlineFeatures(OnlineFeatureReader.from_store(store))     # doctest: +SKIP
>>> source.fetch(1, [50, 172]).frame.columns.tolist()                 # doctest: +SKIP
['user_id', 'item_id', <user features>, 'clicks_7d', ..., 'history', <item features>]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from mlsys.features.config import FeaturesConfig
from mlsys.features.definitions import ITEM_KEY, USER_KEY
from mlsys.features.online import OnlineFeatureReader, ViewSpec
from mlsys.features.push import FeaturePusher
from mlsys.features.request import RequestFeatures

_NUMBERS = {"FLOAT": np.float32, "DOUBLE": np.float64, "INT32": np.float64, "INT64": np.float64}


def _column(values: list, value_type: str, n_repeat: int | None = None):
    """A frame column with the documented defaults (see the module docstring)."""
    if value_type in _NUMBERS:
        array = np.array([np.nan if v is None else v for v in values], dtype=_NUMBERS[value_type])
        return np.repeat(array, n_repeat) if n_repeat is not None else array
    if value_type.endswith("_LIST"):
        values = [[] if v is None else v for v in values]
    return values * n_repeat if n_repeat is not None else values


class OnlineFeatures:
    """``OnlineFeatures(reader).fetch(user_id, candidates) -> RequestFeatures``."""

    def __init__(self, reader: OnlineFeatureReader):
        self.reader = reader
        self.user_views: list[ViewSpec] = [v for v in reader.views.values() if v.join_key == USER_KEY]
        self.item_views: list[ViewSpec] = [v for v in reader.views.values() if v.join_key == ITEM_KEY]

    def fetch(self, user_id: int, candidates: Sequence[int]) -> RequestFeatures:
        n = len(candidates)
        answers = self.reader.read_many([*((v.name, [user_id]) for v in self.user_views), *((v.name, candidates) for v in self.item_views)])
        columns: dict = {USER_KEY: np.full(n, user_id, dtype=np.int64), ITEM_KEY: np.asarray(candidates, dtype=np.int64)}
        user_found, items_found = False, np.full(n, not self.item_views)  # no item view: nothing to miss
        for view, answer in zip(self.user_views, answers[: len(self.user_views)]):
            user_found |= answer["_found"][0]
            for feature, value_type in zip(view.features, view.value_types):
                columns[feature] = _column(answer[feature], value_type, n_repeat=n)
        for view, answer in zip(self.item_views, answers[len(self.user_views) :]):
            items_found |= np.asarray(answer["_found"], dtype=bool)
            for feature, value_type in zip(view.features, view.value_types):
                columns[feature] = _column(answer[feature], value_type)
        return RequestFeatures(pd.DataFrame(columns), unknown_user=not user_found, unknown_items=int((~items_found).sum()))


@dataclass(frozen=True)
class OnlineStoreSpec:
    """What a serving replica needs to open the store: picklable, opened in the replica.

    The pusher follows the store's own feature schema (saved beside it when it was applied),
    so pushed events update the views exactly as the offline sources built them.
    """

    features: FeaturesConfig
    home: str

    def open(self) -> tuple[OnlineFeatures, FeaturePusher]:
        """The request feature source and the event pusher, sharing one reader."""
        from mlsys.features.store import open_store, stored_schema

        store = open_store(self.features, self.home)
        reader = OnlineFeatureReader.from_store(store)
        return OnlineFeatures(reader), FeaturePusher(store, self.features, stored_schema(self.features, self.home), reader)


def check_online_store(cfg: FeaturesConfig, home: str) -> None:
    """Fail before deploying, in one line, if the store was never built or Redis does not answer."""
    import os
    import socket

    from mlsys.errors import ConfigError
    from mlsys.features.config import OnlineStoreKind
    from mlsys.features.store import store_paths, stored_schema

    paths = store_paths(cfg, home)
    if not os.path.exists(paths.registry):
        raise ConfigError(f"features={cfg.name.value}: no feature store at {paths.root}; build it first with `mlsys run features={cfg.name.value}` (same home.root)")
    stored_schema(cfg, home)  # a store built before schemas were saved: the same one-line fix
    if OnlineStoreKind(cfg.online) is OnlineStoreKind.redis:
        try:
            socket.create_connection((cfg.redis_host, cfg.redis_port), timeout=2).close()
        except OSError as e:
            raise ConfigError(
                f"features.online=redis: no Redis answers at {cfg.redis_host}:{cfg.redis_port} ({e.strerror or e}); "
                "start redis-server or set features.redis_host / features.redis_port"
            ) from None
