"""BST (Chen et al., 2019): a transformer over the behaviour sequence and the target item."""

from __future__ import annotations

import torch
from torch import nn

from mlsys.models.blocks import MLP, CtrModel, SparseEmbeddings, SparseOutput, TransformerLayer, positional_table
from mlsys.models.config import InputSpec, ModelConfig


class BSTDense(nn.Module):
    """Transformer over [history..., target] (+ positions); MLP over the target's output,
    the mean of the real history outputs, the other fields and numeric -> logits (B,)."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__()
        self.positions = positional_table(spec.history_length + 1, cfg.embed_dim)
        self.layers = nn.ModuleList(
            TransformerLayer(cfg.embed_dim, cfg.attention_heads, cfg.dropout) for _ in range(cfg.transformer_layers)
        )
        width = (spec.pooled_fields + 1) * cfg.embed_dim + len(spec.numeric_fields)
        self.mlp = MLP(width, list(cfg.mlp_dims), cfg.dropout)

    def forward(self, x: SparseOutput) -> torch.Tensor:
        assert x.fields is not None and x.multi_hot is not None and x.target is not None
        assert x.history is not None and x.history_mask is not None
        seq = torch.cat([x.history, x.target.unsqueeze(1)], dim=1) + self.positions  # (B, L + 1, D)
        mask = torch.cat([x.history_mask, torch.ones_like(x.history_mask[:, :1])], dim=1)  # (B, L + 1), target is real
        for layer in self.layers:
            seq = layer(seq, mask)
        real = x.history_mask.unsqueeze(-1).to(seq.dtype)  # (B, L, 1)
        behaviour = (seq[:, :-1] * real).sum(1) / real.sum(1).clamp(min=1.0)  # (B, D); zeros for no history
        features = torch.cat([seq[:, -1], behaviour, x.fields.flatten(1), x.multi_hot.flatten(1), x.numeric], dim=1)
        return self.mlp(features).squeeze(1)


class BST(CtrModel):
    """``BST(spec, ModelConfig(name="bst", attention_heads=2))(categorical, multi_hot, history, numeric) -> logits (B,)``."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__(SparseEmbeddings(spec, cfg.embed_dim, sequence=True), BSTDense(spec, cfg))
