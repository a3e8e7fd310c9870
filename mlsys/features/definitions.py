"""The MovieLens ranking use case as Feast objects, built from config.

API for the rest of mlsys (serving, push, logging)::

    from mlsys.features import FeaturesConfig, open_store, build_definitions, store_paths
    store = open_store(cfg, home)            # feast.FeatureStore; repo config generated under
                                             # $MLSYS_HOME/features/<project>/feature_store.yaml
    rows = [{"user_id": 1, "item_id": i} for i in (10, 20)]
    store.get_online_features(features=store.get_feature_service(RANKING_SERVICE), entity_rows=rows).to_dict()
    # -> {"user_id": [...], "item_id": [...], "age": [...], "gender": [...], "occupation": [...],
    #     "year": [...], "genres": [...], "clicks_7d": [...], ..., "history": [...]}

Objects (names are constants of this module):

- entities ``user`` (join key ``user_id``, int64) and ``item`` (``item_id``, int64);
- ``user_profile``: ``age`` float32, ``gender`` string, ``occupation`` string (no TTL);
- ``item_profile``: ``year`` float32, ``genres`` list of strings (no TTL);
- ``user_aggregates``: per window W in ``features.window_days`` (default 7, 30)
  ``clicks_{W}d`` and ``events_{W}d`` float32 (counts), ``mean_rating_{W}d`` float32
  (null without ratings or events), and ``ctr_{C}d`` = clicks/events over ``features.ctr_window_days``;
  each row is stamped at one of the user's event times and covers the window ending there (inclusive);
  TTL ``features.aggregates_ttl_days``;
- ``user_sequence``: ``history``, the user's last L clicked item ids (L = ``data.history_length``),
  oldest first, stamped at the click time; TTL ``features.sequence_ttl_days`` (0 = none);
- push sources ``user_aggregates_push`` and ``user_sequence_push`` (``store.push(name, df)``):
  a frame with ``user_id``, ``event_timestamp`` and the view's features updates the online store;
- the feature service ``ranking`` (:data:`RANKING_SERVICE`): every feature above, what the
  ranking model's inputs come from (profile columns are categorical/numeric, ``genres`` and
  ``history`` the list inputs, the aggregates extra ``numeric`` inputs).

Offline sources are Parquet files (``event_timestamp`` UTC) under
``store_paths(cfg, home).sources``, written by the pipeline's ``features`` step.

>>> defs = build_definitions(FeaturesConfig(name="movielens"), "/tmp/home/features/mlsys/sources")
>>> [v.name for v in defs.views]
['user_profile', 'item_profile', 'user_aggregates', 'user_sequence']
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from mlsys.features.config import FeaturesConfig

USER, ITEM = "user", "item"
USER_KEY, ITEM_KEY = "user_id", "item_id"
TIMESTAMP = "event_timestamp"  # the timestamp column of every offline source
USER_PROFILE, ITEM_PROFILE = "user_profile", "item_profile"
USER_AGGREGATES, USER_SEQUENCE = "user_aggregates", "user_sequence"
VIEWS = (USER_PROFILE, ITEM_PROFILE, USER_AGGREGATES, USER_SEQUENCE)
PUSH_SOURCES = {USER_AGGREGATES: "user_aggregates_push", USER_SEQUENCE: "user_sequence_push"}
RANKING_SERVICE = "ranking"
HISTORY = "history"


def aggregate_columns(cfg: FeaturesConfig) -> tuple[str, ...]:
    """``('clicks_7d', 'events_7d', 'mean_rating_7d', 'clicks_30d', ..., 'ctr_30d')``."""
    per_window = tuple(f"{kind}_{w}d" for w in sorted(cfg.window_days) for kind in ("clicks", "events", "mean_rating"))
    return (*per_window, f"ctr_{cfg.ctr_window_days}d")


def numeric_features(cfg: FeaturesConfig) -> tuple[str, ...]:
    """The service's numeric model inputs: profile numbers, then the aggregates."""
    return ("age", "year", *aggregate_columns(cfg))


@dataclass(frozen=True)
class Definitions:
    """Everything ``feast apply`` registers, in the order it is applied."""

    entities: tuple
    sources: tuple  # FileSource and PushSource objects
    views: tuple  # FeatureView objects, in VIEWS order
    service: object  # the FeatureService

    def objects(self) -> list:
        return [*self.entities, *self.sources, *self.views, self.service]

    def view(self, name: str):
        return next(v for v in self.views if v.name == name)


def source_path(sources_dir: str, view: str) -> str:
    """The offline Parquet file of one view: ``<sources>/<view>.parquet``."""
    return str(Path(sources_dir) / f"{view}.parquet")


def build_definitions(cfg: FeaturesConfig, sources_dir: str) -> Definitions:
    """The Feast objects of the MovieLens ranking use case, reading Parquet under ``sources_dir``."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.types import Array, Float32, Int64, String

    user = Entity(name=USER, join_keys=[USER_KEY], value_type=ValueType.INT64, description="a MovieLens user")
    item = Entity(name=ITEM, join_keys=[ITEM_KEY], value_type=ValueType.INT64, description="a MovieLens movie")
    files = {v: FileSource(name=f"{v}_source", path=source_path(sources_dir, v), timestamp_field=TIMESTAMP) for v in VIEWS}
    pushes = {v: PushSource(name=PUSH_SOURCES[v], batch_source=files[v]) for v in PUSH_SOURCES}

    def days(n: int) -> timedelta:
        return timedelta(days=n)  # Feast reads timedelta(0) as "no TTL"

    views = (
        FeatureView(name=USER_PROFILE, entities=[user], ttl=days(0), source=files[USER_PROFILE],
                    schema=[Field(name="age", dtype=Float32), Field(name="gender", dtype=String),
                            Field(name="occupation", dtype=String)]),
        FeatureView(name=ITEM_PROFILE, entities=[item], ttl=days(0), source=files[ITEM_PROFILE],
                    schema=[Field(name="year", dtype=Float32), Field(name="genres", dtype=Array(String))]),
        FeatureView(name=USER_AGGREGATES, entities=[user], ttl=days(cfg.aggregates_ttl_days), source=pushes[USER_AGGREGATES],
                    schema=[Field(name=c, dtype=Float32) for c in aggregate_columns(cfg)]),
        FeatureView(name=USER_SEQUENCE, entities=[user], ttl=days(cfg.sequence_ttl_days), source=pushes[USER_SEQUENCE],
                    schema=[Field(name=HISTORY, dtype=Array(Int64))]),
    )
    service = FeatureService(name=RANKING_SERVICE, features=list(views), description="inputs of the CTR ranking model")
    return Definitions((user, item), (*files.values(), *pushes.values()), views, service)
