"""A synthetic click log with a planted signal, generated block by block.

Items follow a Zipf popularity law; every user has a favourite genre and
clicks items of that genre (and items of high latent quality) more often,
so a model that learns user x genre interactions beats popularity alone.
Every block is a pure function of (config, block id): blocks are generated
in parallel on Ray Data and the output is the same however they are placed.
Spans (``data.span=k``) share the catalogue (users, items) and draw new
events from the next 180 days.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlsys.data.config import DataConfig

GENRES = tuple(f"g{i:02d}" for i in range(18))
OCCUPATIONS = ("student", "engineer", "artist", "doctor", "writer", "other")
START_TS = 1_700_000_000
SPAN_S = 180 * 24 * 3600


def _catalog(cfg: DataConfig):
    rng = np.random.default_rng([cfg.seed, 0])
    favourite = rng.integers(0, len(GENRES), cfg.users)
    item_genres = np.zeros((cfg.items, len(GENRES)), dtype=bool)
    primary = rng.integers(0, len(GENRES), cfg.items)
    item_genres[np.arange(cfg.items), primary] = True
    second = rng.integers(0, len(GENRES), cfg.items)
    item_genres[np.arange(cfg.items), second] |= rng.random(cfg.items) < 0.3
    quality = rng.normal(0.0, 1.0, cfg.items).astype(np.float32)
    popularity = 1.0 / np.arange(1, cfg.items + 1) ** cfg.zipf_exponent
    popularity = popularity[rng.permutation(cfg.items)]
    return favourite, item_genres, quality, popularity / popularity.sum()


def synthetic_users(cfg: DataConfig) -> pd.DataFrame:
    rng = np.random.default_rng([cfg.seed, 1])
    return pd.DataFrame(
        {
            "user_id": np.arange(1, cfg.users + 1, dtype=np.int64),
            "age": rng.integers(15, 70, cfg.users).astype(np.float32),
            "gender": np.where(rng.random(cfg.users) < cfg.gender_share, "F", "M"),
            "occupation": rng.choice(OCCUPATIONS, cfg.users),
        }
    )


def synthetic_items(cfg: DataConfig) -> pd.DataFrame:
    rng = np.random.default_rng([cfg.seed, 2])
    _, item_genres, _, _ = _catalog(cfg)
    return pd.DataFrame(
        {
            "item_id": np.arange(1, cfg.items + 1, dtype=np.int64),
            "year": rng.integers(1950, 2025, cfg.items).astype(np.float32),
            "genres": [[GENRES[g] for g in np.flatnonzero(row)] for row in item_genres],
        }
    )


def generate_block(cfg: DataConfig, block: int) -> pd.DataFrame:
    """Events of the users owned by ``block`` (user ids are split evenly across blocks)."""
    favourite, item_genres, quality, popularity = _catalog(cfg)
    lo, hi = block * cfg.users // cfg.blocks, (block + 1) * cfg.users // cfg.blocks
    n = (block + 1) * cfg.rows // cfg.blocks - block * cfg.rows // cfg.blocks
    rng = np.random.default_rng([cfg.seed, 3, cfg.span, block])
    users = rng.integers(lo, hi, n)
    items = rng.choice(cfg.items, n, p=popularity)
    match = item_genres[items, favourite[users]]
    logit = -1.5 + 2.5 * match + 0.8 * quality[items]
    label = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    return pd.DataFrame(
        {
            "user_id": users.astype(np.int64) + 1,
            "item_id": items.astype(np.int64) + 1,
            "timestamp": START_TS + cfg.span * SPAN_S + rng.integers(0, SPAN_S, n),
            "label": label.astype(np.float32),
        }
    )
