"""Batch prediction: ``mlsys predict`` (Ray Data, an actor pool) against one process looping over the same
file with ``load_model``, side by side on the same Parquet file of (user, item) rows.

Input: ``--rows`` rows (default 10 million) of (user_id, item_id) drawn from the trained package's
own ids (items by a Zipf-like popularity), one Parquet file with pyarrow's default row groups.

- candidate: the ``mlsys predict`` executable, end to end (start-up, Ray, the actor pool, the
  writes), with its defaults; its own summary line gives the time inside Ray too;
- baseline: a fresh Python process that loops over the file in batches
  (``ParquetFile.iter_batches``) and scores each with ``mlsys.load_model(...)``: ``rank(user,
  items).scores`` per user of the batch (the serving path: the package's tables, the fitted
  preprocessor, ONNX Runtime with 1 thread), and writes the scores with a ``ParquetWriter``;
- also the predict core alone in one process (``BatchPredictor`` over the same batches, no Ray):
  what the actor pool parallelises.

Both check their outputs: the same scores for the same rows (1e-5). Each command is run as a
subprocess and timed from outside; rows/s and the ratio are printed and recorded.

    python benchmarks/batch_predict.py [--rows 10000000] [--repeats 1] [--home /tmp/bench-predict] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from harness import Row, median, record  # noqa: E402

MLSYS = str(Path(sys.executable).parent / "mlsys")
BATCH = 100_000


def ensure_model(home: Path) -> str:
    """The package of ``ctr@champion`` in ``home``, trained there first if none is registered."""
    from mlsys.config import HomeConfig
    from mlsys.registry import mlflow_store

    uri = mlflow_store.tracking_uri(HomeConfig(root=str(home)))
    try:
        return mlflow_store.resolve(uri, "ctr@champion").source
    except Exception:
        subprocess.run([MLSYS, "run", f"home.root={home}", "train.max_epochs=1"], check=True, cwd=ROOT)
        return mlflow_store.resolve(uri, "ctr@champion").source


def write_input(package_uri: str, rows: int, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlsys.registry.package import read_package

    package = read_package(package_uri)
    users, items = package.users.user_id.to_numpy(), package.items.item_id.to_numpy()
    rng = np.random.default_rng(0)
    popularity = 1.0 / np.arange(1, len(items) + 1) ** 0.8
    with pq.ParquetWriter(path, pa.schema([("user_id", pa.int64()), ("item_id", pa.int64())])) as writer:
        for start in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - start)
            writer.write_table(pa.table({"user_id": rng.choice(users, n),
                                         "item_id": rng.choice(items, n, p=popularity / popularity.sum())}))


LOOP = r'''
import sys, numpy as np, pandas as pd, pyarrow as pa, pyarrow.parquet as pq
import mlsys
model = mlsys.load_model(sys.argv[1])
writer = None
for batch in pq.ParquetFile(sys.argv[2]).iter_batches(batch_size=int(sys.argv[4])):
    rows = batch.to_pandas()
    scores = np.empty(len(rows), np.float32)
    for user, group in rows.groupby("user_id", sort=False):
        for start in range(0, len(group), 1000):  # rank's candidate limit
            part = group.iloc[start : start + 1000]
            scores[part.index.to_numpy()] = model.rank(int(user), part.item_id.tolist()).scores
    out = pa.Table.from_pandas(rows.assign(score=scores), preserve_index=False)
    writer = writer or pq.ParquetWriter(sys.argv[3], out.schema)
    writer.write_table(out)
writer.close()
'''

CORE = r'''
import sys, pyarrow as pa, pyarrow.parquet as pq
from mlsys.registry.package import read_package
from mlsys.serve.predict import BatchPredictor
predictor = BatchPredictor(read_package(sys.argv[1]))
writer = None
for batch in pq.ParquetFile(sys.argv[2]).iter_batches(batch_size=int(sys.argv[4])):
    out = predictor.predict(pa.Table.from_batches([batch])).scored
    writer = writer or pq.ParquetWriter(sys.argv[3], out.schema)
    writer.write_table(out)
writer.close()
'''


def timed(cmd: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"{cmd[:3]} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def check_same_scores(predicted: Path, looped: Path, sample: int = 200_000) -> float:
    import pandas as pd

    ours = pd.read_parquet(predicted, columns=["row_id", "score"]).sort_values("row_id").score.to_numpy()
    theirs = pd.read_parquet(looped, columns=["score"]).score.to_numpy()
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    idx = np.random.default_rng(1).choice(len(ours), min(sample, len(ours)), replace=False)
    worst = float(np.max(np.abs(ours[idx] - theirs[idx])))
    assert worst <= 1e-5, worst
    return worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--home", default="/tmp/bench-predict")
    p.add_argument("--no-core", action="store_true", help="skip the predict core in one process")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    home, work = Path(args.home), Path(args.home) / "batch_predict"
    work.mkdir(parents=True, exist_ok=True)
    package = ensure_model(home)
    data = work / f"rows-{args.rows}.parquet"
    if not data.exists():
        write_input(package, args.rows, data)
    print(f"input {data} ({args.rows:,} rows), package {package}, load {os.getloadavg()[0]:.2f}", flush=True)
    python = sys.executable
    ray_s, inner_s, loop_s, core_s = [], [], [], []
    for i in range(args.repeats):
        out = work / "predicted"
        seconds, stdout = timed([MLSYS, "predict", "--model", package, "--input", str(data), "--output", str(out),
                                 f"home.root={home}", "predict.overwrite=true", "predict.stats=true"])
        ray_s.append(seconds)
        inner_s.append(float(re.search(r"rows in ([0-9.]+)s", stdout).group(1)))
        print(stdout[-6000:] if i == 0 else "", flush=True)
        seconds, _ = timed([python, "-c", LOOP, package, str(data), str(work / "looped.parquet"), str(BATCH)])
        loop_s.append(seconds)
        worst = check_same_scores(out, work / "looped.parquet")
        if not args.no_core:
            seconds, _ = timed([python, "-c", CORE, package, str(data), str(work / "core.parquet"), str(BATCH)])
            core_s.append(seconds)
        print(f"  repeat {i + 1}/{args.repeats}: mlsys predict {ray_s[-1]:.1f}s (inside Ray {inner_s[-1]:.1f}s), "
              f"load_model loop {loop_s[-1]:.1f}s" + (f", core in one process {core_s[-1]:.1f}s" if core_s else "")
              + f"; max |score difference| {worst:.2g}; load {os.getloadavg()[0]:.2f}", flush=True)
    rate = lambda s: args.rows / median(s)  # noqa: E731
    rows = [Row(f"{args.rows:,} rows, end to end", "`mlsys predict` (Ray Data, 2 actors)", "load_model loop, one process",
                rate(ray_s), rate(loop_s), "rows/s", args.repeats),
            Row(f"{args.rows:,} rows, inside Ray", "`mlsys predict` execution (after start-up)", "load_model loop, one process",
                rate(inner_s), rate(loop_s), "rows/s", args.repeats)]
    if core_s:
        rows.append(Row(f"{args.rows:,} rows", "predict core, one process (no Ray)", "load_model loop, one process",
                        rate(core_s), rate(loop_s), "rows/s", args.repeats))
    for r in rows:
        print(r.line())
    if not args.no_record:
        record("Batch prediction: mlsys predict against a load_model loop", rows,
               notes=f"Ratio = rows/s of the candidate over the baseline's (higher is better). Load average at the end: "
                     f"{os.getloadavg()[0]:.2f}. Scores of both agree within 1e-5 (checked on a sample).")


if __name__ == "__main__":
    main()
