"""Typed configuration of the data stage (a Hydra structured config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from mlsys.config import require


class DataExecutor(str, Enum):
    """Where the data steps run their batch functions (see :class:`DataConfig`)."""

    auto = "auto"
    local = "local"
    ray = "ray"


class DataSource(str, Enum):
    # Member names are the config values: OmegaConf validates enums by name.
    movielens = "movielens"
    synthetic = "synthetic"
    csv = "csv"
    instacart = "instacart"


class HistoryOf(str, Enum):
    """Which of a user's earlier events make the derived behaviour sequence."""

    clicks = "clicks"  # the items of earlier clicked (label 1) events: a click log
    events = "events"  # every earlier event's item: a purchase log (Instacart's earlier products)


@dataclass
class ColumnsConfig:
    """The event table's roles: which column is the user, the item, the event time, the target.

    ``data.columns.user=uid data.columns.item=sku data.columns.timestamp=ts data.columns.label=clicked``.
    Keys are non-negative integers; the time is a positive integer (epoch seconds, or any
    order such as Instacart's order number). Exactly one of ``label`` (0/1) and ``rating``
    (a click is ``rating >= data.click_threshold``). Inside mlsys the roles are the columns
    ``user_id``, ``item_id``, ``timestamp`` and ``label`` (the ranking API's names).
    """

    user: Optional[str] = None
    item: Optional[str] = None
    timestamp: Optional[str] = None
    label: Optional[str] = None
    rating: Optional[str] = None


@dataclass
class KindsConfig:
    """Feature columns by kind. ``categorical``: ids or strings, one vocabulary each;
    ``numeric``: numbers, standardised; ``multi_hot``: lists of values (in text files the
    values are separated by ``data.separator``), one vocabulary each."""

    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    multi_hot: list[str] = field(default_factory=list)


@dataclass
class TableConfig(KindsConfig):
    """A side table of user or item attributes (``data.user_table.path=users.parquet``), keyed by
    ``key`` (default: the event table's user or item column name), CSV or Parquet."""

    path: Optional[str] = None
    key: Optional[str] = None


