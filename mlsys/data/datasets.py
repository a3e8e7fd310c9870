"""The data stage's Ray edge: sources read and generated with Ray Data,
per-user operations as grouped maps. Everything it calls is plain pandas."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd
import ray

from mlsys.data import events as ev
from mlsys.data import movielens, synthetic
from mlsys.data.config import DataConfig, DataSource


@dataclass(frozen=True)
class Source:
    """Labelled events joined with attributes, the attribute tables, and quarantined rows."""

    events: ray.data.Dataset
    users: pd.DataFrame
    items: pd.DataFrame
    bad_rows: ray.data.Dataset | None  # raw line, reason, detail; None for generated data


def read_source(cfg: DataConfig) -> Source:
    if DataSource(cfg.source) is DataSource.synthetic:
        users, items = synthetic.synthetic_users(cfg), synthetic.synthetic_items(cfg)
        events = ray.data.range(cfg.blocks, override_num_blocks=cfg.blocks).map_batches(
            lambda batch: pd.concat([synthetic.generate_block(cfg, int(b)) for b in batch["id"]]),
            batch_size=1,
            batch_format="pandas",
        )
        bad = None
    else:
        if DataSource(cfg.source) is DataSource.movielens:
            root = movielens.movielens_dir()
            path, delimiter = str(root / "ml-100k.inter"), "\t"
            users, items = movielens.load_users(root), movielens.load_items(root)
        else:
            path, delimiter = cfg.path, cfg.delimiter
            users, items = _attribute_table(cfg.users_path, movielens.USER_COLUMNS), _attribute_table(cfg.items_path, movielens.ITEM_COLUMNS)
        events, bad = read_delimited_events(path, delimiter, cfg.click_threshold)
    joined = events.map_batches(ev.join_features, fn_kwargs={"users": users, "items": items}, batch_format="pandas")
    return Source(joined, users, items, bad)


def _attribute_table(path: str | None, columns: tuple[str, ...]) -> pd.DataFrame:
    """A user or item table (Parquet or CSV); without one, attributes are null (the OOV path)."""
    if not path:
        empty = {c: pd.Series(dtype="int64" if c.endswith("_id") else "object") for c in columns}
        return pd.DataFrame(empty)
    df = pd.read_csv(path) if path.endswith(".csv") else pd.read_parquet(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; expected {list(columns)}")
    return df[list(columns)]


def _first_line(path: str) -> str:
    import pyarrow.fs as pafs

    fs, p = pafs.FileSystem.from_uri(path if "://" in path else os.path.abspath(path))
    with fs.open_input_stream(p) as f:
        return f.read(1 << 16).decode("utf-8", errors="replace").splitlines()[0]


def read_delimited_events(path: str, delimiter: str, click_threshold: float) -> tuple[ray.data.Dataset, ray.data.Dataset]:
    """Parse a delimited click log on Ray Data: ``(events, bad rows)``; no row is dropped silently."""
    from mlsys.data.parsing import EventFormat, header_columns

    fmt = EventFormat(delimiter=delimiter, header=True, columns=header_columns(_first_line(path), delimiter), click_threshold=click_threshold)
    parsed = ray.data.read_text(path).map_batches(_parse_block, fn_kwargs={"fmt": fmt}, batch_format="pyarrow").materialize()
    events = parsed.map_batches(_rows, fn_kwargs={"bad": False}, batch_format="pyarrow")
    bad = parsed.map_batches(_rows, fn_kwargs={"bad": True}, batch_format="pyarrow")
    return events, bad


def _parse_block(batch, fmt):
    import pyarrow as pa

    from mlsys.data.parsing import parse_events

    good, bad = parse_events(batch.column("text").to_pylist(), None, fmt)
    good_t = pa.Table.from_pandas(good, preserve_index=False)
    bad_t = pa.Table.from_pandas(bad.astype({"raw": str, "reason": str, "detail": str}), preserve_index=False)
    bad_t = bad_t.cast(pa.schema([("line_number", pa.int64()), ("raw", pa.string()), ("reason", pa.string()), ("detail", pa.string())]))
    # One table per block: good rows with null bad-columns, then bad rows with null event columns.
    return pa.concat_tables([good_t, bad_t], promote_options="default")


def _rows(table, bad: bool):
    import pyarrow.compute as pc

    from mlsys.data.parsing import BAD_COLUMNS

    mask = pc.is_valid(table["reason"])
    if bad:
        return table.filter(mask).select(list(BAD_COLUMNS))
    return table.filter(pc.invert(mask)).drop_columns(list(BAD_COLUMNS))


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


def event_kinds(schema):
    """Feature kinds of the events table: ids are categorical, `timestamp` a time."""
    from mlsys.data.statistics import infer_kinds

    kinds = infer_kinds(schema, categorical=["user_id", "item_id"], timestamps=["timestamp"])
    kinds.pop("split", None)
    return kinds


def split_statistics(events_uri: str, out: dict[str, str]) -> dict[str, float]:
    """Statistics of each split of the events at ``events_uri``, written as JSON to ``out[split]``; returns row counts."""
    from mlsys import storage

    events = read_parquet(events_uri)  # a task per file, fused with the statistics map
    kinds = event_kinds(events.schema().base_schema)
    rows = {}
    for split, uri in out.items():
        stats = compute_statistics(events.filter(expr=f"split == '{split}'"), kinds, name=split)
        storage.write_json(uri, stats.to_dict())
        rows[f"{split}_rows"] = stats.rows
    return rows


def read_parquet(path: str, **kwargs) -> ray.data.Dataset:
    """``ray.data.read_parquet`` with one read task per file, so a task's memory is bounded by a file.

    Ray 2.60's default reader (datasource V2) bin-packs files into few tasks
    and reads a task's files ahead of the consumer: on the statistics
    benchmark each of its two read workers held ~1 GiB, growing with the
    number of files per task. The V1 reader (``DataContext.use_datasource_v2
    = False``, read when ``read_parquet`` is called) plans a task per file;
    asking for as many blocks as files keeps it from splitting each file's
    output, so the read fuses with a following ``map_batches`` and blocks
    never go through the object store. Measured in docs/benchmarks.md
    ("Dataset statistics throughput").
    """
    ctx = ray.data.DataContext.get_current()
    previous, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    # As many blocks as files: Ray's default (>= 200 blocks) splits each file's output
    # after the read, and the split keeps the read from fusing with the map that follows.
    kwargs.setdefault("override_num_blocks", _count_files(path))
    try:
        return ray.data.read_parquet(path, **kwargs)
    finally:
        ctx.use_datasource_v2 = previous


def _count_files(path: str) -> int:
    """Data files at ``path`` (a file: 1; a folder: its files, recursively, minus ``_``/``.`` ones)."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), os.path.abspath(path))
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return 1
    files = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return max(1, sum(f.type == pafs.FileType.File and not f.base_name.startswith(("_", ".")) for f in files))


def read_any(path: str) -> ray.data.Dataset:
    """Parquet or CSV (by extension; a folder is read as Parquet)."""
    if path.endswith((".csv", ".csv.gz", ".tsv")):
        import pyarrow.csv as pacsv

        options = pacsv.ParseOptions(delimiter="\t") if path.endswith(".tsv") else None
        return ray.data.read_csv(path, parse_options=options) if options else ray.data.read_csv(path)
    if os.path.isfile(path):  # a single file is read whatever its extension (e.g. `.parquet.brotli`)
        return read_parquet(path, file_extensions=[path.rsplit(".", 1)[-1]])
    return read_parquet(path)
