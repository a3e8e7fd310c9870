"""The model zoo: plain torch modules, no Ray. Pick one with ``model=<name>``."""

from __future__ import annotations

import torch

from mlsys.models.config import MODEL_INPUTS, InputSpec, ModelConfig, ModelName
from mlsys.models.deepfm import DeepFM

# A closed table, not an import path: a model package names its class here,
# so loading a package never imports code named inside it.
MODELS: dict[ModelName, type[torch.nn.Module]] = {ModelName.deepfm: DeepFM}


def build_model(spec: InputSpec, cfg: ModelConfig) -> torch.nn.Module:
    """``build_model(spec, ModelConfig(embed_dim=32))`` -> an initialised module."""
    return MODELS[ModelName(cfg.name)](spec, cfg)


class Scorer(torch.nn.Module):
    """Wraps a model to output click probabilities; this graph is exported to ONNX."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, categorical, genres, history, numeric):
        return torch.sigmoid(self.model(categorical, genres, history, numeric))


__all__ = ["MODELS", "MODEL_INPUTS", "InputSpec", "ModelConfig", "ModelName", "Scorer", "build_model"]
