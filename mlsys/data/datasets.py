"""The data stage's Ray edge: sources read and generated with Ray Data,
per-user operations as grouped maps. Everything it calls is plain pandas."""

from __future__ import annotations

import pandas as pd
import ray

from mlsys.data import events as ev
from mlsys.data import movielens, synthetic
from mlsys.data.config import DataConfig, DataSource


def read_source(cfg: DataConfig) -> tuple[ray.data.Dataset, pd.DataFrame, pd.DataFrame]:
    """``(events, users, items)``: labelled events joined with user and item attributes."""
    if DataSource(cfg.source) is DataSource.movielens:
        root = movielens.movielens_dir()
        users, items = movielens.load_users(root), movielens.load_items(root)
        events = ray.data.read_csv(
            str(root / "ml-100k.inter"),
            parse_options=_tab_separated(),
        ).map_batches(movielens.label_ratings, fn_kwargs={"click_threshold": cfg.click_threshold}, batch_format="pandas")
    else:
        users, items = synthetic.synthetic_users(cfg), synthetic.synthetic_items(cfg)
        events = ray.data.range(cfg.blocks, override_num_blocks=cfg.blocks).map_batches(
            lambda batch: pd.concat([synthetic.generate_block(cfg, int(b)) for b in batch["id"]]),
            batch_size=1,
            batch_format="pandas",
        )
    joined = events.map_batches(ev.join_features, fn_kwargs={"users": users, "items": items}, batch_format="pandas")
    return joined, users, items


def _tab_separated():
    import pyarrow.csv as pacsv

    return pacsv.ParseOptions(delimiter="\t")


def partitions() -> int:
    """Shuffle partitions for grouped maps: one per logical CPU.

    Ray Data's default (about 200) writes as many small files, and reading
    many small files costs ~60 ms each on a 2-core machine.
    """
    return max(2, int(ray.cluster_resources().get("CPU", 2)))


def split_by_user(events: ray.data.Dataset, eval_fraction: float) -> ray.data.Dataset:
    """Adds ``split``: the last ``eval_fraction`` of each user's events are ``eval``."""
    return events.groupby("user_id", num_partitions=partitions()).map_groups(
        ev.split_user_events, fn_kwargs={"eval_fraction": eval_fraction}, batch_format="pandas"
    )


def add_history(events: ray.data.Dataset, length: int) -> ray.data.Dataset:
    return events.groupby("user_id", num_partitions=partitions()).map_groups(ev.add_history, fn_kwargs={"length": length}, batch_format="pandas")


def user_histories(events: ray.data.Dataset, length: int) -> pd.DataFrame:
    """Each user's last ``length`` clicks over all events: the serving snapshot."""
    return events.select_columns(["user_id", "item_id", "timestamp", "label"]).groupby("user_id", num_partitions=partitions()).map_groups(
        lambda df: pd.DataFrame({"user_id": df["user_id"].iloc[:1].to_numpy(), "history": [ev.last_clicks(df, length)]}),
        batch_format="pandas",
    ).to_pandas()


def _block_state(table, kinds):
    import pickle

    import pyarrow as pa

    from mlsys.data.statistics import block_accumulators

    # Internal transport between our own tasks; files on disk are JSON.
    return pa.table({"state": [pickle.dumps(block_accumulators(table, kinds))]})


def compute_statistics(ds: ray.data.Dataset, kinds=None, name: str = ""):
    """Statistics of a Dataset in one pass: per-block sketches, merged in the driver."""
    import pickle

    from mlsys.data.statistics import finalize, infer_kinds, merge_all

    kinds = kinds or infer_kinds(ds.schema().base_schema)
    states = ds.map_batches(_block_state, fn_kwargs={"kinds": kinds}, batch_format="pyarrow", batch_size=None).take_all()
    return finalize(merge_all(pickle.loads(s["state"]) for s in states), name)


def read_any(path: str) -> ray.data.Dataset:
    """Parquet or CSV (by extension; a folder is read as Parquet)."""
    if path.endswith((".csv", ".csv.gz", ".tsv")):
        import pyarrow.csv as pacsv

        options = pacsv.ParseOptions(delimiter="\t") if path.endswith(".tsv") else None
        return ray.data.read_csv(path, parse_options=options) if options else ray.data.read_csv(path)
    import os

    if os.path.isfile(path):  # a single file is read whatever its extension (e.g. `.parquet.brotli`)
        return ray.data.read_parquet(path, file_extensions=[path.rsplit(".", 1)[-1]])
    return ray.data.read_parquet(path)
