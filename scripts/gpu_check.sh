#!/usr/bin/env bash
# GPU check of the training strategies: `train.use_gpu=true` is the only change.
#
# Trains a tiny DeepFM on synthetic data for 1 epoch with 1 Ray Train worker on 1 GPU,
# under DDP (nccl) and DeepSpeed ZeRO-2, through mlsys.train.trainer.fit (the code
# `mlsys run` uses), and prints what each worker saw (device, backend, AUC).
# Fails fast and clearly: no GPU, a CPU-only torch, or a step over its time limit.
# Whole script: under 5 minutes (checks ~15 s, each strategy at most 120 s).
#
#   bash scripts/gpu_check.sh            # from the repository root, with .venv set up
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
STARTED=$(date +%s)
fail() { echo "GPU CHECK FAILED: $*" >&2; exit 1; }

[ -x "$PY" ] || fail "no Python at $PY (run \`make setup\`, or set PYTHON=/path/to/python)"
command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: this machine has no NVIDIA driver"
timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  || fail "nvidia-smi did not answer in 20 s"

timeout 60 "$PY" - <<'PYEOF' || fail "torch cannot use the GPU (see the line above)"
import sys
import torch
print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")
if not torch.cuda.is_available():
    print("torch here is a CPU build (pyproject pins the CPU wheel): install a CUDA build of the same version, e.g. "
          "`pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128`", file=sys.stderr)
    sys.exit(1)
print(f"device 0: {torch.cuda.get_device_name(0)}, nccl {'.'.join(map(str, torch.cuda.nccl.version()))}")
PYEOF

unset DS_ACCELERATOR  # the strategy picks cuda from the device Ray Train assigns
for strategy in ddp deepspeed_zero2; do
  echo "== train/strategy=${strategy} train.use_gpu=true train.num_workers=1"
  timeout --kill-after=10 120 "$PY" - "$strategy" <<'PYEOF' || fail "strategy $strategy failed or ran over 120 s (output above)"
import sys, tempfile, time

import ray

from mlsys.cli.config import compose_config
from mlsys.train import trainer
from mlsys.train.synthetic import synthetic_dataset, synthetic_spec

strategy = sys.argv[1]
cfg = compose_config([f"train/strategy={strategy}", "train.use_gpu=true", "train.num_workers=1", "train.max_epochs=1",
                      "model.embed_dim=8"])
ray.init(num_cpus=4, num_gpus=1, include_dashboard=True, logging_level="WARNING")
spec = synthetic_spec(users=300, items=500)
train = synthetic_dataset(spec, rows=20_000, seed=0)
evaluation = synthetic_dataset(spec, rows=4_000, seed=0, start=20_000)
started = time.perf_counter()
with tempfile.TemporaryDirectory() as storage:
    result = trainer.fit(train, evaluation, spec, cfg.model, cfg.train, storage, f"gpu-check-{strategy}")
    last = result.history[-1]
    files = sorted(p.name for p in result.checkpoint_dir.rglob("*") if p.is_file())
print(f"RESULT {strategy}: {time.perf_counter() - started:.1f}s, eval AUC {last['eval_auc']:.4f}, "
      f"checkpoint files {files}")
assert last["eval_auc"] > 0.6, "the model did not learn"
PYEOF
done
echo "GPU CHECK PASSED in $(( $(date +%s) - STARTED ))s"
