"""The data steps against one pandas/pyarrow process doing the same work.

- candidate: ``mlsys.data``'s stage functions as the pipeline's steps call them
  (``ingest``, ``split_statistics``, ``transform``), each choosing its executor by
  the rule (``data.local_max_rows``: in-process below it, Ray Data above), on a
  local Ray started once as ``mlsys run`` starts it (``num_cpus=4``);
- baseline: a single-process script: read and label the events, join the user and
  item attributes, split each user's last 20% into eval, write the events; exact
  statistics of each split (counts, nulls, moments, quantiles, histograms, top
  values, list lengths) to JSON; strictly-earlier click histories, the train/eval
  files, the preprocessor's vocabularies and scaling, the serving tables. Encoding
  is in neither: the train step encodes on the fly.

Both run in this process, interleaved, each repeat into a fresh folder; medians and
their ratio (candidate / baseline seconds: lower is better). Sizes: MovieLens-100K
and ``--rows`` synthetic rows. ``--old-tree`` also times a fresh ``mlsys run
train.max_epochs=1`` (fresh home) of that tree's code against ``--new-tree``'s.

    python benchmarks/data_steps.py [--repeats 3] [--rows 10000000] [--old-tree /tmp/old-data --new-tree /tmp/new-data]
    python benchmarks/data_steps.py --rows 1000000 --repeats 1 --no-record   # quick check
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Row, interleaved, median, record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUANTILES = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]


# -- candidate: the stage functions ------------------------------------------------------


def candidate(cfg, out: Path) -> dict[str, float]:
    """The three data steps' stage functions, as mlsys/pipeline/ctr.py calls them; seconds per step."""
    from mlsys.data.ingest import ingest
    from mlsys.data.splits import split_statistics
    from mlsys.data.transform import TransformUris, transform

    t0 = time.perf_counter()
    ing = ingest(cfg, str(out / "events"), str(out / "users.parquet"), str(out / "items.parquet"), str(out / "quarantine"))
    t1 = time.perf_counter()
    stats = split_statistics(cfg, str(out / "events"), {"train": str(out / "train.json"), "eval": str(out / "eval.json")})
    t2 = time.perf_counter()
    uris = TransformUris(*(str(out / n) for n in ("train", "eval", "preprocessor.json", "users_latest.parquet", "items_out.parquet")))
    tr = transform(cfg, str(out / "events"), str(out / "users.parquet"), str(out / "items.parquet"), uris)
    t3 = time.perf_counter()
    executors = {ing.executor.value, stats.executor.value, tr.executor.value}
    return {"ingest": t1 - t0, "statistics": t2 - t1, "transform": t3 - t2, "executor": "/".join(sorted(executors))}


# -- baseline: one pandas/pyarrow process ---------------------------------------------------


def _read(cfg) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from mlsys.data import movielens, synthetic

    if cfg.source.value == "synthetic":
        events = pd.concat([synthetic.generate_block(cfg, b) for b in range(cfg.blocks)], ignore_index=True)
        return events, synthetic.synthetic_users(cfg), synthetic.synthetic_items(cfg)
    root = movielens.movielens_dir()
    events = pd.read_csv(root / "ml-100k.inter", sep="\t")
    events.columns = [c.split(":")[0] for c in events.columns]
    events = events.astype({"user_id": "int64", "item_id": "int64", "timestamp": "int64"})
    events["label"] = (events["rating"] >= cfg.click_threshold).astype(np.float32)
    events["rating"] = events.pop("rating").astype(np.float32)  # after label, as ingest orders them
    return events, movielens.load_users(root), movielens.load_items(root)


def _describe(table: pa.Table) -> dict:
    """Exact statistics of every column: counts, nulls; moments, quantiles, histogram; top values; list lengths."""
    out = {"rows": table.num_rows}
    for name in table.column_names:
        column = table.column(name)
        entry = {"count": len(column), "missing": column.null_count}
        if pa.types.is_list(column.type):
            column = pc.list_value_length(column)
        if name in ("user_id", "item_id") or pa.types.is_string(column.type):
            counts = pd.Series(column.to_numpy(zero_copy_only=False)).value_counts()
            entry.update(distinct=len(counts), top=[[k, int(v)] for k, v in counts.head(20).items()])
        else:
            x = pc.drop_null(column).to_numpy(zero_copy_only=False).astype(np.float64)
            if len(x):
                hist, edges = np.histogram(x, bins=10)
                entry.update(min=x.min(), max=x.max(), mean=x.mean(), std=x.std(ddof=1) if len(x) > 1 else 0.0,
                             zeros=int((x == 0).sum()), quantiles=np.quantile(x, QUANTILES).tolist(),
                             histogram={"edges": edges.tolist(), "counts": hist.tolist()})
        out[name] = entry
    return out


