"""DeepFM (Guo et al., 2017): FM and a deep MLP over the same field embeddings."""

from __future__ import annotations

import torch
from torch import nn

from mlsys.models.blocks import MLP, CtrModel, FirstOrder, SparseEmbeddings, SparseOutput, fm_interactions
from mlsys.models.config import InputSpec, ModelConfig


class DeepFMDense(nn.Module):
    """First order + FM interactions + MLP over the pooled field embeddings and numeric -> logits (B,)."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__()
        num_fields, num_numeric = spec.pooled_fields, len(spec.numeric_fields)
        self.first_order = FirstOrder(num_numeric)
        self.mlp = MLP(num_fields * cfg.embed_dim + num_numeric, list(cfg.mlp_dims), cfg.dropout)

    def forward(self, x: SparseOutput) -> torch.Tensor:
        e = x.pooled_fields()  # (B, K, D)
        deep = self.mlp(torch.cat([e.flatten(1), x.numeric], dim=1))  # (B, 1)
        return (self.first_order(x) + fm_interactions(e) + deep).squeeze(1)


class DeepFM(CtrModel):
    """``DeepFM(spec, ModelConfig())(categorical, multi_hot, history, numeric) -> logits (B,)``."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__(SparseEmbeddings(spec, cfg.embed_dim, first_order=True), DeepFMDense(spec, cfg))
