"""The closed table of model classes, building one, and the probability wrapper that is exported to ONNX."""

from __future__ import annotations

import torch

from mlsys.models.blocks import CtrModel
from mlsys.models.bst import BST
from mlsys.models.bst_cached import BSTCached
from mlsys.models.config import InputSpec, ModelConfig, ModelName
from mlsys.models.dcnv2 import DCNv2
from mlsys.models.deepfm import DeepFM
from mlsys.models.din import DIN
from mlsys.models.fm import FM
from mlsys.models.lr import LR
from mlsys.models.widedeep import WideDeep

# A closed table, not an import path: a model package names its class here,
# so loading a package never imports code named inside it.
MODELS: dict[ModelName, type[CtrModel]] = {
    ModelName.lr: LR,
    ModelName.fm: FM,
    ModelName.widedeep: WideDeep,
    ModelName.deepfm: DeepFM,
    ModelName.dcnv2: DCNv2,
    ModelName.din: DIN,
    ModelName.bst: BST,
    ModelName.bst_cached: BSTCached,
}


def build_model(spec: InputSpec, cfg: ModelConfig) -> CtrModel:
    """``build_model(spec, ModelConfig(name="din", embed_dim=32))`` -> an initialised module.

    Every model is ``dense(sparse(categorical, multi_hot, history, numeric))``: ``model.sparse``
    returns a :class:`SparseOutput`, ``model.dense`` maps it to logits (B,).
    """
    return MODELS[ModelName(cfg.name)](spec, cfg)


class Scorer(torch.nn.Module):
    """Wraps a model to output click probabilities; this graph is exported to ONNX."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, categorical, multi_hot, history, numeric):
        return torch.sigmoid(self.model(categorical, multi_hot, history, numeric))
