"""Factorization machine (Rendle, 2010): first order plus pairwise field interactions."""

from __future__ import annotations

import torch
from torch import nn

from mlsys.models.blocks import CtrModel, FirstOrder, SparseEmbeddings, SparseOutput, fm_interactions
from mlsys.models.config import InputSpec, ModelConfig


class FMDense(nn.Module):
    """First order + sum of pairwise dot products of the F + 2 field embeddings -> logits (B,)."""

    def __init__(self, spec: InputSpec):
        super().__init__()
        self.first_order = FirstOrder(len(spec.numeric_fields))

    def forward(self, x: SparseOutput) -> torch.Tensor:
        return (self.first_order(x) + fm_interactions(x.pooled_fields())).squeeze(1)


class FM(CtrModel):
    """``FM(spec, ModelConfig(name="fm"))(categorical, multi_hot, history, numeric) -> logits (B,)``."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__(SparseEmbeddings(spec, cfg.embed_dim, first_order=True), FMDense(spec))
