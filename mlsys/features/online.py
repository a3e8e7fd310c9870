"""The serving read path: Feast's online store, read directly and in batches.

Feast's ``get_online_features`` resolves the registry, converts every entity
row to protobufs and back to Python, and wraps the answer, on every call.
Serving one ranking request needs one user and ~100 items from fixed feature
views, so :class:`OnlineFeatureReader` does that work once, at start:
the views, their tables (SQLite) or hash fields (Redis), each feature's value
decoder and the entity key prefix. A read is then one query per view on
SQLite, or one Redis pipeline (one round trip) for every view and key,
reading exactly the bytes Feast wrote (same tables, same keys, same
``ValueProto`` values), so what it returns equals ``get_online_features``.

Like Feast's online read, it does not apply view TTLs (materialization and
pushes decide what is online). A key with no row in a view reads as ``None``
(Feast answers nulls); :mod:`mlsys.features.serving` turns those into the
documented defaults.

>>> reader = OnlineFeatureReader.from_store(open_store(cfg, home))           # doctest: +SKIP
>>> reader.read("item_profile", [1, 2, 99999])["price"]                      # doctest: +SKIP
[9.99, 4.5, None]
"""

from __future__ import annotations

import sqlite3
import struct
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Protocol, Sequence

Decoder = Callable[[bytes], Any]


def _decoder(value_type_name: str) -> Decoder:
    """A function from ``ValueProto`` bytes to a Python value (``None`` when unset).

    ``value_type_name`` is Feast's ``ValueType`` name: ``FLOAT`` reads
    ``float_val``, ``INT64_LIST`` reads ``int64_list_val.val`` as a list.
    """
    from feast.protos.feast.types.Value_pb2 import Value

    field, parse = f"{value_type_name.lower()}_val", Value.FromString
    if value_type_name.endswith("_LIST"):

        def decode(raw: bytes):
            proto = parse(raw)
            return list(getattr(proto, field).val) if proto.HasField(field) else None
    else:

        def decode(raw: bytes):
            proto = parse(raw)
            return getattr(proto, field) if proto.HasField(field) else None

    return decode


@dataclass(frozen=True)
class ViewSpec:
    """One feature view as the reader needs it: where its rows are and how to decode them."""

    name: str
    join_key: str
    features: tuple[str, ...]
    value_types: tuple[str, ...]  # Feast ValueType names, aligned with features
    table: str  # SQLite table: "<project>_<view>"

    def decoders(self) -> dict[str, Decoder]:
        return {f: _decoder(t) for f, t in zip(self.features, self.value_types)}


class EntityKeys:
    """Feast's serialized entity keys (version 3) for one int64 join key, without protobufs.

    ``EntityKeys("user_id").encode(7) == feast serialize_entity_key(EntityKey(["user_id"], [Value(int64_val=7)]))``
    """

    def __init__(self, join_key: str):
        from feast.infra.key_encoding_utils import serialize_entity_key_prefix
        from feast.protos.feast.types.Value_pb2 import ValueType

        self._prefix = serialize_entity_key_prefix([join_key], 3) + struct.pack("<II", ValueType.INT64, 8)

    def encode(self, value: int) -> bytes:
        return self._prefix + struct.pack("<q", value)


Row = dict  # feature name -> ValueProto bytes
Batch = Sequence[tuple[ViewSpec, Sequence[bytes]]]


class OnlineTables(Protocol):
    """Raw rows of an online store: for each (view, keys), a row (or ``None``) per key, in order."""

    def read_rows(self, batch: Batch) -> list[list[Row | None]]: ...

    def read_timestamp(self, view: ViewSpec, key: bytes) -> datetime | None: ...


class SqliteTables:
    """Feast's SQLite layout: a table per view, a row per (entity key, feature)."""

    def __init__(self, path: str):
        # Autocommit, so reads never hold a transaction open; WAL (set by apply) lets them run beside writers.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()  # one connection, shared by the replica's request threads

    def read_rows(self, batch: Batch) -> list[list[Row | None]]:
        out = []
        with self._lock:
            for view, keys in batch:
                rows: dict[bytes, Row] = {}
                sql = f'SELECT entity_key, feature_name, value FROM "{view.table}" WHERE entity_key IN ({",".join("?" * len(keys))})'
                for key, feature, value in self._conn.execute(sql, list(keys)):
                    rows.setdefault(key, {})[feature] = value
                out.append([rows.get(k) for k in keys])
        return out

    def read_timestamp(self, view: ViewSpec, key: bytes) -> datetime | None:
        with self._lock:
            row = self._conn.execute(f'SELECT max(event_ts) FROM "{view.table}" WHERE entity_key = ?', [key]).fetchone()
        if row is None or row[0] is None:
            return None
        value = row[0]  # Feast's adapter stores epoch seconds; older files hold ISO text
        return datetime.fromtimestamp(value, timezone.utc) if isinstance(value, (int, float)) else datetime.fromisoformat(value).replace(tzinfo=timezone.utc)