@dataclass
class DataConfig:
    """Where samples come from, what their columns are, and how they become model inputs.

    The **declared feature schema** (``columns``, ``features``, ``user_table``, ``item_table``,
    ``history_*``) is the one place a data set's columns are named: ingestion, statistics,
    validation, the preprocessor, the models' inputs, the model package and serving all
    derive from it (:class:`mlsys.data.feature_schema.FeatureSchema`). Each data set's
    YAML under ``configs/data/`` declares its own; ``data=csv`` takes yours from the
    command line::

        mlsys run data=csv data.path=clicks.csv data.columns.user=uid data.columns.item=sku \
            data.columns.timestamp=ts data.columns.label=clicked \
            data.features.categorical=[device,country] data.features.numeric=[price] data.features.multi_hot=[tags]

    ``features`` are the event table's own features: properties of the event, sent with a
    ranking request as its context (not looked up). ``user_table`` and ``item_table`` are side
    tables, looked up by key at training and serving time.

    Executors (``executor``, ``local_max_rows``): ingest, statistics and transform run
    the same batch functions either in the step's own process (``local``: pandas and
    pyarrow, none of Ray Data's per-task and shuffle costs) or on Ray Data (``ray``:
    parallel, spills, scales to a cluster). The outputs are the same either way. The
    rule, with ``executor=auto``: a step whose input has at most ``local_max_rows`` rows
    runs in-process, a larger one on Ray Data; the input's rows are read from its
    Parquet footers, or for a text source estimated from the file's size and the mean
    length of its first 64 KiB of lines (synthetic: ``rows``). ``local_max_rows=0`` means
    always Ray Data; ``executor=local`` or ``executor=ray`` forces one whatever the size.
    The executor a step used is its MLflow tag ``mlsys.executor``.
    """

    source: DataSource = DataSource.movielens
    # The declared schema (see the class docstring).
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    features: KindsConfig = field(default_factory=KindsConfig)
    user_table: TableConfig = field(default_factory=TableConfig)
    item_table: TableConfig = field(default_factory=TableConfig)
    # With data.columns.rating: a rating at or above this is a click.
    click_threshold: float = 4.0
    # The last fraction of each user's events (by time) is the eval split.
    eval_fraction: float = 0.2
    # The behaviour sequence: the user's last L items strictly before each event ...
    history_length: int = 20
    # ... of their earlier clicks (a click log) or of all their earlier events (a purchase log);
    history_of: HistoryOf = HistoryOf.clicks
    # ... or given: a column of the event file holding each event's sequence (item ids separated by
    # data.separator, oldest first), used as it is instead of derived.
    history_column: Optional[str] = None
    # Categorical values seen fewer times than this in train map to the OOV bucket.
    vocab_min_count: int = 2
    # A multi-hot feature keeps its first this many values.
    multi_hot_length: int = 4
    # Text files: what separates the values of a multi-hot field ("drama|comedy").
    separator: str = "|"
    # Synthetic click log (ignored for MovieLens).
    rows: int = 200_000
    users: int = 2_000
    items: int = 5_000
    zipf_exponent: float = 1.1
    seed: int = 0
    blocks: int = 8
    # Synthetic: which 180-day span of events (same users and items, new events).
    span: int = 0
    # Synthetic: the share of users with gender "F" (move it to plant drift between spans).
    gender_share: float = 0.5
    # data=csv: the event file (CSV or any delimited text with a header line).
    path: Optional[str] = None
    delimiter: str = ","
    # Malformed rows are quarantined with a reason; above this fraction ingestion stops.
    max_bad_fraction: float = 0.01
    # Which executor runs the data steps (see the class docstring): auto | local | ray.
    executor: DataExecutor = DataExecutor.auto
    # auto: inputs of at most this many rows run in-process; 0 = always Ray Data.
    # 2M rows: in-process is faster on 2 CPUs up to about there (docs/benchmarks.md,
    # "Data steps"), and its memory (a few GiB) still fits beside Ray.
    local_max_rows: int = 2_000_000
    # Ingest writes the events as files of whole users, about this many rows each (the unit of
    # parallel work downstream: each file is one task of statistics and transform).
    partition_rows: int = 500_000

    def __post_init__(self):
        require(0.0 < self.eval_fraction < 1.0, "data.eval_fraction", self.eval_fraction, "between 0 and 1")
        require(self.history_length >= 1, "data.history_length", self.history_length, ">= 1")
        require(self.vocab_min_count >= 1, "data.vocab_min_count", self.vocab_min_count, ">= 1")
        require(self.multi_hot_length >= 1, "data.multi_hot_length", self.multi_hot_length, ">= 1")
        require(bool(self.separator) and self.separator != self.delimiter, "data.separator", self.separator,
                f"a non-empty string other than data.delimiter={self.delimiter!r}")
        require(0.0 <= self.gender_share <= 1.0, "data.gender_share", self.gender_share, "between 0 and 1")
        require(0.0 <= self.max_bad_fraction <= 1.0, "data.max_bad_fraction", self.max_bad_fraction, "between 0 and 1")
        require(DataSource(self.source) is not DataSource.csv or bool(self.path), "data.path", self.path, "set for data=csv")
        require(self.local_max_rows >= 0, "data.local_max_rows", self.local_max_rows, ">= 0 (0: always Ray Data)")
        for name in ("rows", "users", "items", "blocks", "partition_rows"):
            require(getattr(self, name) >= 1, f"data.{name}", getattr(self, name), ">= 1")
        if any(vars(self.columns).values()):  # a declared schema (every configs/data/*.yaml has one): check it now
            from mlsys.data.feature_schema import FeatureSchema

            FeatureSchema.of(self)
