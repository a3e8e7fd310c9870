"""DCN-V2 (Wang et al., 2021): explicit cross layers beside a deep MLP (the parallel form)."""

from __future__ import annotations

import torch
from torch import nn

from mlsys.models.blocks import MLP, CrossNetwork, CtrModel, SparseEmbeddings, SparseOutput
from mlsys.models.config import InputSpec, ModelConfig


class DCNv2Dense(nn.Module):
    """x0 = [F + 2 field embeddings, numeric]; logit = w . [cross(x0), mlp(x0)] + b -> (B,)."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__()
        width = spec.pooled_fields * cfg.embed_dim + len(spec.numeric_fields)
        self.cross = CrossNetwork(width, cfg.cross_layers)
        self.deep = MLP(width, list(cfg.mlp_dims), cfg.dropout, out_dim=None)
        self.head = nn.Linear(width + self.deep.out_dim, 1)

    def forward(self, x: SparseOutput) -> torch.Tensor:
        x0 = torch.cat([x.pooled_fields().flatten(1), x.numeric], dim=1)  # (B, width)
        return self.head(torch.cat([self.cross(x0), self.deep(x0)], dim=1)).squeeze(1)


class DCNv2(CtrModel):
    """``DCNv2(spec, ModelConfig(name="dcnv2", cross_layers=3))(categorical, multi_hot, history, numeric) -> logits (B,)``."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__(SparseEmbeddings(spec, cfg.embed_dim), DCNv2Dense(spec, cfg))
