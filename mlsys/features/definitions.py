"""The ranking use case as Feast objects, generated from the data set's declared feature schema.

Nothing here names a data set's columns: the profile views hold whatever the
:class:`~mlsys.data.feature_schema.FeatureSchema` declares for the user and item tables.
API for the rest of mlsys (serving, push, logging)::

    from mlsys.features import FeaturesConfig, open_store, build_definitions, store_paths
    store = open_store(cfg, home)            # feast.FeatureStore; repo config generated under
                                             # $MLSYS_HOME/features/<project>/feature_store.yaml
    rows = [{"user_id": 1, "item_id": i} for i in (10, 20)]
    store.get_online_features(features=store.get_feature_service(RANKING_SERVICE), entity_rows=rows).to_dict()
    # -> {"user_id": [...], "item_id": [...], <user table features>, <item table features>,
    #     "clicks_7d": [...], ..., "history": [...]}

Objects (names are constants of this module):

- entities ``user`` (join key ``user_id``, int64) and ``item`` (``item_id``, int64);
- ``user_profile``: the schema's user-table features, ``item_profile``: its item-table features,
  typed by kind (categorical: string, numeric: float32, multi-hot: list of strings; no TTL).
  A table that declares no feature has no view and no source;
- ``user_aggregates``: per window W in ``features.window_days`` (default 7, 30)
  ``clicks_{W}d`` and ``events_{W}d`` float32 (counts), ``mean_rating_{W}d`` float32
  (null without ratings or events), and ``ctr_{C}d`` = clicks/events over ``features.ctr_window_days``;
  each row is stamped at one of the user's event times and covers the window ending there (inclusive);
  TTL ``features.aggregates_ttl_days``;
- ``user_sequence``: ``history``, the user's last L clicked item ids (L = ``data.history_length``;
  with ``data.history_of=events`` the items of every event), oldest first, stamped at the event
  time; TTL ``features.sequence_ttl_days`` (0 = none);
- push sources ``user_aggregates_push`` and ``user_sequence_push`` (``store.push(name, df)``):
  a frame with ``user_id``, ``event_timestamp`` and the view's features updates the online store;
- the feature service ``ranking`` (:data:`RANKING_SERVICE`): every view above, what the
  ranking model's looked-up inputs come from (the profiles' features by kind, ``history`` the
  behaviour sequence, the aggregates extra ``numeric`` inputs). The event table's own features
  (``schema.context``) are not looked up: they come with each request.

Offline sources are Parquet files (``event_timestamp`` UTC) under
``store_paths(cfg, home).sources``, written by the pipeline's ``features`` step.

>>> from mlsys.data.feature_schema import Feature, FeatureSchema, Kind, Table
>>> schema = FeatureSchema((Feature("device", Kind.categorical, Table.users),), {"user_id": "u", "item_id": "i",
...                        "timestamp": "t", "label": "y"})
>>> defs = build_definitions(FeaturesConfig(name="feast"), "/tmp/home/features/mlsys/sources", schema)
>>> [v.name for v in defs.views], [f.name for f in defs.view("user_profile").features]
(['user_profile', 'user_aggregates', 'user_sequence'], ['device'])
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from mlsys.data.feature_schema import HISTORY, ITEM, USER, FeatureSchema, Kind, Table
from mlsys.features.config import FeaturesConfig

USER_ENTITY, ITEM_ENTITY = "user", "item"
USER_KEY, ITEM_KEY = USER, ITEM  # the join keys are the schema's role columns
TIMESTAMP = "event_timestamp"  # the timestamp column of every offline source
USER_PROFILE, ITEM_PROFILE = "user_profile", "item_profile"
USER_AGGREGATES, USER_SEQUENCE = "user_aggregates", "user_sequence"
VIEWS = (USER_PROFILE, ITEM_PROFILE, USER_AGGREGATES, USER_SEQUENCE)  # every view there can be, in order
PROFILE_TABLES = {USER_PROFILE: Table.users, ITEM_PROFILE: Table.items}
PUSH_SOURCES = {USER_AGGREGATES: "user_aggregates_push", USER_SEQUENCE: "user_sequence_push"}
RANKING_SERVICE = "ranking"


def aggregate_columns(cfg: FeaturesConfig) -> tuple[str, ...]:
    """``('clicks_7d', 'events_7d', 'mean_rating_7d', 'clicks_30d', ..., 'ctr_30d')``."""
    per_window = tuple(f"{kind}_{w}d" for w in sorted(cfg.window_days) for kind in ("clicks", "events", "mean_rating"))
    return (*per_window, f"ctr_{cfg.ctr_window_days}d")


def numeric_features(cfg: FeaturesConfig, schema: FeatureSchema) -> tuple[str, ...]:
    """The model's numeric inputs with a feature store: the schema's numeric features, then the aggregates."""
    return (*schema.numeric, *aggregate_columns(cfg))


def profile_views(schema: FeatureSchema) -> dict[str, tuple[str, ...]]:
    """The profile views ``schema`` has, with their features: a table without features has none.

    >>> from mlsys.data.feature_schema import Feature, FeatureSchema, Kind, Table
    >>> profile_views(FeatureSchema((Feature("brand", Kind.categorical, Table.items),), {}))
    {'item_profile': ('brand',)}
    """
    views = {view: schema.table_features(table) for view, table in PROFILE_TABLES.items()}
    return {view: names for view, names in views.items() if names}


def view_names(schema: FeatureSchema) -> tuple[str, ...]:
    """The views of ``schema``'s definitions, in :data:`VIEWS` order."""
    return (*profile_views(schema), USER_AGGREGATES, USER_SEQUENCE)