class RedisTables:
    """Feast's Redis layout: a hash per entity key (+ project), a field per (view, feature) and ``_ts:<view>``."""

    def __init__(self, client, project: str):
        from feast.infra.online_stores.helpers import _mmh3

        self._client = client
        self._project = project.encode()
        self._mmh3 = _mmh3
        self._fields: dict[str, list[bytes]] = {}

    def _fields_of(self, view: ViewSpec) -> list[bytes]:
        if view.name not in self._fields:
            self._fields[view.name] = [self._mmh3(f"{view.name}:{f}") for f in view.features] + [f"_ts:{view.name}".encode()]
        return self._fields[view.name]

    def read_rows(self, batch: Batch) -> list[list[Row | None]]:
        with self._client.pipeline(transaction=False) as pipe:  # one round trip for everything
            for view, keys in batch:
                fields = self._fields_of(view)
                for key in keys:
                    pipe.hmget(key + self._project, fields)
            replies = iter(pipe.execute())
        out = []
        for view, keys in batch:
            rows: list[Row | None] = []
            for _ in keys:
                *values, ts = next(replies)
                rows.append(None if ts is None else {f: v for f, v in zip(view.features, values) if v is not None})
            out.append(rows)
        return out

    def read_timestamp(self, view: ViewSpec, key: bytes) -> datetime | None:
        from google.protobuf.timestamp_pb2 import Timestamp

        raw = self._client.hget(key + self._project, f"_ts:{view.name}")
        if raw is None:
            return None
        ts = Timestamp()
        ts.ParseFromString(raw)
        return ts.ToDatetime(tzinfo=timezone.utc)


def open_tables(repo_config) -> OnlineTables:
    """The :class:`OnlineTables` of a Feast ``RepoConfig`` (its online store: sqlite or redis)."""
    store = repo_config.online_store
    if store.type == "sqlite":
        path = store.path if repo_config.repo_path is None or store.path.startswith("/") else str(repo_config.repo_path / store.path)
        return SqliteTables(path)
    if store.type == "redis":
        from feast.infra.online_stores.redis import RedisOnlineStore
        from redis import Redis

        nodes, params = RedisOnlineStore._parse_connection_string(store.connection_string)
        return RedisTables(Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **params), repo_config.project)
    raise ValueError(f"online store type {store.type!r} is not supported by the direct reader (sqlite, redis)")


class OnlineFeatureReader:
    """Batched reads of a feature service's views (see the module docstring).

    ``read_many([("user_profile", [7]), ("item_profile", items)])`` reads several
    views in one go; each answer maps a feature name to one value per key,
    plus ``"_found"``: whether the key had a row in that view.
    """

    def __init__(self, views: Sequence[ViewSpec], tables: OnlineTables):
        self.views = {v.name: v for v in views}
        self.tables = tables
        self._decoders = {v.name: v.decoders() for v in views}
        self._keys = {k: EntityKeys(k) for k in {v.join_key for v in views}}

    @classmethod
    def from_store(cls, store, service: str | None = None) -> "OnlineFeatureReader":
        """The views of ``service`` (default: the ranking service) in a ``feast.FeatureStore``."""
        from mlsys.features.definitions import RANKING_SERVICE

        feature_service = store.get_feature_service(service or RANKING_SERVICE)
        config = store.config
        views = []
        for projection in feature_service.feature_view_projections:
            view = store.get_feature_view(projection.name)
            (entity,) = view.entities
            join_key = store.get_entity(entity).join_key
            fields = projection.features or view.features
            views.append(
                ViewSpec(
                    name=view.name,
                    join_key=join_key,
                    features=tuple(f.name for f in fields),
                    value_types=tuple(f.dtype.to_value_type().name for f in fields),
                    table=f"{config.project}_{view.name}",
                )
            )
        return cls(views, open_tables(config))

    def key(self, view: str, entity_id: int) -> bytes:
        return self._keys[self.views[view].join_key].encode(int(entity_id))

    def read_many(self, requests: Sequence[tuple[str, Sequence[int]]]) -> list[dict[str, list]]:
        batch = [(self.views[name], [self.key(name, i) for i in ids]) for name, ids in requests]
        answers = []
        for (view, _), rows in zip(batch, self.tables.read_rows(batch)):
            decoders = self._decoders[view.name]
            columns: dict[str, list] = {"_found": [r is not None for r in rows]}
            for feature, decode in decoders.items():
                columns[feature] = [decode(r[feature]) if r and feature in r else None for r in rows]
            answers.append(columns)
        return answers

    def read(self, view: str, ids: Sequence[int]) -> dict[str, list]:
        return self.read_many([(view, ids)])[0]

    def timestamp(self, view: str, entity_id: int) -> datetime | None:
        """When the row of ``entity_id`` in ``view`` was stamped (``None``: no row)."""
        return self.tables.read_timestamp(self.views[view], self.key(view, entity_id))