def _histories(df: pd.DataFrame, length: int) -> pa.ListArray:
    """Rows sorted by (user, timestamp, item): the last ``length`` items clicked in earlier seconds."""
    user, ts = df.user_id.to_numpy(), df.timestamp.to_numpy()
    clicked = df.label.to_numpy() > 0
    before = np.concatenate([[0], np.cumsum(clicked)])
    pos = pd.Series(np.arange(len(df)))
    user_first = pos.groupby(user).transform("min").to_numpy()
    second_first = pos.groupby([user, ts]).transform("min").to_numpy()
    hi = before[second_first]
    lo = np.maximum(before[user_first], hi - length)
    lengths = hi - lo
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = df.item_id.to_numpy()[clicked][np.repeat(lo - offsets[:-1], lengths) + np.arange(offsets[-1])]
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(items))


def _fit(train: pa.Table, min_count: int) -> dict:
    vocab = {}
    for c in ("user_id", "item_id", "gender", "occupation", "genres"):
        values = pc.list_flatten(train.column(c)) if c == "genres" else train.column(c)
        counts = pd.Series(values.to_numpy(zero_copy_only=False)).value_counts()
        vocab[c] = [k.item() if hasattr(k, "item") else k for k in counts[counts >= min_count].index]
    scaling = {c: [float(pc.mean(train.column(c)).as_py()), float(pc.stddev(train.column(c)).as_py())] for c in ("age", "year")}
    return {"vocabularies": vocab, "scaling": scaling}


def baseline(cfg, out: Path) -> None:
    """The same work in one process: pandas for the relational steps, pyarrow for list columns and files."""
    import pyarrow.parquet as pq

    events, users, items = _read(cfg)
    df = events.sort_values(["user_id", "timestamp", "item_id"], kind="stable", ignore_index=True)
    by_user = df.groupby("user_id", sort=False)
    n, rank = by_user["item_id"].transform("size").to_numpy(), by_user.cumcount().to_numpy()
    df["split"] = np.where(rank >= n - (n * cfg.eval_fraction).astype(np.int64), "eval", "train")
    joined = df.merge(users, on="user_id", how="left").merge(items.drop(columns="genres"), on="item_id", how="left")
    genres = pa.Table.from_pandas(items[["genres"]], preserve_index=False).column("genres")
    table = pa.Table.from_pandas(joined, preserve_index=False)
    table = table.append_column("genres", genres.take(pd.Index(items.item_id).get_indexer(df.item_id)))
    pq.write_table(table, out / "events.parquet")
    is_train = pa.array(df.split.to_numpy() == "train")
    for split, mask in (("train", is_train), ("eval", pc.invert(is_train))):
        (out / f"{split}.json").write_text(json.dumps(_describe(table.filter(mask).drop_columns(["split"])), default=str))
    table = table.append_column("history", _histories(df, cfg.history_length))
    train = table.filter(is_train)
    pq.write_table(train, out / "train.parquet")
    pq.write_table(table.filter(pc.invert(is_train)), out / "eval.parquet")
    (out / "preprocessor.json").write_text(json.dumps(_fit(train, cfg.vocab_min_count), default=str))
    clicks = df[df.label > 0].groupby("user_id").tail(cfg.history_length)
    latest = pa.Table.from_pandas(clicks[["user_id", "item_id"]], preserve_index=False).group_by("user_id", use_threads=False)
    latest = latest.aggregate([("item_id", "list")]).rename_columns(["user_id", "history"]).to_pandas()
    served = users.merge(latest, on="user_id", how="left")
    served["history"] = [list(h) if isinstance(h, np.ndarray) else [] for h in served["history"]]
    served.to_parquet(out / "users.parquet")
    items.to_parquet(out / "items.parquet")


