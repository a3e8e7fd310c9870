"""DeepFM (Guo et al., 2017): FM and a deep MLP over the same field embeddings."""

from __future__ import annotations

import torch
from torch import nn

from mlsys.models.blocks import MLP, FieldEmbeddings, SparseFeatures
from mlsys.models.config import InputSpec, ModelConfig


class DeepFMDense(nn.Module):
    """The dense part: consumes :class:`SparseFeatures`, returns logits (B,)."""

    def __init__(self, num_fields: int, num_numeric: int, cfg: ModelConfig):
        super().__init__()
        self.numeric_linear = nn.Linear(num_numeric, 1)
        self.bias = nn.Parameter(torch.zeros(1))
        self.mlp = MLP(num_fields * cfg.embed_dim + num_numeric, list(cfg.mlp_dims), cfg.dropout)

    def forward(self, x: SparseFeatures) -> torch.Tensor:
        e = x.fields  # (B, K, D)
        fm = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1, keepdim=True)  # (B, 1)
        deep = self.mlp(torch.cat([e.flatten(1), x.numeric], dim=1))  # (B, 1)
        logit = x.linear + self.numeric_linear(x.numeric) + fm + deep + self.bias
        return logit.squeeze(1)


class DeepFM(nn.Module):
    """``DeepFM(spec, ModelConfig())(categorical, genres, history, numeric) -> logits (B,)``."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__()
        self.sparse = FieldEmbeddings(spec, cfg.embed_dim)
        self.dense = DeepFMDense(self.sparse.num_fields, len(spec.numeric_fields), cfg)

    def forward(self, categorical, genres, history, numeric) -> torch.Tensor:
        return self.dense(self.sparse(categorical, genres, history, numeric))
