"""Every training strategy on one CUDA GPU: the check behind "train.use_gpu=true, nothing else changed".

Runs the same code a Ray Train worker runs (:mod:`mlsys.train.strategies`, the model zoo,
the DeepSpeed config generated from ``configs/train/strategy/*.yaml``) on ``cuda:0`` in a
one-process ``torch.distributed`` group (nccl), without Ray: the lent GPU machines have
no Ray and its wheel is larger than what can be carried there. Per model and strategy:
samples/s after a warm-up, peak GPU memory, eval AUC before and after, and a checkpoint
save -> load round trip that must reproduce the eval scores.

    python scripts/gpu_strategies.py --out gpu.json            # on a machine with a GPU
    python scripts/gpu_strategies.py --device cpu --steps 20   # the same on CPU (gloo), quick

Fails with a clear message when CUDA is asked for and absent.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mlsys.evaluate.metrics import auc  # noqa: E402
from mlsys.models import MODEL_INPUTS, ModelConfig, build_model  # noqa: E402
from mlsys.train import checkpoint  # noqa: E402
from mlsys.train.config import StrategyConfig, TrainConfig  # noqa: E402
from mlsys.train.strategies import make_strategy  # noqa: E402
from mlsys.train.synthetic import encoded_batch, synthetic_spec  # noqa: E402

STRATEGIES = ["ddp", "deepspeed_zero1", "deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload"]


def strategy_config(name: str) -> StrategyConfig:
    """The group file ``train/strategy=<name>`` composes, as the typed config."""
    raw = yaml.safe_load((REPO / "configs/train/strategy" / f"{name}.yaml").read_text())
    return StrategyConfig(**raw)


def init_process_group(device: torch.device) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in batch.items()}


def scores(module, batches, device) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        out = [torch.sigmoid(module(*(b[k] for k in MODEL_INPUTS))).float().cpu().numpy() for b in batches]
    module.train()
    return np.concatenate(out)


def check(model_name: str, strategy: str, args, device, spec, train, evals, labels) -> dict:
    cfg = TrainConfig(num_workers=1, use_gpu=device.type == "cuda", batch_size=args.batch_size,
                      learning_rate=args.lr, strategy=strategy_config(strategy))
    torch.manual_seed(0)
    model = build_model(spec, ModelConfig(name=model_name, embed_dim=args.embed_dim))
    params = sum(p.numel() for p in model.parameters())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    s = make_strategy(model, cfg, device)
    setup_s = time.perf_counter() - started
    auc_before = auc(labels, scores(s.module, evals, device))
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    timed_from, timed_rows = None, 0
    for step in range(args.steps):
        batch = train[step % len(train)]
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timed_from = time.perf_counter()
        loss = loss_fn(s.module(*(batch[k] for k in MODEL_INPUTS)), batch["label"])
        s.step(loss)
        if step >= args.warmup:
            timed_rows += len(batch["label"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - timed_from
    after = scores(s.module, evals, device)
    with tempfile.TemporaryDirectory() as tmp:  # the trainer's checkpoint: full weights + each rank's part
        weights = s.full_state_dict()
        s.save(Path(tmp))
        checkpoint.save_weights(Path(tmp), weights)
        torch.manual_seed(1)  # a differently initialised model must come back to the same scores
        fresh = make_strategy(build_model(spec, ModelConfig(name=model_name, embed_dim=args.embed_dim)), cfg, device)
        fresh.load(Path(tmp))
        restored = scores(fresh.module, evals, device)
    return {
        "model": model_name, "strategy": strategy, "params": params, "setup_s": round(setup_s, 2),
        "samples_per_s": round(timed_rows / seconds), "final_loss": round(float(loss), 4),
        "eval_auc_before": round(auc_before, 4), "eval_auc_after": round(auc(labels, after), 4),
        "restore_max_abs_diff": float(np.abs(after - restored).max()),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
        "param_device": str(next(iter(s.module.parameters())).device),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", default="deepfm,din")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--embed-dim", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--out")
    args = p.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_strategies: --device cuda asked for, but torch sees no CUDA device (use --device cpu)")
    device = torch.device("cuda:0" if args.device == "cuda" else "cpu")
    os.environ.setdefault("DS_ACCELERATOR", device.type)
    init_process_group(device)
    spec = synthetic_spec(users=args.users, items=args.items)
    train = [to_device(encoded_batch(spec, np.arange(i * args.batch_size, (i + 1) * args.batch_size), 0), device) for i in range(64)]
    evals = [to_device(encoded_batch(spec, np.arange(10**8 + i * 8192, 10**8 + (i + 1) * 8192), 0), device) for i in range(4)]
    labels = np.concatenate([b["label"].cpu().numpy() for b in evals])
    info = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"}
    try:
        import deepspeed

        info["deepspeed"] = deepspeed.__version__
    except ImportError as e:
        info["deepspeed"] = f"missing: {e}"
    print(json.dumps(info), flush=True)
    results = []
    for model_name in args.models.split(","):
        for strategy in args.strategies.split(","):
            try:
                r = check(model_name, strategy, args, device, spec, train, evals, labels)
            except Exception as e:  # one failing strategy must not hide the others' results
                r = {"model": model_name, "strategy": strategy, "error": f"{type(e).__name__}: {e}"[:2000]}
            print(json.dumps(r), flush=True)
            results.append(r)
    if args.out:
        Path(args.out).write_text(json.dumps({"info": info, "results": results}, indent=1))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
