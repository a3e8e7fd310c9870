"""The model zoo against DeepCTR-Torch: training throughput and AUC on MovieLens-100K.

Data: our pipeline's MovieLens-100K split (``mlsys run pipeline.until=transform``,
cached under ``.cache/bench/model_zoo``), encoded by our fitted preprocessor;
DeepCTR-Torch gets the same arrays (benchmarks/peer/deepctr.py).

1. Throughput: DeepFM and DIN, same features, embed_dim, MLP, batch size and
   sequence length, one pass over the first ``--throughput-rows`` train rows per
   measurement, interleaved repeats on the same CPUs. Ours: the trainer's step (forward, BCE, backward,
   Adam) over in-memory tensors; peer: its own ``model.fit``.
2. Quality: eval AUC after every epoch up to ``--epochs``, median over ``--seeds``
   seeds of the first epoch's and of each run's best, for DeepFM and DIN on both
   sides (and ours initialised as the peer initialises) and all seven of our models.

    python benchmarks/model_zoo.py [--repeats 5] [--throughput-rows 80000] [--epochs 5] [--seeds 3] [--threads 2] [--no-record]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Row, interleaved, median, record  # noqa: E402
from peer import deepctr  # noqa: E402

from mlsys.evaluate.metrics import auc  # noqa: E402
from mlsys.models import MODEL_INPUTS, InputSpec, ModelConfig, ModelName  # noqa: E402
from mlsys.models.zoo import build_model  # noqa: E402
from mlsys.train.config import TrainConfig, adam_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HOME = REPO / ".cache" / "bench" / "model_zoo"
BATCH, LEARNING_RATE = 512, 0.002  # configs/train/default.yaml


def movielens_arrays() -> tuple[InputSpec, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Our train/eval split of MovieLens-100K, encoded by our preprocessor (arrays + ``label``)."""
    import pandas as pd

    import mlsys
    from mlsys.data.preprocessor import CtrPreprocessor

    done = sorted((HOME / "artifacts" / "transform").glob("*/preprocessor.json"))
    if len(done) == 1:  # an earlier run's transform output: no Ray start-up (slow on a loaded machine)
        folder = done[0].parent
        train_uri, eval_uri, preprocessor_uri = str(folder / "train"), str(folder / "eval"), done[0]
    else:
        out = mlsys.run_pipeline([f"home.root={HOME}", "pipeline.until=transform"], echo=lambda _: None).output("transform")
        train_uri, eval_uri, preprocessor_uri = out.train, out.eval, Path(out.preprocessor)
    preprocessor = CtrPreprocessor.from_json(preprocessor_uri.read_text())

    def encode(uri: str) -> dict[str, np.ndarray]:
        frame = pd.read_parquet(uri)
        arrays = {k: np.ascontiguousarray(v) for k, v in preprocessor.transform_batch(frame).items() if k in MODEL_INPUTS}
        return {**arrays, "label": frame["label"].to_numpy(np.float32)}

    return preprocessor.input_spec(), encode(train_uri), encode(eval_uri)


