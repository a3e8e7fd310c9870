"""Feature store on Feast: definitions generated from the data set's feature schema,
point-in-time training sets on Ray, materialization to the online store (SQLite or Redis).
See docs/features.md."""

from mlsys.features.config import FeatureSet, FeaturesConfig, OnlineStoreKind
from mlsys.features.definitions import RANKING_SERVICE, Definitions, build_definitions
from mlsys.features.store import StorePaths, apply, open_store, store_paths, stored_schema, write_repo_config

__all__ = [
    "FeatureSet",
    "FeaturesConfig",
    "OnlineStoreKind",
    "RANKING_SERVICE",
    "Definitions",
    "build_definitions",
    "StorePaths",
    "apply",
    "open_store",
    "store_paths",
    "stored_schema",
    "write_repo_config",
]
