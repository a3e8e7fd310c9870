"""Shared building blocks: field embeddings (the sparse part) and an MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mlsys.models.config import InputSpec


def masked_mean(emb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean of ``emb`` (B, L, D) over positions where ``ids`` (B, L) != 0 -> (B, D)."""
    mask = (ids != 0).unsqueeze(-1).to(emb.dtype)  # (B, L, 1)
    return (emb * mask).sum(1) / mask.sum(1).clamp(min=1.0)


@dataclass
class SparseFeatures:
    """The typed interface between the sparse (embedding) and dense parts.

    ``fields`` (B, K, D): one embedding per field, K = F categorical + genres + history.
    ``linear`` (B, 1): the first-order (per-value bias) term.
    ``numeric`` (B, N): scaled numeric features, passed through.
    """

    fields: torch.Tensor
    linear: torch.Tensor
    numeric: torch.Tensor


class FieldEmbeddings(nn.Module):
    """Embeds every sparse input; the item table is shared with the history."""

    def __init__(self, spec: InputSpec, dim: int):
        super().__init__()
        self.spec = spec
        self.tables = nn.ModuleList(nn.Embedding(n, dim, padding_idx=0) for n in spec.categorical_sizes)
        self.biases = nn.ModuleList(nn.Embedding(n, 1, padding_idx=0) for n in spec.categorical_sizes)
        self.genres = nn.Embedding(spec.genre_size, dim, padding_idx=0)
        self.item_index = spec.categorical_fields.index(spec.item_field)
        for table in [*self.tables, self.genres]:
            nn.init.normal_(table.weight, std=0.01)
            with torch.no_grad():
                table.weight[0].zero_()
        for bias in self.biases:
            nn.init.zeros_(bias.weight)

    @property
    def num_fields(self) -> int:
        return len(self.tables) + 2

    def forward(self, categorical, genres, history, numeric) -> SparseFeatures:
        cat = [table(categorical[:, i]) for i, table in enumerate(self.tables)]  # F x (B, D)
        genre = masked_mean(self.genres(genres), genres)  # (B, D)
        hist = masked_mean(self.tables[self.item_index](history), history)  # (B, D)
        fields = torch.stack([*cat, genre, hist], dim=1)  # (B, K, D)
        linear = torch.stack([b(categorical[:, i]) for i, b in enumerate(self.biases)], 1).sum(1)  # (B, 1)
        return SparseFeatures(fields=fields, linear=linear, numeric=numeric)


class MLP(nn.Sequential):
    def __init__(self, in_dim: int, dims: list[int], dropout: float, out_dim: int | None = 1):
        layers: list[nn.Module] = []
        for d in dims:
            layers += [nn.Linear(in_dim, d), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = d
        if out_dim is not None:
            layers.append(nn.Linear(in_dim, out_dim))
        super().__init__(*layers)
