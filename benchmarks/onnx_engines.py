"""Offline scoring engines of a trained model package, side by side on the same encoded inputs.

Engines, each scoring ``package.preprocessor.transform_batch(eval split)`` rows with 1 thread:

- ``torch eager``: ``package.torch_model()`` + sigmoid under ``torch.inference_mode()``, ``torch.set_num_threads(1)``;
- ``ORT FP32``: ``model.onnx`` through :func:`mlsys.registry.onnx_graphs.onnx_session` (ORT_ENABLE_ALL): the baseline;
- ``ORT opt off`` / ``ORT basic``: the same graph with graph optimizations disabled / basic only
  (what ORT_ENABLE_ALL buys; node counts of each level's optimized graph are printed);
- ``split``: the package's NumPy sparse half + ``dense.onnx`` (the split serving graph, in one process);
- ``INT8 ...``: ``onnxruntime.quantization.quantize_dynamic`` of ``model.onnx`` (MatMul weights QInt8 per
  tensor / per channel, QUInt8, and MatMul + the embedding Gather), on onnx_session;
- ``OpenVINO EP`` / ``OpenVINO native``: ``onnxruntime-openvino``'s execution provider and ``openvino``'s own
  runtime, run in a separate interpreter (``--openvino-python``, a throwaway venv: onnxruntime-openvino ships the
  same ``onnxruntime`` package as our pinned onnxruntime and would overwrite it), beside that wheel's own CPU
  provider (``OV venv ORT CPU``) as the same-process baseline.

For batch sizes 1, 4, 16, 100, 1000 (the same sampled rows for every engine): warm-up, then rounds in
which every engine (in a rotating order) makes a block of calls; the median per-call latency. AUC of
each engine on the whole eval split, scored in batches of 100 (a ranking request: dynamic INT8's
activation scales are per batch), and its drop against ORT FP32.

An option ships only where it pays: at least 1.25x faster than ORT FP32 at every serving batch size
(1-100) and an AUC drop of at most 0.001.

    python benchmarks/onnx_engines.py --home /tmp/eng-home --home /tmp/eng-din \\
        [--openvino-python /tmp/ovenv/bin/python] [--package DIR] [--eval PATH] [--no-record]

The package of a home is its registry's ``ctr@champion`` (else its newest ``ctr`` version); the eval split
is the one the package was trained against (its manifest's lineage), unless ``--eval`` names one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCHES = (1, 4, 16, 100, 1000)
SERVING = (1, 4, 16, 100)
INPUTS = ("categorical", "multi_hot", "history", "numeric")  # mlsys.models.MODEL_INPUTS (the worker has no mlsys)
AUC_BATCH = 100
PAYS_RATIO, MAX_AUC_DROP = 0.80, 0.001
OPENVINO_NOTE = (
    "OpenVINO ran in a throwaway venv (`python3 -m venv /tmp/ovenv && /tmp/ovenv/bin/pip install numpy==2.4.6 "
    "onnxruntime-openvino openvino`: onnxruntime-openvino 1.24.1, openvino 2026.4.1), not ours: onnxruntime-openvino "
    "is the `onnxruntime` package itself, built with the OpenVINO provider, so beside our onnxruntime 1.32.0 it would "
    "overwrite its files with 1.24.1's (`pip install --dry-run` flags no conflict: the two distributions share the "
    "import name). `openvino` alone would install beside our pins (dry run: openvino + openvino-telemetry only). "
    "OpenVINO's rows are held both against our ORT FP32 (another process, measured just before) and against that "
    "venv's own ORT CPU provider (same process, interleaved).")
Feed = dict[str, np.ndarray]


def calls_for(batch: int) -> int:
    """Calls per engine per round: ~equal time per batch size."""
    return {1: 100, 4: 100, 16: 80, 100: 40, 1000: 8}.get(batch, 8)


def measure(engines: dict[str, Callable[[Feed], np.ndarray]], feeds: dict[int, Feed], rounds: int) -> dict[str, dict[int, float]]:
    """Median seconds per call, per engine and batch size; engines interleaved, order rotating each round."""
    names = list(engines)
    out: dict[str, dict[int, float]] = {n: {} for n in names}
    for batch, feed in feeds.items():
        times: dict[str, list[float]] = {n: [] for n in names}
        for n in names:  # warm-up
            for _ in range(max(5, calls_for(batch) // 4)):
                engines[n](feed)
        for r in range(rounds):
            for n in names[r % len(names):] + names[: r % len(names)]:
                fn, ts = engines[n], times[n]
                for _ in range(calls_for(batch)):
                    started = time.perf_counter()
                    fn(feed)
                    ts.append(time.perf_counter() - started)
        for n in names:
            out[n][batch] = float(np.median(times[n]))
        print(f"  batch {batch}: " + ", ".join(f"{n} {out[n][batch] * 1e6:.0f} us" for n in names), flush=True)
    return out


def score_all(fn: Callable[[Feed], np.ndarray], inputs: Feed, batch: int = AUC_BATCH) -> np.ndarray:
    rows = len(next(iter(inputs.values())))
    return np.concatenate([np.asarray(fn({k: v[i : i + batch] for k, v in inputs.items()})).reshape(-1)
                           for i in range(0, rows, batch)])


# ---- the OpenVINO worker: runs in the throwaway venv (numpy, onnxruntime-openvino, openvino; no mlsys) ----

def openvino_engines(onnx_path: str) -> tuple[dict[str, Callable[[Feed], np.ndarray]], dict[str, str]]:
    import onnxruntime as ort
    import openvino as ov

    def session(providers, provider_options=None):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(onnx_path, options, providers=providers, provider_options=provider_options)

    cpu = session(["CPUExecutionProvider"])
    ep = session(["OpenVINOExecutionProvider", "CPUExecutionProvider"],
                 [{"device_type": "CPU", "num_of_threads": "1", "precision": "FP32"}, {}])
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    compiled = core.compile_model(onnx_path, "CPU", config)  # dynamic batch, as exported
    request, output = compiled.create_infer_request(), compiled.output("score")
    static: dict[int, tuple] = {}  # batch -> (request, output) of a model compiled for that one batch size

    def native_static(feed):
        batch = len(feed["categorical"])
        if batch not in static:
            model = core.read_model(onnx_path)
            model.reshape({k: [batch, v.shape[1]] for k, v in feed.items()})
            c = core.compile_model(model, "CPU", config)
            static[batch] = (c.create_infer_request(), c.output("score"))
        req, out = static[batch]
        return req.infer(feed)[out].copy()

    engines = {
        "OV venv ORT CPU": lambda feed: cpu.run(["score"], feed)[0],
        "OpenVINO EP": lambda feed: ep.run(["score"], feed)[0],
        "OpenVINO native": lambda feed: request.infer(feed)[output].copy(),
        "OpenVINO native, static batch": native_static,
    }
    versions = {"onnxruntime": ort.__version__, "openvino": ov.__version__, "ep_providers": ",".join(ep.get_providers())}
    return engines, versions


def worker(directory: Path) -> None:
    """Measure the OpenVINO engines on ``directory/feeds.npz`` and ``eval.npz``; write ``result.json`` + scores."""
    spec = json.loads((directory / "job.json").read_text())
    engines, versions = openvino_engines(spec["onnx"])
    feeds_npz, eval_npz = np.load(directory / "feeds.npz"), np.load(directory / "eval.npz")
    feeds = {b: {k: feeds_npz[f"{b}/{k}"] for k in INPUTS} for b in spec["batches"]}
    latency = measure(engines, feeds, spec["rounds"])
    inputs = {k: eval_npz[k] for k in INPUTS}
    for name, fn in engines.items():
        np.save(directory / f"scores-{name}.npy", score_all(fn, inputs))
    (directory / "result.json").write_text(json.dumps({"latency": latency, "versions": versions}))


def run_openvino(python: str, onnx_path: Path, feeds: dict[int, Feed], inputs: Feed, rounds: int):
    """The worker in ``python``'s environment: (latency, scores, versions), or the reason it could not run."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        np.savez(d / "feeds.npz", **{f"{b}/{k}": v for b, f in feeds.items() for k, v in f.items()})
        np.savez(d / "eval.npz", **inputs)
        (d / "job.json").write_text(json.dumps({"onnx": str(onnx_path), "batches": list(feeds), "rounds": rounds}))
        done = subprocess.run([python, __file__, "--worker", str(d)], capture_output=True, text=True)
        print(done.stdout, end="", flush=True)
        if done.returncode != 0:
            return None, None, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        result = json.loads((d / "result.json").read_text())
        latency = {n: {int(b): t for b, t in per.items()} for n, per in result["latency"].items()}
        scores = {n: np.load(d / f"scores-{n}.npy") for n in latency}
        return latency, scores, result["versions"]


