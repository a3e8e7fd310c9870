"""Logistic regression: one weight per feature value, the baseline every model must beat."""

from __future__ import annotations

import torch
from torch import nn

from mlsys.models.blocks import CtrModel, FirstOrder, SparseEmbeddings, SparseOutput
from mlsys.models.config import InputSpec, ModelConfig


class LRDense(nn.Module):
    """``linear + w . numeric + b`` -> logits (B,)."""

    def __init__(self, spec: InputSpec):
        super().__init__()
        self.first_order = FirstOrder(len(spec.numeric_fields))

    def forward(self, x: SparseOutput) -> torch.Tensor:
        return self.first_order(x).squeeze(1)


class LR(CtrModel):
    """``LR(spec, ModelConfig(name="lr"))(categorical, multi_hot, history, numeric) -> logits (B,)``.

    Its sparse part has only first-order (1-wide) tables; ``embed_dim`` is unused.
    """

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__(SparseEmbeddings(spec, cfg.embed_dim, vectors=False, first_order=True), LRDense(spec))
