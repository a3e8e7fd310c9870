"""Typed configuration of the data stage (a Hydra structured config)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class DataSource(str, Enum):
    # Member names are the config values: OmegaConf validates enums by name.
    movielens = "movielens"
    synthetic = "synthetic"


@dataclass
class DataConfig:
    """Where samples come from and how they become model inputs.

    ``data=synthetic data.rows=1000000`` switches to the generated click log.
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

    def __post_init__(self):
        _require(0.0 < self.eval_fraction < 1.0, "data.eval_fraction", self.eval_fraction, "between 0 and 1")
        _require(self.history_length >= 1, "data.history_length", self.history_length, ">= 1")
        _require(self.vocab_min_count >= 1, "data.vocab_min_count", self.vocab_min_count, ">= 1")
        _require(self.max_genres >= 1, "data.max_genres", self.max_genres, ">= 1")
        for name in ("rows", "users", "items", "blocks"):
            _require(getattr(self, name) >= 1, f"data.{name}", getattr(self, name), ">= 1")


def _require(ok: bool, key: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"{key}={value!r} must be {expected}")
