"""Materialization offline -> online: rows/s into SQLite and into a real redis-server.

Each repeat materializes a fresh project (no watermark) from the same offline
sources, built from a synthetic click log; SQLite and Redis interleaved.
rows/s counts the offline rows in the materialized intervals; Feast writes the
newest row per entity of each view (the "entity rows" below).

    python benchmarks/materialize.py --events 200000 --users 5000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]
import harness  # noqa: E402

from mlsys.features import FeaturesConfig  # noqa: E402
from mlsys.features.materialize import materialize  # noqa: E402
from mlsys.features.training import write_offline_sources  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.schemas import movielens_like  # noqa: E402

SCHEMA = movielens_like()  # the click log's side tables below: user age, gender, occupation; item year, genres


def click_log(events: int, users: int, items: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    log = pd.DataFrame({"user_id": rng.integers(1, users + 1, events), "item_id": rng.integers(1, items + 1, events),
                        "timestamp": 880_000_000 + rng.integers(0, 180 * 86_400, events), "rating": rng.integers(1, 6, events)})
    log["label"] = (log["rating"] >= 4).astype(np.float32)
    user_table = pd.DataFrame({"user_id": np.arange(1, users + 1), "age": np.float32(30), "gender": "F", "occupation": "other"})
    item_table = pd.DataFrame({"item_id": np.arange(1, items + 1), "year": np.float32(1995), "genres": [["Drama"]] * items})
    return log, user_table, item_table


def one_run(home: str, base: FeaturesConfig, tables) -> float:
    """Offline rows/s of a full materialization of a fresh project."""
    cfg = FeaturesConfig(**{**base.__dict__, "project": f"b{uuid.uuid4().hex[:10]}"})
    write_offline_sources(cfg, home, SCHEMA, *tables)
    started = time.perf_counter()
    report = materialize(cfg, home)
    return report.rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    log, user_table, item_table = click_log(args.events, args.users, args.items)
    with tempfile.TemporaryDirectory(prefix="matbench-") as home, RedisServer.start() as server:
        sqlite = FeaturesConfig(name="feast")
        redis = FeaturesConfig(name="feast", online="redis", redis_host=server.host, redis_port=server.port)
        tables = (log, user_table, item_table)
        probe = FeaturesConfig(name="feast", project="probe")
        rows = write_offline_sources(probe, home, SCHEMA, *tables)
        offline_rows = sum(rows.values())
        c, b = harness.interleaved(lambda: one_run(home, redis, tables), lambda: one_run(home, sqlite, tables), args.repeats)
    entity_rows = 3 * args.users + args.items
    result = [harness.Row(f"materialize {offline_rows:,} offline rows ({entity_rows:,} entity rows)", "Redis", "SQLite",
                          harness.median(c), harness.median(b), "rows/s", args.repeats)]
    notes = (f"Full materialization of a fresh project per repeat ({args.events:,} synthetic events, {args.users:,} users, "
             f"{args.items:,} items; per view: {rows}). Feast's `materialize` (local engine, dask offline store) "
             f"writes the newest row per entity. Ratio > 1: Redis faster. 1-minute load average at the end: {os.getloadavg()[0]:.1f}.")
    if args.no_record:
        print("\n".join(r.line() for r in result) + "\n" + notes)
    else:
        harness.record("Materialization rows/s: SQLite and Redis online stores", result, notes)


if __name__ == "__main__":
    main()
