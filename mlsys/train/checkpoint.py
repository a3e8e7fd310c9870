"""Training checkpoints as safetensors (weights and optimizer moments) plus JSON."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"


def save(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, directory / WEIGHTS)
    flat = {}
    for pid, moments in optimizer.state_dict()["state"].items():
        for name, value in moments.items():
            flat[f"{pid}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    save_file(flat, directory / OPTIMIZER)
    (directory / STATE).write_text(json.dumps(state, indent=2))


def load(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Restore in place; returns the JSON state (epoch, metric history)."""
    model.load_state_dict(load_file(directory / WEIGHTS))
    if optimizer is not None and (directory / OPTIMIZER).exists():
        flat = load_file(directory / OPTIMIZER)
        sd = optimizer.state_dict()
        state: dict[int, dict] = {}
        for key, value in flat.items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
        sd["state"] = state
        optimizer.load_state_dict(sd)
    return json.loads((directory / STATE).read_text())


def load_state(directory: Path) -> dict:
    return json.loads((Path(directory) / STATE).read_text())
