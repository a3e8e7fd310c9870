"""Typed configuration of the feature store (the ``features`` Hydra group)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from mlsys.config import require


class FeatureSet(str, Enum):
    # Member names are the config values: OmegaConf validates enums by name.
    none = "none"  # the pipeline builds its own sequences (mlsys.data.events); no Feast store
    feast = "feast"  # Feast views generated from the data set's feature schema (mlsys.features.definitions)


class OnlineStoreKind(str, Enum):
    sqlite = "sqlite"
    redis = "redis"


@dataclass
class FeaturesConfig:
    """``features=feast features.online=redis features.redis_port=6380``.

    The Feast repo (``feature_store.yaml`` equivalent, registry, online SQLite
    file, offline Parquet sources) is generated under ``$MLSYS_HOME/features/<project>``.
    """

    name: FeatureSet = FeatureSet.none
    # Feast project: one store folder and one set of online tables/keys per project.
    project: str = "mlsys"
    online: OnlineStoreKind = OnlineStoreKind.sqlite
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    # Rolling windows of the user aggregates view (clicks and mean rating per window).
    window_days: list[int] = field(default_factory=lambda: [7, 30])
    # Click-through rate over this window (one of window_days).
    ctr_window_days: int = 30
    # TTL of the aggregates view: a label event sees an aggregate row at most this old.
    aggregates_ttl_days: int = 30
    # TTL of the behaviour sequence view; 0 = no limit (a user's last clicks never expire).
    sequence_ttl_days: int = 0
    # Partitions of the Ray point-in-time join; 0 = one per logical CPU of the cluster.
    join_partitions: int = 0
    # Materialize offline -> online at the end of the pipeline.
    materialize: bool = True

    def __post_init__(self):
        self.name, self.online = FeatureSet(self.name), OnlineStoreKind(self.online)  # plain strings from Python callers
        require(bool(self.project) and self.project.replace("_", "").isalnum(), "features.project", self.project,
                 "a non-empty name of letters, digits and underscores")
        require(1 <= self.redis_port <= 65535, "features.redis_port", self.redis_port, "a TCP port (1-65535)")
        require(len(self.window_days) >= 1 and all(d >= 1 for d in self.window_days), "features.window_days",
                 list(self.window_days), "a non-empty list of positive day counts")
        require(self.ctr_window_days in self.window_days, "features.ctr_window_days", self.ctr_window_days,
                 f"one of features.window_days {list(self.window_days)}")
        require(self.aggregates_ttl_days >= 1, "features.aggregates_ttl_days", self.aggregates_ttl_days, ">= 1")
        require(self.sequence_ttl_days >= 0, "features.sequence_ttl_days", self.sequence_ttl_days, ">= 0 (0 = no limit)")
        require(self.join_partitions >= 0, "features.join_partitions", self.join_partitions, ">= 0 (0 = one per CPU)")

    @property
    def enabled(self) -> bool:
        return FeatureSet(self.name) is not FeatureSet.none
