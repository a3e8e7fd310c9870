"""The pipeline's feature-store work: offline sources from ingested events, ``feast apply``,
and the point-in-time training set (label events + every feature of the ranking service).

>>> schema = FeatureSchema.of(data_cfg)  # doctest: +SKIP
>>> write_offline_sources(cfg, home, schema, events, users, items)  # doctest: +SKIP
{'user_profile': 943, 'item_profile': 1682, 'user_aggregates': 80000, 'user_sequence': 40000}
>>> build_training_set(cfg, home, schema, "/h/artifacts/ingest/.../events", "/h/artifacts/features/.../training_set")  # doctest: +SKIP
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlsys import storage
from mlsys.data.config import HistoryOf
from mlsys.data.feature_schema import FeatureSchema, Table
from mlsys.features import sources
from mlsys.features.config import FeaturesConfig
from mlsys.features.definitions import (
    PROFILE_TABLES, USER_AGGREGATES, USER_SEQUENCE, build_definitions, numeric_features, profile_views, source_path,
)
from mlsys.features.pit import ENTITY_TIMESTAMP
from mlsys.features.store import apply, store_paths, write_repo_config

# What the label events keep besides the schema's event features (request context);
# every other model input comes from the feature views.
LABEL_COLUMNS = ["user_id", "item_id", "timestamp", "label", "split"]


def label_columns(schema: FeatureSchema) -> list[str]:
    """The columns of the ingested events a training row keeps: roles, split, context features."""
    return [*LABEL_COLUMNS, *schema.context]


def build_features(cfg: FeaturesConfig, home: str, schema: FeatureSchema, events_uri: str, users_uri: str, items_uri: str,
                   training_set_uri: str) -> dict[str, float]:
    """The offline sources and ``feast apply`` under ``home``, then the PIT training set; returns metrics."""
    if schema.history_column:
        from mlsys.errors import ConfigError

        raise ConfigError(f"data.history_column={schema.history_column!r} (a given behaviour sequence) works with "
                          "features=none only: the feature store derives sequences from the events; unset one of the two")
    rows = write_offline_sources(cfg, home, schema, pd.read_parquet(events_uri), pd.read_parquet(users_uri),
                                 pd.read_parquet(items_uri))
    labels = build_training_set(cfg, home, schema, events_uri, training_set_uri)
    return {**{f"source_rows_{v}": n for v, n in rows.items()}, "training_rows": labels}


def write_offline_sources(cfg: FeaturesConfig, home: str, schema: FeatureSchema, events: pd.DataFrame,
                          users: pd.DataFrame, items: pd.DataFrame) -> dict[str, int]:
    """Write the Parquet sources of ``schema``'s views under the store, generate its config, ``feast apply``.

    ``users``/``items`` are the ingested side tables (key, then the schema's features of that
    table); a table without declared features has no view. Profiles are stamped one second
    before the first event, so every event sees them. Returns the rows written per view.
    """
    paths = write_repo_config(cfg, home)
    first = int(events["timestamp"].min()) - 1 if len(events) else 0
    side = {Table.users: users, Table.items: items}
    tables = {view: sources.profile_rows(side[PROFILE_TABLES[view]], schema, PROFILE_TABLES[view], first) for view in profile_views(schema)}
    tables[USER_AGGREGATES] = sources.user_aggregate_rows(events, cfg.window_days, cfg.ctr_window_days)
    tables[USER_SEQUENCE] = sources.user_sequence_rows(events, schema.history_length, HistoryOf(schema.history_of) is HistoryOf.events)
    for view, df in tables.items():
        storage.write_table(df, source_path(paths.sources, view))  # atomic: readers never see half a file
    apply(cfg, home, build_definitions(cfg, paths.sources, schema))
    return {view: len(df) for view, df in tables.items()}


def _with_event_timestamp(batch: pa.Table) -> pa.Table:
    seconds = batch["timestamp"].cast(pa.int64())
    return batch.append_column(ENTITY_TIMESTAMP, pa.compute.multiply(seconds, 1_000_000_000).cast(pa.timestamp("ns", tz="UTC")))


def build_training_set(cfg: FeaturesConfig, home: str, schema: FeatureSchema, events_uri: str, out_uri: str) -> int:
    """Label events of ``events_uri`` (with their context features) joined point-in-time with
    ``schema``'s views on Ray; written to ``out_uri``. Returns the rows written."""
    import ray

    from mlsys.features.offline import get_historical_features, view_specs

    paths = store_paths(cfg, home)
    labels = ray.data.read_parquet(events_uri, columns=label_columns(schema))
    labels = labels.map_batches(_with_event_timestamp, batch_format="pyarrow", batch_size=None)
    joined = get_historical_features(labels, view_specs(build_definitions(cfg, paths.sources, schema)), cfg.join_partitions)
    joined.write_parquet(out_uri)
    return int(pq.ParquetDataset(out_uri).read(columns=["label"]).num_rows)


def numeric_inputs(cfg: FeaturesConfig, schema: FeatureSchema) -> tuple[str, ...]:
    """The model's numeric inputs: the schema's numeric features, then the feature store's aggregates."""
    return numeric_features(cfg, schema) if cfg.enabled else schema.numeric
