"""One ranking request in-process: ``RankingModel.rank`` against its ONNX Runtime call alone
(issue 12: rank <= 2x its ORT call at 100 candidates), after (the package's tables encoded once,
NumPy end to end) and before (a pandas frame of raw rows per request, ``--old-tree``).

Each tree runs in its own worker process (the same venv, ``PYTHONPATH`` at the tree) on the same
package and the same requests (users and items of the package's tables, a tenth unknown, the
schema's context if any); the driver alternates rounds between them. A call times ``rank`` and
then ``session.run`` on the same request's model inputs; medians over every call after warm-up.
Before timing, both trees' model inputs and scores for every request are compared bit for bit.

    python benchmarks/rank_hot_path.py --old-tree /tmp/rank-old \\
        [--package deepfm=PATH --package din=PATH] [--candidates 100 1000] [--calls 400]

``--old-tree``: a checkout of the code before (``git worktree add --detach /tmp/rank-old <commit>``).
Without ``--package``, each of ``--models`` is built by a tiny pipeline run
(``mlsys run home.root=<--home> train.max_epochs=1 model=<name>``, starts Ray, a few minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Row, median, record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WARMUP, REQUESTS = 100, 64


# -- worker: one tree, one package, one request size ---------------------------------------------


def _requests(package, n: int, seed: int) -> list[tuple[int, list[int], dict | None]]:
    """The same requests in every tree: drawn from the package's tables, ids outside them for a tenth."""
    from mlsys.data.feature_schema import ITEM, USER, Kind

    rng = np.random.default_rng(seed)
    users, items = package.users[USER].to_numpy(), package.items[ITEM].to_numpy()
    unknown = int(max(users.max(), items.max())) + 1
    pre = package.preprocessor
    out = []
    for _ in range(REQUESTS):
        user = int(rng.choice(users)) if rng.random() > 0.1 else unknown
        candidates = rng.choice(items, n, replace=len(items) < n)
        candidates[rng.random(n) < 0.1] = unknown + 1
        context = {}
        for name in pre.schema.context:
            kind, vocabulary = pre.schema.kind(name), pre.vocabularies_.get(name) or ["?"]
            if kind is Kind.numeric:
                context[name] = float(rng.gamma(2.0, 10.0))
            elif kind is Kind.multi_hot:
                context[name] = [str(v) for v in rng.choice(vocabulary, 2)]
            else:
                context[name] = str(rng.choice(vocabulary))
        out.append((user, [int(c) for c in candidates], context or None))
    return out


