"""The declared feature schema: the one source of a data set's columns and their kinds.

A data set declares it in ``configs/data/<name>.yaml`` (or on the command line, see
:class:`~mlsys.data.config.DataConfig`); :meth:`FeatureSchema.of` checks it and every
stage derives from the result: ingestion parses and quarantines by kind, statistics and
validation take their kinds from it, the preprocessor fits a vocabulary per categorical
and multi-hot feature and a scaling per numeric one, the models size their inputs from
its :class:`~mlsys.models.InputSpec`, the model package carries it, and serving fetches
and validates request features by it. No Ray, no I/O.

Roles: whatever the source calls them, inside mlsys the event table's user, item, time
and target are the columns ``user_id``, ``item_id``, ``timestamp`` and ``label`` (the
ranking API's names), and the derived behaviour sequence is ``history``. Features keep
their own names::

    >>> s = FeatureSchema.of(DataConfig(columns=ColumnsConfig(user="uid", item="sku", timestamp="ts", label="clicked"),
    ...                                 features=KindsConfig(categorical=["device"], numeric=["price"])))  # doctest: +SKIP
    >>> s.categorical, s.numeric, s.context  # doctest: +SKIP
    (('user_id', 'item_id', 'device'), ('price',), ('device', 'price'))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import pandas as pd

from mlsys.data.config import DataConfig, DataSource, HistoryOf
from mlsys.errors import ConfigError

USER, ITEM, TIME, LABEL, RATING, HISTORY = "user_id", "item_id", "timestamp", "label", "rating", "history"
SPLIT = "split"
RESERVED = (USER, ITEM, TIME, LABEL, RATING, HISTORY, SPLIT)
FORMAT = "mlsys.feature-schema/1"


class Kind(str, Enum):
    categorical = "categorical"
    numeric = "numeric"
    multi_hot = "multi_hot"


class Table(str, Enum):
    """Where a feature lives: on the event (request context), or in a side table looked up by key."""

    events = "events"
    users = "users"
    items = "items"


KEY_OF = {Table.users: USER, Table.items: ITEM}
# Where each table's features are declared (the config keys errors name).
SETTING = {Table.events: "data.features", Table.users: "data.user_table", Table.items: "data.item_table"}


def as_text(value) -> str | None:
    """A categorical value as ingestion reads it from text, the form vocabularies compare:
    ``7``, ``7.0`` (an integer column with nulls) and ``" 7"`` are ``"7"``; a null is None.

    >>> as_text(7.0), as_text(" ios "), as_text(float("nan"))
    ('7', 'ios', None)
    """
    if value is None or (not isinstance(value, (str, list, tuple)) and pd.isna(value)):  # None, NaN, pd.NA
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind
    table: Table


@dataclass(frozen=True)
class FeatureSchema:
    """A checked schema (build it with :meth:`of`); plain data, saved with :meth:`to_dict`."""

    features: tuple[Feature, ...]
    # Source column of each role (user_id, item_id, timestamp, and label or rating), for parsing and messages.
    sources: dict[str, str]
    click_threshold: float = 4.0
    history_length: int = 20
    history_of: HistoryOf = HistoryOf.clicks
    multi_hot_length: int = 4
    # Side tables' key columns as the source names them ({"users": "uid", "items": "sku"}).
    keys: dict[str, str] = field(default_factory=dict)
    # The event file's column holding each event's behaviour sequence, when given rather than derived.
    history_column: str | None = None

    # -- views ---------------------------------------------------------------
    def _names(self, kind: Kind | None = None, table: Table | None = None) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if (kind is None or f.kind is kind) and (table is None or f.table is table))

    @property
    def categorical(self) -> tuple[str, ...]:
        """The model's categorical fields, in order: the user, the item, then the declared ones."""
        return (USER, ITEM, *self._names(Kind.categorical))

    @property
    def numeric(self) -> tuple[str, ...]:
        return self._names(Kind.numeric)

    @property
    def multi_hot(self) -> tuple[str, ...]:
        return self._names(Kind.multi_hot)

    @property
    def context(self) -> tuple[str, ...]:
        """Features of the event itself: sent with a ranking request, never looked up."""
        return self._names(table=Table.events)

    def table_features(self, table: Table) -> tuple[str, ...]:
        return self._names(table=table)

    def kind(self, name: str) -> Kind:
        for f in self.features:
            if f.name == name:
                return f.kind
        raise KeyError(name)

    @property
    def request_columns(self) -> tuple[str, ...]:
        """The raw columns one scored row holds: roles, every feature, the behaviour sequence."""
        return (USER, ITEM, *(f.name for f in self.features), HISTORY)

    @property
    def label_source(self) -> tuple[str, str]:
        """``("label", column)`` or ``("rating", column)``."""
        return (LABEL, self.sources[LABEL]) if LABEL in self.sources else (RATING, self.sources[RATING])

    # -- persistence -----------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "features": [{"name": f.name, "kind": f.kind.value, "table": f.table.value} for f in self.features],
            "sources": dict(self.sources),
            "click_threshold": self.click_threshold,
            "history_length": self.history_length,
            "history_of": HistoryOf(self.history_of).value,
            "multi_hot_length": self.multi_hot_length,
            "keys": dict(self.keys),
            "history_column": self.history_column,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSchema":
        if d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} schema (format={d.get('format')!r})")
        return cls(
            features=tuple(Feature(f["name"], Kind(f["kind"]), Table(f["table"])) for f in d["features"]),
            sources=dict(d["sources"]),
            click_threshold=float(d["click_threshold"]),
            history_length=int(d["history_length"]),
            history_of=HistoryOf(d["history_of"]),
            multi_hot_length=int(d["multi_hot_length"]),
            keys=dict(d.get("keys") or {}),
            history_column=d.get("history_column"),
        )

    # -- from the config ---------------------------------------------------------
    @classmethod
    def of(cls, cfg: DataConfig) -> "FeatureSchema":
        """Check ``cfg``'s declared schema; a :class:`~mlsys.errors.ConfigError` names what to set."""
        cols = cfg.columns
        for role, example in (("user", "uid"), ("item", "sku"), ("timestamp", "ts")):
            if not getattr(cols, role):
                raise ConfigError(f"data.columns.{role} is not set: name the event table's {role} column "
                                  f"(data.columns.{role}=<column>, e.g. data.columns.{role}={example})")
        if bool(cols.label) == bool(cols.rating):
            raise ConfigError("set exactly one of data.columns.label (a 0/1 column) and data.columns.rating "
                              f"(a click is rating >= data.click_threshold); got label={cols.label!r}, rating={cols.rating!r}")
        sources = {USER: cols.user, ITEM: cols.item, TIME: cols.timestamp}
        sources.update({LABEL: cols.label} if cols.label else {RATING: cols.rating})
        if len(set(sources.values())) != len(sources):
            raise ConfigError(f"data.columns name one column for two roles: {sources}")
        keys = {Table.users.value: cfg.user_table.key or cols.user, Table.items.value: cfg.item_table.key or cols.item}
        features: list[Feature] = []
        seen: dict[str, str] = {}
        for table, kinds in ((Table.events, cfg.features), (Table.users, cfg.user_table), (Table.items, cfg.item_table)):
            prefix = SETTING[table]
            for kind in Kind:
                for name in getattr(kinds, kind.value):
                    key = f"{prefix}.{kind.value}"
                    if not isinstance(name, str) or not name:
                        raise ConfigError(f"{key} holds {name!r}; list column names")
                    if name in seen:
                        raise ConfigError(f"{key} names {name!r}, already declared in {seen[name]}; declare a column once")
                    taken = set(sources.values()) if table is Table.events else {keys[table.value]}
                    if name in RESERVED or name in taken:
                        raise ConfigError(f"{key} names {name!r}, which is a key, the time, the target or a name mlsys "
                                          f"derives ({', '.join(RESERVED)}); rename the column in the data")
                    seen[name] = key
                    features.append(Feature(name, kind, table))
        for table, given in ((Table.users, cfg.user_table.path), (Table.items, cfg.item_table.path)):
            declared = [f.name for f in features if f.table is table]
            if declared and not (given or DataSource(cfg.source) in (DataSource.movielens, DataSource.synthetic)):
                raise ConfigError(f"{SETTING[table]} declares {declared} but the data set has no {table.value} table; "
                                  f"set {SETTING[table]}.path=<file.parquet|file.csv>")
        if cfg.history_column is not None and (cfg.history_column in seen or cfg.history_column in sources.values()
                                               or cfg.history_column in RESERVED):
            raise ConfigError(f"data.history_column={cfg.history_column!r} is also a role, a declared feature or a name "
                              f"mlsys derives; name the event file's sequence column")
        return cls(tuple(features), sources, float(cfg.click_threshold), int(cfg.history_length), HistoryOf(cfg.history_of),
                   int(cfg.multi_hot_length), keys, cfg.history_column)
