"""User-sequence caching: BST-cached scored in two parts against naive per-candidate scoring.

Candidate: :class:`mlsys.registry.user_side.UserSideScorer` over the two ONNX graphs of
``model=bst_cached`` (``user.onnx`` encodes the user's history and fields once,
``candidates.onnx`` scores every candidate against that state in one batched pass),
with the state in its :class:`UserStateCache` (a hit: only the candidate graph runs)
and without a cache (both graphs run every request). Baseline: what serving runs today,
the fused ``model.onnx`` of the same model over the N rows with the history repeated in
each; also full BST's fused ``model.onnx``. One request = one user and N candidates,
the preprocessor's arrays (categorical (N, F), multi_hot (N, K W), history (N, L),
numeric (N, N_num)), MovieLens-100K's shapes and vocabularies, the default model
settings (embed_dim 16, 2 heads, 1 layer, MLP [128, 64]). ONNX Runtime, one intra-op
thread, in this one process; every path is timed in each repeat, in rotating order, as
the mean of a block of calls; medians over repeats. Weights are random: the work does
not depend on them (the scores' equality is tests/unit/test_user_side.py's).

    python benchmarks/user_sequence_cache.py [--history 20 50] [--candidates 100 1000] [--repeats 15] [--no-record]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import Row, median, record  # noqa: E402

# MovieLens-100K as the pipeline encodes it (data=movielens): vocabularies with padding and OOV.
CATEGORICAL = (("user_id", 945), ("item_id", 1351), ("gender", 4), ("occupation", 23))
GENRES, MULTI_HOT_LENGTH, NUMERIC = 20, 4, ("age", "year")
USER_FIELDS = ("user_id", "gender", "occupation", "age")  # what data.user_table declares, with the user id


def spec_for(history: int):
    from mlsys.models import InputSpec

    return InputSpec(tuple(n for n, _ in CATEGORICAL), tuple(s for _, s in CATEGORICAL), "item_id", ("genres",), (GENRES,),
                     MULTI_HOT_LENGTH, history, NUMERIC)


def request(spec, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """One user, n distinct candidate items; a full history (the fused graph's work does not depend on padding)."""
    user = [rng.integers(2, size) for _, size in CATEGORICAL]
    categorical = np.tile(np.array(user, dtype=np.int64), (n, 1))
    categorical[:, 1] = rng.choice(np.arange(2, spec.item_size), n, replace=False)
    multi_hot = rng.integers(0, GENRES, (n, MULTI_HOT_LENGTH)).astype(np.int64)
    history = np.tile(rng.integers(2, spec.item_size, spec.history_length), (n, 1)).astype(np.int64)
    numeric = np.column_stack([np.full(n, rng.normal()), rng.normal(size=n)]).astype(np.float32)
    return categorical, multi_hot, history, numeric


def sessions(spec, directory: Path):
    """The scorers of one history length: two-part BST-cached (with and without cache), fused BST-cached, fused BST."""
    import onnxruntime as ort
    import torch

    from mlsys.models import ModelConfig
    from mlsys.models.zoo import build_model
    from mlsys.registry.package import export_onnx
    from mlsys.registry.user_side import UserSideScorer, UserStateCache, export_user_side

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    fused = {}
    for name in ("bst_cached", "bst"):
        torch.manual_seed(0)
        model = build_model(spec, ModelConfig(name=name)).eval()
        export_onnx(model, spec, directory / f"{name}.onnx")
        fused[name] = ort.InferenceSession(str(directory / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
        if name == "bst_cached":
            export_user_side(model, spec, directory, USER_FIELDS)
    return UserSideScorer(directory, spec, cache=UserStateCache(max_entries=1000)), fused


def paths(spec, n: int, directory: Path, rng: np.random.Generator) -> dict:
    scorer, fused = sessions(spec, directory)
    categorical, multi_hot, history, numeric = request(spec, n, rng)
    feeds = {"categorical": categorical, "multi_hot": multi_hot, "history": history, "numeric": numeric}
    calls = {
        "cached": lambda: scorer.score(categorical, multi_hot, history, numeric, user_id=1),
        "uncached": lambda: scorer.score(categorical, multi_hot, history, numeric),
        "fused_variant": lambda: fused["bst_cached"].run(["score"], feeds),
        "fused_bst": lambda: fused["bst"].run(["score"], feeds),
    }
    expected = calls["fused_variant"]()[0]
    got = calls["cached"]()
    assert np.abs(got - expected).max() < 1e-5, "the two-part scores differ from the fused graph's"
    return calls


def measure(calls: dict, repeats: int, block_s: float) -> dict[str, list[float]]:
    sizes = {}
    for name, fn in calls.items():  # warm up, then size each block to about block_s
        for _ in range(3):
            fn()
        started = time.perf_counter()
        for _ in range(5):
            fn()
        sizes[name] = max(3, int(block_s / ((time.perf_counter() - started) / 5)))
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn, k = calls[name], sizes[name]
            started = time.perf_counter()
            for _ in range(k):
                fn()
            times[name].append((time.perf_counter() - started) / k * 1e3)
    return times


def wait_for_quiet(limit: float, max_wait_s: float) -> float:
    waited = 0.0
    while os.getloadavg()[0] >= limit and waited < max_wait_s:
        print(f"load {os.getloadavg()[0]:.2f} >= {limit}: waiting", flush=True)
        time.sleep(30)
        waited += 30
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--history", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--block", type=float, default=0.05, help="seconds of calls per timed block")
    parser.add_argument("--quiet-load", type=float, default=1.5)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    for name in ("torch.onnx", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    load_start = wait_for_quiet(args.quiet_load, max_wait_s=1800)
    rng = np.random.default_rng(0)
    rows, speedups = [], []
    for length in args.history:
        spec = spec_for(length)
        for n in args.candidates:
            with tempfile.TemporaryDirectory() as tmp:
                times = measure(paths(spec, n, Path(tmp), rng), args.repeats, args.block)
            med = {k: median(v) for k, v in times.items()}
            where = f"L={length}, {n} candidates"
            rows += [
                Row(f"{where}: cache hit", "two-part ONNX, state cached", "fused bst_cached ONNX, N rows",
                    med["cached"], med["fused_variant"], "ms", args.repeats),
                Row(f"{where}: no cache", "two-part ONNX, user encoded", "fused bst_cached ONNX, N rows",
                    med["uncached"], med["fused_variant"], "ms", args.repeats),
                Row(f"{where}: vs full BST", "two-part ONNX, state cached", "fused bst ONNX, N rows",
                    med["cached"], med["fused_bst"], "ms", args.repeats),
            ]
            speedups.append((length, n, med))
            print(f"{where}: cached {med['cached']:.3f} ms, uncached {med['uncached']:.3f} ms, fused variant "
                  f"{med['fused_variant']:.3f} ms, fused BST {med['fused_bst']:.3f} ms -> "
                  f"{med['fused_variant'] / med['cached']:.1f}x (hit), {med['fused_variant'] / med['uncached']:.1f}x (no cache)",
                  flush=True)
    load_end = os.getloadavg()[0]
    table = ["| history | candidates | speed-up, cache hit | speed-up, no cache | vs full BST fused, cache hit | target |",
             "|---|---|---|---|---|---|"]
    for length, n, med in speedups:
        target = {100: ">= 10x", 1000: ">= 20x"}.get(n, "(reported)")
        table.append(f"| {length} | {n:,} | **{med['fused_variant'] / med['cached']:.1f}x** | "
                     f"{med['fused_variant'] / med['uncached']:.1f}x | {med['fused_bst'] / med['cached']:.1f}x | {target} |")
    notes = "\n".join([
        "Ratio = two-part time / fused time (lower is faster); the speed-ups (fused / two-part):", "",
        *table, "",
        f"Per call, one request of one user: `UserSideScorer.score` (with the row checks and, on a hit, the cache "
        f"lookup) against `InferenceSession.run` of the fused graph. User fields encoded once: {', '.join(USER_FIELDS)}. "
        f"ONNX Runtime 1 intra-op thread; blocks of ~{args.block * 1000:.0f} ms of calls, rotating order. "
        f"1-minute load average {load_start:.2f} at the start, {load_end:.2f} at the end (2 cores, no GPU).",
    ])
    noisy = load_end >= args.quiet_load + 1.0  # this process alone adds about 1 to the 1-minute load
    if noisy:
        print(f"the machine got busy (load {load_end:.2f} at the end): not recorded; rerun when it is quiet")
    if args.no_record or noisy:
        print("\n".join(r.line() for r in rows))
        print(notes)
    else:
        record("User-sequence caching: BST-cached two-part ONNX vs naive per-candidate scoring", rows, notes)


if __name__ == "__main__":
    main()
