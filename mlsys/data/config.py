"""Typed configuration of the data stage (a Hydra structured config)."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class DataConfig:
    """Where samples come from and how they become model inputs.

    ``data=synthetic data.rows=1000000`` switches to the generated click log.

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
    # MovieLens: a rating at or above this is a click.
    click_threshold: float = 4.0
    # The last fraction of each user's events (by time) is the eval split.
    eval_fraction: float = 0.2
    # Transform: the user's last L clicked items before each event.
    history_length: int = 20
    # Categorical values seen fewer times than this in train map to the OOV bucket.
    vocab_min_count: int = 2
    max_genres: int = 4
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
    # CSV click logs (data=csv): events with user_id, item_id, timestamp and rating or label;
    # optional user (user_id, age, gender, occupation) and item (item_id, year, genres) tables.
    path: Optional[str] = None
    delimiter: str = ","
    users_path: Optional[str] = None
    items_path: Optional[str] = None
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
        require(self.max_genres >= 1, "data.max_genres", self.max_genres, ">= 1")
        require(0.0 <= self.gender_share <= 1.0, "data.gender_share", self.gender_share, "between 0 and 1")
        require(0.0 <= self.max_bad_fraction <= 1.0, "data.max_bad_fraction", self.max_bad_fraction, "between 0 and 1")
        require(DataSource(self.source) is not DataSource.csv or bool(self.path), "data.path", self.path, "set for data=csv")
        require(self.local_max_rows >= 0, "data.local_max_rows", self.local_max_rows, ">= 0 (0: always Ray Data)")
        for name in ("rows", "users", "items", "blocks", "partition_rows"):
            require(getattr(self, name) >= 1, f"data.{name}", getattr(self, name), ">= 1")