def worker(path: str, n: int, seed: int) -> None:
    from mlsys.models import MODEL_INPUTS
    from mlsys.registry.package import read_package
    from mlsys.serve.ranker import RankingModel

    package = read_package(path)
    model = RankingModel(package, engine="onnx")
    requests = _requests(package, n, seed)
    if hasattr(model, "encode"):  # after: the encoded tables
        inputs = [model.encode(u, c, ctx).inputs for u, c, ctx in requests]
    else:  # before: the raw rows through the preprocessor
        inputs = []
        for u, c, ctx in requests:
            encoded = package.preprocessor.transform_batch(model.request_frame(u, c, ctx)[0])
            inputs.append({k: encoded[k] for k in MODEL_INPUTS})
    session = model.scorer._session
    for i in range(WARMUP):
        u, c, ctx = requests[i % REQUESTS]
        model.rank(u, c, context=ctx)
        session.run(["score"], inputs[i % REQUESTS])
    print(json.dumps({"ready": __import__("mlsys").__file__}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "check":
            digests = []
            for (u, c, ctx), x in zip(requests, inputs):
                ranking = model.rank(u, c, context=ctx)
                h = hashlib.sha256()
                for k in MODEL_INPUTS:
                    h.update(f"{k}{x[k].dtype}{x[k].shape}".encode() + np.ascontiguousarray(x[k]).tobytes())
                digests.append([h.hexdigest(), hashlib.sha256(ranking.scores.tobytes()).hexdigest(),
                                [s.item_id for s in ranking.items][:10], ranking.unknown_user, ranking.unknown_items])
            print(json.dumps(digests), flush=True)
        elif command[0] == "time":
            rank_s, ort_s = [], []
            for i in range(int(command[1])):
                u, c, ctx = requests[i % REQUESTS]
                t0 = time.perf_counter()
                model.rank(u, c, context=ctx)
                t1 = time.perf_counter()
                session.run(["score"], inputs[i % REQUESTS])
                t2 = time.perf_counter()
                rank_s.append(t1 - t0)
                ort_s.append(t2 - t1)
            print(json.dumps({"rank": rank_s, "ort": ort_s}), flush=True)


# -- driver ---------------------------------------------------------------------------------------


class Worker:
    def __init__(self, tree: str, path: str, n: int, seed: int):
        env = {**os.environ, "PYTHONPATH": tree}
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", path, "--n", str(n), "--seed", str(seed)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tree)
        self.module = self._read()["ready"]

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited ({self.proc.wait()})")
        return json.loads(line)

    def ask(self, command: str):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def build_package(model: str, home: Path) -> str:
    """A tiny pipeline run (Ray) registering ``model``; its package folder."""
    mlsys_cli = str(Path(sys.executable).parent / "mlsys")
    out = subprocess.run([mlsys_cli, "run", f"home.root={home}", "train.max_epochs=1", f"model={model}"],
                         capture_output=True, text=True, check=True).stdout
    version = re.search(r"registered model (\S+) version (\d+)", out)
    import mlsys

    return str(mlsys.load_model(f"models:/{version[1]}/{version[2]}", tracking_uri=f"sqlite:///{home}/mlflow.db").package.path)


def measure(name: str, path: str, n: int, old_tree: str | None, calls: int, rounds: int) -> tuple[list[Row], str]:
    trees = {"after": str(REPO), **({"before": old_tree} if old_tree else {})}
    workers = {label: Worker(tree, path, n, seed=n) for label, tree in trees.items()}
    try:
        checks = {label: w.ask("check") for label, w in workers.items()}
        same = "before" not in checks or checks["before"] == checks["after"]
        if not same:
            bad = sum(a != b for a, b in zip(checks["before"], checks["after"]))
            raise SystemExit(f"{name}, {n} candidates: model inputs or scores differ between the trees in {bad}/{REQUESTS} requests")
        times = {label: {"rank": [], "ort": []} for label in workers}
        for r in range(rounds):
            for label in (list(workers) if r % 2 == 0 else list(workers)[::-1]):
                got = workers[label].ask(f"time {calls // rounds}")
                for key in ("rank", "ort"):
                    times[label][key] += got[key]
    finally:
        for w in workers.values():
            w.close()
    us = {label: {k: median(v) * 1e6 for k, v in t.items()} for label, t in times.items()}
    count = len(times["after"]["rank"])
    rows = [Row(f"{name}, {n} candidates: rank / its ORT call", "`rank` (encoded tables)", "`session.run` alone",
                us["after"]["rank"], us["after"]["ort"], "µs", count)]
    if "before" in us:
        rows += [Row(f"{name}, {n} candidates, before: rank / its ORT call", "`rank` (pandas rows)", "`session.run` alone",
                     us["before"]["rank"], us["before"]["ort"], "µs", count),
                 Row(f"{name}, {n} candidates: rank after / before", "`rank` after", "`rank` before",
                     us["after"]["rank"], us["before"]["rank"], "µs", count)]
    for row in rows:
        print(row.line(), flush=True)
    note = (f"{name}, {n} candidates: both trees' model inputs and scores identical on {REQUESTS} requests" if old_tree
            else f"{name}, {n} candidates: no old tree to compare")
    return rows, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--package", action="append", default=[], help="NAME=PATH of a model package folder (repeatable)")
    parser.add_argument("--models", nargs="+", default=["deepfm", "din"], help="built by a pipeline run when no --package")
    parser.add_argument("--home", default="/tmp/mlsys-rank-hot-path", help="home.root of that pipeline run")
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--calls", type=int, default=400, help="timed calls per tree and size (after warm-up)")
    parser.add_argument("--rounds", type=int, default=4, help="alternations between the trees")
    parser.add_argument("--old-tree", help="a checkout of the code before")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.n, args.seed)
    packages = dict(p.split("=", 1) for p in args.package) or {m: build_package(m, Path(args.home)) for m in args.models}
    load = os.getloadavg()[0]
    rows, notes = [], [f"Load average at start: {load:.2f}."]
    for name, path in packages.items():
        for n in args.candidates:
            got, note = measure(name, path, n, args.old_tree, args.calls, args.rounds)
            rows += got
            notes.append(note + ".")
    notes.append(f"Load average at end: {os.getloadavg()[0]:.2f}.")
    if not args.no_record:
        record("Ranking hot path, in-process", rows, " ".join(notes))


if __name__ == "__main__":
    main()