def train_epochs(model: torch.nn.Module, train: dict[str, np.ndarray], epochs: int, seed: int):
    """The trainer's per-batch step (DDP strategy's Adam) over shuffled in-memory tensors; yields after each epoch."""
    tensors = {k: torch.from_numpy(v) for k, v in train.items()}
    optimizer = torch.optim.Adam(model.parameters(), **adam_params(TrainConfig(learning_rate=LEARNING_RATE)))
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(tensors["label"]), generator=g)
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            logits = model(*(tensors[k][idx] for k in MODEL_INPUTS))
            loss = F.binary_cross_entropy_with_logits(logits, tensors["label"][idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        yield epoch


def eval_auc_ours(model: torch.nn.Module, data: dict[str, np.ndarray]) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(*(torch.from_numpy(data[k]) for k in MODEL_INPUTS))
    return auc(data["label"], torch.sigmoid(logits).numpy())


def ours(name: str, spec: InputSpec, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(spec, ModelConfig(name=ModelName(name)))


def throughput(spec, train, repeats: int, limit: int) -> list[Row]:
    rows = []
    train = {k: v[:limit] for k, v in train.items()}  # the split is in event order; both sides get the same rows
    n = len(train["label"])
    x_peer = deepctr.inputs(spec, train)
    cfg = ModelConfig()
    for name in ("deepfm", "din"):
        print(f"[throughput] {name}: {n} rows/epoch, batch {BATCH}", flush=True)

        def candidate(name=name) -> float:
            model = ours(name, spec, 0)
            started = time.perf_counter()
            for _ in train_epochs(model, train, 1, 0):
                pass
            return n / (time.perf_counter() - started)

        def baseline(name=name) -> float:
            model = deepctr.build(name, spec, cfg, LEARNING_RATE, 0)
            started = time.perf_counter()
            deepctr.fit(model, x_peer, train["label"], BATCH)
            return n / (time.perf_counter() - started)

        c, b = interleaved(candidate, baseline, repeats)
        rows.append(Row(f"{name} training throughput", f"mlsys {name}", f"DeepCTR-Torch {name}", median(c), median(b), "samples/s", repeats))
    return rows


PAIRED = ("deepfm", "din")  # the models both libraries have


def quality(spec, train, evaluation, epochs: int, seeds: int) -> dict[str, list[list[float]]]:
    """``{variant: [per-epoch eval AUCs of each seed]}``.

    Variants: our seven models as configured; ``<name>+peer_init`` for DeepFM and DIN, ours
    initialised the way DeepCTR-Torch initialises (to tell the implementations apart
    from the initialisations); ``peer_<name>``, DeepCTR-Torch as it comes.
    """
    cfg = ModelConfig()
    x_train, x_eval = deepctr.inputs(spec, train), deepctr.inputs(spec, evaluation)
    aucs: dict[str, list[list[float]]] = {}
    for seed in range(seeds):
        variants = [(name.value, False) for name in ModelName] + [(name, True) for name in PAIRED]
        for name, peer_init in variants:
            model = ours(name, spec, seed)
            if peer_init:
                deepctr.initialise_like_deepctr(model)
            per_epoch = [eval_auc_ours(model, evaluation) for _ in train_epochs(model, train, epochs, seed)]
            aucs.setdefault(name + ("+peer_init" if peer_init else ""), []).append(per_epoch)
        for name in PAIRED:
            peer = deepctr.build(name, spec, cfg, LEARNING_RATE, seed)
            per_epoch = []
            for _ in range(epochs):  # fit continues from where the last call stopped
                deepctr.fit(peer, x_train, train["label"], BATCH, 1)
                per_epoch.append(auc(evaluation["label"], deepctr.predict(peer, x_eval)))
            aucs.setdefault(f"peer_{name}", []).append(per_epoch)
        print(f"[quality] seed {seed}: " + ", ".join(f"{k} {max(v[-1]):.4f}" for k, v in aucs.items()), flush=True)
    return aucs


def zoo_table(aucs: dict[str, list[list[float]]], epochs: int, seeds: int) -> str:
    """Ours against the peer (target: within +-0.005), then all seven models."""
    first = {k: median([run[0] for run in v]) for k, v in aucs.items()}
    best = {k: median([max(run) for run in v]) for k, v in aucs.items()}
    lines = [f"Eval AUC on our MovieLens-100K eval split, median over {seeds} seeds, after the first epoch and at "
             f"each run's best of {epochs} epochs (target: within +-0.005 of the peer). 'same init': ours "
             "initialised as DeepCTR-Torch initialises (embeddings and hidden layers N(0, 1e-4)):", "",
             "| model | epochs | mlsys | mlsys, same init | DeepCTR-Torch | mlsys - peer | same init - peer |",
             "|---|---|---|---|---|---|---|"]
    for name in PAIRED:
        for label, table in (("1", first), (f"best of {epochs}", best)):
            a, b, p = table[name], table[f"{name}+peer_init"], table[f"peer_{name}"]
            lines.append(f"| {name} | {label} | {a:.4f} | {b:.4f} | {p:.4f} | {a - p:+.4f} | {b - p:+.4f} |")
    lines += ["", f"All seven models, best of {epochs} epochs (median, min-max over {seeds} seeds; after epoch 1 in brackets):", "",
              "| model | AUC median | min | max | epoch 1 |", "|---|---|---|---|---|"]
    for name in [m.value for m in ModelName] + [f"peer_{n}" for n in PAIRED]:
        bests = [max(run) for run in aucs[name]]
        label = f"DeepCTR-Torch {name[5:]}" if name.startswith("peer_") else name
        lines.append(f"| {label} | {median(bests):.4f} | {min(bests):.4f} | {max(bests):.4f} | ({first[name]:.4f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--throughput-rows", type=int, default=80000, help="train rows per throughput measurement")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec, train, evaluation = movielens_arrays()
    print(f"MovieLens-100K: {len(train['label'])} train rows, {len(evaluation['label'])} eval rows, "
          f"history length {spec.history_length}, {args.threads} torch threads", flush=True)
    rows = throughput(spec, train, args.repeats, args.throughput_rows)
    notes = [f"Both sides: embed_dim 16, MLP [128, 64], dropout 0.1, Adam lr {LEARNING_RATE}, batch {BATCH}, "
             f"history length {spec.history_length}, torch.set_num_threads({args.threads}); DIN attention MLP [64, 16] ReLU, "
             "no L2. Ours: the trainer's step over in-memory tensors; DeepCTR-Torch 0.3.0: its `model.fit`."]
    if not args.skip_quality:
        aucs = quality(spec, train, evaluation, args.epochs, args.seeds)
        notes.append(zoo_table(aucs, args.epochs, args.seeds))
    text = "\n\n".join(notes)
    if args.no_record:
        print("\n".join(r.line() for r in rows) + "\n\n" + text)
    else:
        record("Model zoo against DeepCTR-Torch (MovieLens-100K)", rows, text)


if __name__ == "__main__":
    main()
