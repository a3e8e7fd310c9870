"""Training checkpoints: full weights as safetensors, run state as JSON, optimizer state per strategy.

A checkpoint folder holds, whatever the strategy:

- ``model.safetensors``: the full (unsharded) weights of the plain model, written by rank 0;
  this is what evaluation, registration and warm start read;
- ``state.json``: epoch and per-epoch metric history;

and, to resume training exactly, either ``optimizer.safetensors`` (DDP, rank 0) or
``deepspeed/state/*`` (DeepSpeed: every rank writes its ZeRO shard; Ray Train merges
the ranks' folders into one checkpoint). The DeepSpeed shards are torch pickles
written and read by our own workers only; nothing that crosses a trust boundary
(a model package) is a pickle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only where tensors are read or written: the driver reads state.json without it
    import torch

WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"


def save_weights(directory: Path, weights: dict[str, torch.Tensor]) -> None:
    """``save_weights(Path("ckpt"), model.state_dict())``."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, directory / WEIGHTS)


def save_state(directory: Path, state: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STATE).write_text(json.dumps(state, indent=2))


def save_optimizer(directory: Path, optimizer: torch.optim.Optimizer) -> None:
    """Adam moments flattened to ``"<param id>.<name>"`` tensors."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    flat = {}
    for pid, moments in optimizer.state_dict()["state"].items():
        for name, value in moments.items():
            flat[f"{pid}.{name}"] = (value if torch.is_tensor(value) else torch.tensor(value)).detach().cpu().contiguous()
    save_file(flat, directory / OPTIMIZER)


def save(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """A complete single-process checkpoint (weights, optimizer, state)."""
    save_weights(directory, model.state_dict())
    save_optimizer(directory, optimizer)
    save_state(directory, state)


def load_weights(directory: Path, model: torch.nn.Module) -> None:
    """Load ``model.safetensors`` into ``model`` (on whatever device it is)."""
    from safetensors.torch import load_file

    device = next(model.parameters()).device
    model.load_state_dict(load_file(directory / WEIGHTS, device=str(device)))


def load_optimizer(directory: Path, optimizer: torch.optim.Optimizer) -> None:
    from safetensors.torch import load_file

    if not (directory / OPTIMIZER).exists():
        return
    flat = load_file(directory / OPTIMIZER)
    sd = optimizer.state_dict()
    state: dict[int, dict] = {}
    for key, value in flat.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    sd["state"] = state
    optimizer.load_state_dict(sd)  # moves the moments to the parameters' device


def load(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Restore in place; returns the JSON state (epoch, metric history)."""
    load_weights(directory, model)
    if optimizer is not None:
        load_optimizer(directory, optimizer)
    return load_state(directory)


def load_state(directory: Path) -> dict:
    return json.loads((Path(directory) / STATE).read_text())


def trained_model(checkpoint_uri: str, spec, model_cfg) -> torch.nn.Module:
    """The model a checkpoint at ``checkpoint_uri`` (any artifact URI) holds, in eval mode."""
    import tempfile

    from mlsys import storage
    from mlsys.models.zoo import build_model

    module = build_model(spec, model_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        load(storage.download_dir(checkpoint_uri, tmp), module)
    return module.eval()
