"""DIN (Zhou et al., 2018): the candidate item attends over the user's behaviour sequence."""

from __future__ import annotations

import torch
from torch import nn

from mlsys.models.blocks import MLP, CtrModel, SparseEmbeddings, SparseOutput, TargetAttention
from mlsys.models.config import InputSpec, ModelConfig


class DINDense(nn.Module):
    """MLP over [F field embeddings, K pooled multi-hot features, attention-pooled history, numeric] -> logits (B,)."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__()
        self.attention = TargetAttention(cfg.embed_dim, list(cfg.attention_dims))
        width = spec.pooled_fields * cfg.embed_dim + len(spec.numeric_fields)
        self.mlp = MLP(width, list(cfg.mlp_dims), cfg.dropout)

    def forward(self, x: SparseOutput) -> torch.Tensor:
        assert x.fields is not None and x.multi_hot is not None and x.target is not None
        assert x.history is not None and x.history_mask is not None
        interest = self.attention(x.target, x.history, x.history_mask)  # (B, D)
        features = torch.cat([x.fields.flatten(1), x.multi_hot.flatten(1), interest, x.numeric], dim=1)
        return self.mlp(features).squeeze(1)


class DIN(CtrModel):
    """``DIN(spec, ModelConfig(name="din"))(categorical, multi_hot, history, numeric) -> logits (B,)``."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__(SparseEmbeddings(spec, cfg.embed_dim, sequence=True), DINDense(spec, cfg))