# ---- the candidates in our own environment ----

def ort_session(path: Path, level: str, save_to: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def node_counts(onnx_path: Path, tmp: Path) -> dict[str, tuple[int, str]]:
    """Nodes of each optimization level's graph, and which op types it removed and added against the export."""
    import collections

    import onnx

    exported = collections.Counter(n.op_type for n in onnx.load(str(onnx_path)).graph.node)
    out = {"exported": (sum(exported.values()), "")}
    for level in ("ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"):
        saved = tmp / f"optimized-{level}.onnx"
        ort_session(onnx_path, level, saved)
        ops = collections.Counter(n.op_type for n in onnx.load(str(saved)).graph.node)
        removed, added = exported - ops, ops - exported
        out[level] = (sum(ops.values()), " ".join([f"-{k} {v}" for k, v in removed.items()] + [f"+{k} {v}" for k, v in added.items()]))
    return out


INT8_VARIANTS = {  # name: quantize_dynamic arguments ("MatMul" covers the exporter's Gemm layers too)
    "INT8 MatMul QInt8": dict(op_types_to_quantize=["MatMul"], weight_type="QInt8", per_channel=False),
    "INT8 MatMul QInt8 per-channel": dict(op_types_to_quantize=["MatMul"], weight_type="QInt8", per_channel=True),
    "INT8 MatMul QUInt8": dict(op_types_to_quantize=["MatMul"], weight_type="QUInt8", per_channel=False),
    "INT8 MatMul+Gather QInt8": dict(op_types_to_quantize=["MatMul", "Gather"], weight_type="QInt8", per_channel=False),
}
QUANTIZED_OPS = ("MatMulInteger", "DynamicQuantizeLinear", "DequantizeLinear", "Gemm", "MatMul")


def quantized(onnx_path: Path, tmp: Path) -> dict[str, Path]:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = tmp / "model.pre.onnx"
    quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
    out = {}
    for i, (name, kw) in enumerate(INT8_VARIANTS.items()):
        path = tmp / f"model.int8.{i}.onnx"
        quantize_dynamic(str(prepared), str(path), op_types_to_quantize=kw["op_types_to_quantize"],
                         weight_type=getattr(QuantType, kw["weight_type"]), per_channel=kw["per_channel"])
        out[name] = path
    return out


def op_counts(path: Path) -> str:
    import collections

    import onnx

    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    return " ".join(f"{op} {ops[op]}" for op in QUANTIZED_OPS if ops[op])


def engines_here(package, tmp: Path) -> tuple[dict[str, Callable[[Feed], np.ndarray]], dict[str, int]]:
    import torch

    from mlsys.models.zoo import Scorer
    from mlsys.registry.halves import DenseScorer, SparseLookup
    from mlsys.registry.onnx_graphs import onnx_session

    torch.set_num_threads(1)
    module = Scorer(package.torch_model()).eval()

    def torch_eager(feed):
        with torch.inference_mode():
            return module(*(torch.from_numpy(feed[k]) for k in INPUTS)).numpy()

    def ort(session):
        return lambda feed: session.run(["score"], feed)[0]

    sparse, dense = SparseLookup.load(package.path), DenseScorer(package.path, 1)
    engines = {
        "torch eager": torch_eager,
        "ORT FP32": ort(onnx_session(package.onnx_path, 1)),
        "ORT opt off": ort(ort_session(package.onnx_path, "ORT_DISABLE_ALL")),
        "ORT basic": ort(ort_session(package.onnx_path, "ORT_ENABLE_BASIC")),
        "split": lambda feed: dense.score(sparse(*(feed[k] for k in INPUTS))),
    }
    sizes = {"model.onnx": (package.onnx_path.stat().st_size, op_counts(package.onnx_path))}
    for name, path in quantized(package.onnx_path, tmp).items():
        engines[name] = ort(onnx_session(path, 1))
        sizes[name] = (path.stat().st_size, op_counts(path))
    return engines, sizes


# ---- one package ----

def resolve(home: str, model: str) -> str:
    from mlflow.exceptions import MlflowException

    from mlsys.registry import mlflow_store

    uri = f"sqlite:///{Path(home).resolve()}/mlflow.db"
    try:
        return mlflow_store.resolve(uri, f"{model}@champion").source
    except Exception:  # noqa: BLE001 -- no champion alias: the newest version
        try:
            versions = mlflow_store.client(uri).search_model_versions(f"name='{model}'")
        except MlflowException as e:
            raise SystemExit(f"no registry at {uri}: {e}") from None
        if not versions:
            raise SystemExit(f"the registry at {uri} has no versions of {model!r}: run `mlsys run home.root={home}` first")
        return max(versions, key=lambda v: int(v.version)).source.removeprefix("file://")


def bench_package(source: str, eval_path: str | None, ov_python: str | None, rounds: int, rng: np.random.Generator) -> dict:
    import pandas as pd

    from mlsys.evaluate.metrics import auc
    from mlsys.registry.package import read_package

    package = read_package(source)
    split = eval_path or package.manifest["lineage"]["eval"]
    frame = pd.read_parquet(split)
    labels = frame["label"].to_numpy()
    encoded = package.preprocessor.transform_batch(frame)
    inputs = {k: np.ascontiguousarray(encoded[k]) for k in INPUTS}
    picks = {b: rng.choice(len(frame), b, replace=b > len(frame)) for b in BATCHES}
    feeds = {b: {k: np.ascontiguousarray(v[idx]) for k, v in inputs.items()} for b, idx in picks.items()}
    model = package.manifest["model"]
    print(f"{model}: package {package.path}, eval {split} ({len(frame)} rows)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        nodes = node_counts(package.onnx_path, Path(tmp))
        engines, sizes = engines_here(package, Path(tmp))
        latency = measure(engines, feeds, rounds)
        scores = {n: score_all(fn, inputs) for n, fn in engines.items()}
    versions: dict | str = "not run (no --openvino-python)"
    if ov_python:
        ov_latency, ov_scores, versions = run_openvino(ov_python, package.onnx_path, feeds, inputs, rounds)
        if ov_latency is not None:
            latency.update(ov_latency)
            scores.update(ov_scores)
    base = scores["ORT FP32"]
    quality = {n: {"auc": auc(labels, s), "max_abs_diff": float(np.abs(s - base).max())} for n, s in scores.items()}
    return {"model": model, "rows": len(frame), "latency": latency, "quality": quality, "nodes": nodes,
            "sizes": sizes, "openvino": versions}


# ---- report ----

def verdicts(r: dict) -> dict[str, str]:
    """The options (INT8, OpenVINO): pay or not. OpenVINO is also held against its own venv's ORT CPU (same process)."""
    lat, q, fp32 = r["latency"], r["quality"], r["latency"]["ORT FP32"]
    out = {}
    for name in lat:
        if not name.startswith(("INT8", "OpenVINO")):
            continue
        worst = max(lat[name][b] / fp32[b] for b in SERVING)
        if name.startswith("OpenVINO"):
            worst = max(worst, max(lat[name][b] / lat["OV venv ORT CPU"][b] for b in SERVING))
        drop = q["ORT FP32"]["auc"] - q[name]["auc"]
        pays = worst <= PAYS_RATIO and drop <= MAX_AUC_DROP
        out[name] = f"{'pays' if pays else 'does not pay'} (slowest at batch 1-100: {worst:.2f}x FP32 ORT's time; AUC drop {drop:+.5f})"
    return out


def report(r: dict) -> str:
    lat, q, fp32, eager = r["latency"], r["quality"], r["latency"]["ORT FP32"], r["latency"]["torch eager"]
    head = "| engine | " + " | ".join(f"batch {b}" for b in BATCHES) + " | x ORT FP32 (1 / 16 / 100 / 1000) | AUC | drop vs FP32 |"
    lines = [f"**{r['model']}** ({r['rows']} eval rows). Median latency per call, us:", "", head,
             "|---" * (len(BATCHES) + 4) + "|"]
    for name, per in lat.items():
        ratios = " / ".join(f"{per[b] / fp32[b]:.2f}" for b in (1, 16, 100, 1000))
        lines.append(f"| {name} | " + " | ".join(f"{per[b] * 1e6:.0f}" for b in BATCHES)
                     + f" | {ratios} | {q[name]['auc']:.5f} | {q['ORT FP32']['auc'] - q[name]['auc']:+.5f} |")
    lines += ["", "ORT FP32 speed-up over torch eager: " + ", ".join(f"batch {b} {eager[b] / fp32[b]:.2f}x" for b in BATCHES) + "."]
    lines += ["Graph nodes, exported and after each ORT optimization level (op types removed/added): " + "; ".join(
        f"{lvl.removeprefix('ORT_')} {n}" + (f" ({diff})" if diff else "") for lvl, (n, diff) in r["nodes"].items()) + "."]
    lines += ["Graphs: " + "; ".join(f"{k} {size / 1024:.0f} KiB ({ops})" for k, (size, ops) in r["sizes"].items())
              + f". OpenVINO venv: {r['openvino']}."]
    lines += ["Max |score - ORT FP32|: " + ", ".join(f"{n} {v['max_abs_diff']:.1e}" for n, v in q.items() if n != "ORT FP32") + "."]
    lines += ["Verdicts: " + "; ".join(f"{n}: {v}" for n, v in verdicts(r).items()) + "."]
    return "\n".join(lines)


def rows(r: dict, rounds: int) -> list:
    """ORT FP32 against torch eager at every batch size; every other engine against ORT FP32 at its slowest
    serving batch size (the one that decides whether it pays; the section's table has them all)."""
    from harness import Row

    lat, m, fp32 = r["latency"], r["model"], "ORT FP32 (onnx_session)"
    out = [Row(f"{m}: latency per call, batch {b}", fp32, "torch eager", lat["ORT FP32"][b] * 1e6,
               lat["torch eager"][b] * 1e6, "us", rounds * calls_for(b)) for b in BATCHES]
    for n in lat:
        if n in ("ORT FP32", "torch eager"):
            continue
        b = max(SERVING, key=lambda b: lat[n][b] / lat["ORT FP32"][b])
        out.append(Row(f"{m}: latency per call, batch {b} (its slowest against FP32 of 1-100)", n, fp32,
                       lat[n][b] * 1e6, lat["ORT FP32"][b] * 1e6, "us", rounds * calls_for(b)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", action="append", default=[], help="an mlsys home whose registry holds the model")
    parser.add_argument("--package", action="append", default=[], help="a package folder or URI")
    parser.add_argument("--model", default="ctr", help="registered model name in each home")
    parser.add_argument("--eval", default=None, help="eval split (Parquet); default: the package's own")
    parser.add_argument("--openvino-python", default=None, help="interpreter of a venv with onnxruntime-openvino and openvino")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(Path(args.worker))
    sources = [resolve(h, args.model) for h in args.home] + args.package
    if not sources:
        parser.error("give --home or --package")
    load = os.getloadavg()[0]
    results = [bench_package(s, args.eval, args.openvino_python, args.rounds, np.random.default_rng(0)) for s in sources]
    texts = [report(r) for r in results]
    print("\n\n".join(texts))
    if not args.no_record:
        from harness import record

        notes = "\n\n".join(texts) + (
            f"\n\n1 intra-op thread everywhere; medians over {args.rounds} interleaved rounds per batch size "
            f"(calls per round: {', '.join(f'{b}: {calls_for(b)}' for b in BATCHES)}). AUC on the package's eval split "
            f"scored in batches of {AUC_BATCH}. 1-minute load {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.\n\n"
            + OPENVINO_NOTE)
        record("Scoring engines: ORT vs torch eager, INT8 and OpenVINO vs FP32 ORT", [x for r in results for x in rows(r, args.rounds)], notes)


if __name__ == "__main__":
    main()