@dataclass(frozen=True)
class Definitions:
    """Everything ``feast apply`` registers, in the order it is applied, and the schema it came from."""

    entities: tuple
    sources: tuple  # FileSource and PushSource objects
    views: tuple  # FeatureView objects, in VIEWS order
    service: object  # the FeatureService
    schema: FeatureSchema  # saved beside the store by `apply`: the store is reopened from it

    def objects(self) -> list:
        return [*self.entities, *self.sources, *self.views, self.service]

    def view(self, name: str):
        return next(v for v in self.views if v.name == name)


def source_path(sources_dir: str, view: str) -> str:
    """The offline Parquet file of one view: ``<sources>/<view>.parquet``."""
    return str(Path(sources_dir) / f"{view}.parquet")


def feast_dtype(kind: Kind):
    """The Feast type of a profile feature of ``kind`` (categorical values are stored as text)."""
    from feast.types import Array, Float32, String

    return {Kind.categorical: String, Kind.numeric: Float32, Kind.multi_hot: Array(String)}[Kind(kind)]


def build_definitions(cfg: FeaturesConfig, sources_dir: str, schema: FeatureSchema) -> Definitions:
    """The Feast objects of the ranking use case for ``schema``, reading Parquet under ``sources_dir``."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.types import Array, Float32, Int64

    user = Entity(name=USER_ENTITY, join_keys=[USER_KEY], value_type=ValueType.INT64, description="a user (the events' user role)")
    item = Entity(name=ITEM_ENTITY, join_keys=[ITEM_KEY], value_type=ValueType.INT64, description="an item (the events' item role)")
    entity_of = {USER_PROFILE: user, ITEM_PROFILE: item, USER_AGGREGATES: user, USER_SEQUENCE: user}
    names = view_names(schema)
    files = {v: FileSource(name=f"{v}_source", path=source_path(sources_dir, v), timestamp_field=TIMESTAMP) for v in names}
    pushes = {v: PushSource(name=PUSH_SOURCES[v], batch_source=files[v]) for v in PUSH_SOURCES}

    def days(n: int) -> timedelta:
        return timedelta(days=n)  # Feast reads timedelta(0) as "no TTL"

    fields = {view: [Field(name=f, dtype=feast_dtype(schema.kind(f))) for f in features] for view, features in profile_views(schema).items()}
    fields[USER_AGGREGATES] = [Field(name=c, dtype=Float32) for c in aggregate_columns(cfg)]
    fields[USER_SEQUENCE] = [Field(name=HISTORY, dtype=Array(Int64))]
    ttl = {USER_AGGREGATES: days(cfg.aggregates_ttl_days), USER_SEQUENCE: days(cfg.sequence_ttl_days)}
    views = tuple(
        FeatureView(name=v, entities=[entity_of[v]], ttl=ttl.get(v, days(0)), source=pushes.get(v, files[v]), schema=fields[v])
        for v in names
    )
    service = FeatureService(name=RANKING_SERVICE, features=list(views), description="inputs of the CTR ranking model")
    return Definitions((user, item), (*files.values(), *pushes.values()), views, service, schema)