# -- the fresh pipeline, old code against new ---------------------------------------------


def fresh_pipeline(tree: str) -> dict[str, float]:
    """``mlsys run train.max_epochs=1`` of ``tree``'s code in a fresh home: wall and per-step compute seconds."""
    home = Path(tempfile.mkdtemp(prefix="mlsys-bench-"))
    env = {**os.environ, "PYTHONPATH": tree}
    try:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sys; from mlsys.cli.main import main; sys.exit(main())",
                        "run", f"home.root={home}", "train.max_epochs=1"], cwd=tree, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        steps = {p.parent.name: json.loads(p.read_text())["seconds"] for p in (home / "cache").glob("*/*.json")}
        return {"wall": wall, **steps}
    finally:
        shutil.rmtree(home, ignore_errors=True)


# -- main ----------------------------------------------------------------------------------


def measure(name: str, cfg, repeats: int) -> tuple[Row, str]:
    root = Path(tempfile.mkdtemp(prefix="mlsys-data-steps-"))
    runs: list[dict] = []

    def fresh() -> Path:
        path = Path(tempfile.mkdtemp(dir=root))
        return path

    def cand() -> float:
        out = fresh()
        runs.append(candidate(cfg, out))
        shutil.rmtree(out, ignore_errors=True)
        return sum(v for k, v in runs[-1].items() if k != "executor")

    def base() -> float:
        out = fresh()
        started = time.perf_counter()
        baseline(cfg, out)
        seconds = time.perf_counter() - started
        shutil.rmtree(out, ignore_errors=True)
        return seconds

    try:
        print(f"{name}:", flush=True)
        c, b = interleaved(cand, base, repeats)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    executor = runs[0]["executor"]
    steps = ", ".join(f"{s} {median([r[s] for r in runs]):.2f} s" for s in ("ingest", "statistics", "transform"))
    row = Row(f"data steps, {name}", f"mlsys ingest + statistics + transform ({executor})", "pandas/pyarrow, 1 process",
              median(c), median(b), "s", repeats)
    return row, f"{name}: per step (median) {steps}; executor {executor}."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--num-cpus", type=int, default=4, help="the embedded Ray's logical CPUs (mlsys' default)")
    parser.add_argument("--skip-movielens", action="store_true")
    parser.add_argument("--old-tree", help="a checkout of the code before (git worktree add ...): times fresh `mlsys run`")
    parser.add_argument("--new-tree", default=str(REPO))
    parser.add_argument("--pipeline-repeats", type=int, default=2)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    import ray

    from mlsys.api.config import compose_config

    load = os.getloadavg()[0]
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows, notes = [], [f"Load average at start: {load:.1f}."]
    sizes = [] if args.skip_movielens else [("MovieLens-100K", compose_config(["data=movielens"]).data)]
    if args.rows:
        synthetic = compose_config(["data=synthetic", f"data.rows={args.rows}", f"data.users={args.users}", f"data.items={args.items}"]).data
        sizes.append((f"synthetic {args.rows:,} rows ({args.users:,} users)", synthetic))
    for name, cfg in sizes:
        row, note = measure(name, cfg, args.repeats)
        rows.append(row)
        notes.append(note)
    ray.shutdown()
    if args.old_tree:
        old, new = [], []
        interleaved(lambda: new.append(fresh_pipeline(args.new_tree)) or new[-1]["wall"],
                    lambda: old.append(fresh_pipeline(args.old_tree)) or old[-1]["wall"], args.pipeline_repeats)
        rows.append(Row("fresh `mlsys run train.max_epochs=1`", "after (this change)", "before", median([r["wall"] for r in new]),
                        median([r["wall"] for r in old]), "s", args.pipeline_repeats))
        per_step = ", ".join(f"{s} {median([r[s] for r in old]):.1f} -> {median([r[s] for r in new]):.1f}"
                             for s in ("ingest", "statistics", "transform", "train"))
        notes.append(f"Fresh pipeline, step compute before -> after (median s): {per_step}.")
    notes.append(f"Load average at end: {os.getloadavg()[0]:.1f}.")
    for r in rows:
        print(r.line())
    if not args.no_record:
        record("Data steps against one pandas/pyarrow process", rows, " ".join(notes))


if __name__ == "__main__":
    main()
