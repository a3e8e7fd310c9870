"""Wide & Deep (Cheng et al., 2016): a linear model and an MLP, trained jointly."""

from __future__ import annotations

import torch
from torch import nn

from mlsys.models.blocks import MLP, CtrModel, FirstOrder, SparseEmbeddings, SparseOutput
from mlsys.models.config import InputSpec, ModelConfig


class WideDeepDense(nn.Module):
    """Wide (first order) + deep (MLP over the pooled field embeddings and numeric) -> logits (B,)."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__()
        num_fields, num_numeric = spec.pooled_fields, len(spec.numeric_fields)
        self.wide = FirstOrder(num_numeric)
        self.deep = MLP(num_fields * cfg.embed_dim + num_numeric, list(cfg.mlp_dims), cfg.dropout)

    def forward(self, x: SparseOutput) -> torch.Tensor:
        deep = self.deep(torch.cat([x.pooled_fields().flatten(1), x.numeric], dim=1))  # (B, 1)
        return (self.wide(x) + deep).squeeze(1)


class WideDeep(CtrModel):
    """``WideDeep(spec, ModelConfig(name="widedeep"))(categorical, multi_hot, history, numeric) -> logits (B,)``."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__(SparseEmbeddings(spec, cfg.embed_dim, first_order=True), WideDeepDense(spec, cfg))
