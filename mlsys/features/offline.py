"""Point-in-time correct training sets on Ray: the offline store's Ray edge.

:func:`get_historical_features` is our counterpart of Feast's
``FeatureStore.get_historical_features``: label events (a Ray Dataset with the
views' join keys and ``event_timestamp``) in, the same rows with every
feature of the views out, joined as-of in Ray tasks (:mod:`mlsys.features.pit`,
strictly earlier rows within the TTL). A view of at most ``broadcast_rows``
rows is read once and sent whole to every task, which joins one slice of the
label rows (no shuffle); a larger view costs one hash shuffle per join key:
label blocks and view rows are split into ``partitions`` buckets by key and
each bucket is joined in one task. Row order is not kept.

>>> ds = get_historical_features(events, view_specs(build_definitions(cfg, paths.sources, schema)))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from mlsys.features.pit import ViewSpec, join_views


def view_specs(definitions) -> list[ViewSpec]:
    """What the join needs of each Feast ``FeatureView`` of ``definitions`` (in order)."""
    keys = {e.name: e.join_key for e in definitions.entities}
    specs = []
    for fv in definitions.views:
        source = fv.batch_source
        ttl = int(fv.ttl.total_seconds()) if fv.ttl else None
        specs.append(ViewSpec(fv.name, keys[fv.entities[0]], source.path, tuple(f.name for f in fv.features),
                              source.timestamp_field, ttl or None))
    return specs


def _buckets(table: pa.Table, key: str, n: int) -> list[pa.Table]:
    """``table`` split into ``n`` tables by a hash of ``key``."""
    bucket = (pd.util.hash_array(table[key].to_numpy(zero_copy_only=False)) % np.uint64(n)).astype(np.int64)
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(n + 1))
    table = table.take(order)
    return [table.slice(bounds[i], bounds[i + 1] - bounds[i]) for i in range(n)]


@ray.remote(num_cpus=1)
def _split_block(table: pa.Table, key: str, n: int):
    parts = _buckets(table, key, n)
    return parts[0] if n == 1 else tuple(parts)


@ray.remote(num_cpus=1)
def _split_source(path: str, columns: list[str], key: str, n: int):
    parts = _buckets(pq.read_table(path, columns=columns), key, n)
    return parts[0] if n == 1 else tuple(parts)


@ray.remote(num_cpus=1)
def _slice_block(table: pa.Table, n: int):
    step = -(-table.num_rows // n)
    parts = [table.slice(i * step, step) for i in range(n)]
    return parts[0] if n == 1 else tuple(parts)


@ray.remote(num_cpus=1)
def _read_source(path: str, columns: list[str]) -> pa.Table:
    return pq.read_table(path, columns=columns)


@ray.remote(num_cpus=1)
def _join_bucket(views: list[ViewSpec], n_entity: int, *pieces: pa.Table) -> pa.Table:
    entities = pa.concat_tables(pieces[:n_entity], promote_options="default")
    rows = {v.name: pieces[n_entity + i] for i, v in enumerate(views)}
    return join_views(entities.combine_chunks(), rows, views)


def _split(task, args: tuple, n: int) -> list:
    refs = task.options(num_returns=n).remote(*args)
    return [refs] if n == 1 else list(refs)


BROADCAST_ROWS = 5_000_000  # views up to this size go whole to every join task


def _columns(view: ViewSpec) -> list[str]:
    return [view.key, view.timestamp, *view.features]


def _slices(refs: list, n: int) -> list:
    """At least ``n`` pieces of the label blocks, so every CPU has a slice to join."""
    if len(refs) >= n:
        return refs
    per_block = -(-n // len(refs))
    return [piece for r in refs for piece in _split(_slice_block, (r, per_block), per_block)]


def join_refs(entity_refs: list, views: Sequence[ViewSpec], partitions: int, broadcast_rows: int = BROADCAST_ROWS) -> list:
    """Arrow table refs of the entity rows with all ``views`` joined."""
    small = [v for v in views if pq.ParquetFile(v.path).metadata.num_rows <= broadcast_rows]
    refs = list(entity_refs)
    if small:
        sources = [_read_source.remote(v.path, _columns(v)) for v in small]
        refs = [_join_bucket.remote(small, 1, piece, *sources) for piece in _slices(refs, partitions)]
    large = [v for v in views if v not in small]
    for key in dict.fromkeys(v.key for v in large):
        stage = [v for v in large if v.key == key]
        entity_parts = [_split(_split_block, (r, key, partitions), partitions) for r in refs]
        view_parts = [_split(_split_source, (v.path, _columns(v), key, partitions), partitions) for v in stage]
        refs = [
            _join_bucket.remote(stage, len(entity_parts), *(p[b] for p in entity_parts), *(p[b] for p in view_parts))
            for b in range(partitions)
        ]
    return refs


def default_partitions() -> int:
    """One bucket per logical CPU of the cluster (at least 2), as every grouped map of the data stage."""
    from mlsys.data.datasets import partitions

    return partitions()


def get_historical_features(entities: ray.data.Dataset, views: Sequence[ViewSpec], partitions: int = 0,
                            broadcast_rows: int = BROADCAST_ROWS) -> ray.data.Dataset:
    """``entities`` (join keys + ``event_timestamp``) with every feature of ``views``, point-in-time correct."""
    missing = [c for c in {v.key for v in views} | {"event_timestamp"} if c not in entities.schema().names]
    if missing:
        raise ValueError(f"the label events lack the columns {missing} the feature views join on")
    refs = join_refs(entities.to_arrow_refs(), views, partitions or default_partitions(), broadcast_rows)
    return ray.data.from_arrow_refs(refs)
