"""The pipeline's feature-store work: offline sources from ingested events, ``feast apply``,
and the point-in-time training set (label events + every feature of the ranking service).

>>> store_dir = write_offline_sources(cfg, home, events, users, items, history_length=20)  # doctest: +SKIP
>>> build_training_set(cfg, home, "/h/artifacts/ingest/.../events", "/h/artifacts/features/.../training_set")  # doctest: +SKIP
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlsys import storage
from mlsys.features import sources
from mlsys.features.config import FeaturesConfig
from mlsys.features.definitions import (
    ITEM_PROFILE, USER_AGGREGATES, USER_PROFILE, USER_SEQUENCE, build_definitions, source_path,
)
from mlsys.features.pit import ENTITY_TIMESTAMP
from mlsys.features.store import apply, store_paths, write_repo_config

# What the label events keep; every other model input comes from the feature views.
LABEL_COLUMNS = ["user_id", "item_id", "timestamp", "label", "split"]


def build_features(cfg: FeaturesConfig, home: str, events_uri: str, users_uri: str, items_uri: str,
                   history_length: int, training_set_uri: str) -> dict[str, float]:
    """The offline sources and ``feast apply`` under ``home``, then the PIT training set; returns metrics."""
    rows = write_offline_sources(cfg, home, pd.read_parquet(events_uri), pd.read_parquet(users_uri),
                                 pd.read_parquet(items_uri), history_length)
    labels = build_training_set(cfg, home, events_uri, training_set_uri)
    return {**{f"source_rows_{v}": n for v, n in rows.items()}, "training_rows": labels}


def write_offline_sources(cfg: FeaturesConfig, home: str, events: pd.DataFrame, users: pd.DataFrame,
                          items: pd.DataFrame, history_length: int) -> dict[str, int]:
    """Write the four views' Parquet sources under the store, generate its config, ``feast apply``.

    Profiles are stamped one second before the first event, so every event sees them.
    Returns the rows written per view.
    """
    paths = write_repo_config(cfg, home)
    first = int(events["timestamp"].min()) - 1 if len(events) else 0
    tables = {
        USER_PROFILE: sources.profile_rows(users[["user_id", "age", "gender", "occupation"]], first),
        ITEM_PROFILE: sources.profile_rows(items[["item_id", "year", "genres"]], first),
        USER_AGGREGATES: sources.user_aggregate_rows(events, cfg.window_days, cfg.ctr_window_days),
        USER_SEQUENCE: sources.user_sequence_rows(events, history_length),
    }
    tables[ITEM_PROFILE]["genres"] = [list(g) if g is not None else None for g in tables[ITEM_PROFILE]["genres"]]
    for view, df in tables.items():
        storage.write_table(df, source_path(paths.sources, view))  # atomic: readers never see half a file
    apply(cfg, home, build_definitions(cfg, paths.sources))
    return {view: len(df) for view, df in tables.items()}


def _with_event_timestamp(batch: pa.Table) -> pa.Table:
    seconds = batch["timestamp"].cast(pa.int64())
    return batch.append_column(ENTITY_TIMESTAMP, pa.compute.multiply(seconds, 1_000_000_000).cast(pa.timestamp("ns", tz="UTC")))


def build_training_set(cfg: FeaturesConfig, home: str, events_uri: str, out_uri: str) -> int:
    """Label events of ``events_uri`` joined point-in-time with the views on Ray; written to ``out_uri``."""
    import ray

    from mlsys.features.offline import get_historical_features, view_specs

    paths = store_paths(cfg, home)
    labels = ray.data.read_parquet(events_uri, columns=LABEL_COLUMNS).map_batches(_with_event_timestamp, batch_format="pyarrow", batch_size=None)
    joined = get_historical_features(labels, view_specs(build_definitions(cfg, paths.sources)), cfg.join_partitions)
    joined.write_parquet(out_uri)
    return int(pq.ParquetDataset(out_uri).read(columns=["label"]).num_rows)



def numeric_inputs(cfg: FeaturesConfig) -> tuple[str, ...]:
    """The model's numeric inputs: the service's numbers with a feature store, else the profile's."""
    from mlsys.data.preprocessor import NUMERIC
    from mlsys.features.definitions import numeric_features

    return numeric_features(cfg) if cfg.enabled else NUMERIC
