"""Shared building blocks: the sparse part (embeddings) and dense layers.

Every model is ``CtrModel(sparse, dense)``: :class:`SparseEmbeddings` turns the
four input tensors into a :class:`SparseOutput` (embedding lookups only, no
interactions) and a model-specific dense module turns that into logits. The two
halves meet only through :class:`SparseOutput`, so they can live on different
devices or processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mlsys.models.config import InputSpec


@dataclass
class SparseOutput:
    """The typed interface between the sparse (embedding) and dense parts.

    B = batch, F = categorical fields, L = history length, D = embed_dim, N = numeric.
    Fields a model did not ask for (see :class:`SparseEmbeddings`) are ``None``.

    ``fields`` (B, F, D): one embedding per categorical field (the candidate item among them).
    ``genres`` (B, D): mean of the multi-hot genre embeddings (zeros for no genres).
    ``history`` (B, L, D): behaviour-sequence embeddings from the item table (sequence models).
    ``history_mask`` (B, L) bool: True at real items, False at padding (sequence models).
    ``history_pooled`` (B, D): mean over the real history items (pooling models).
    ``target`` (B, D): the candidate item's embedding, ``fields[:, item_field]``.
    ``linear`` (B, 1): first-order terms (per-value weights of fields, genres and history).
    ``numeric`` (B, N): scaled numeric features, passed through.
    """

    numeric: torch.Tensor
    fields: torch.Tensor | None = None
    genres: torch.Tensor | None = None
    history: torch.Tensor | None = None
    history_mask: torch.Tensor | None = None
    history_pooled: torch.Tensor | None = None
    target: torch.Tensor | None = None
    linear: torch.Tensor | None = None

    def pooled_fields(self) -> torch.Tensor:
        """(B, F + 2, D): the categorical fields, pooled genres and pooled history, stacked."""
        assert self.fields is not None and self.genres is not None and self.history_pooled is not None
        return torch.cat([self.fields, self.genres.unsqueeze(1), self.history_pooled.unsqueeze(1)], dim=1)


def _bag_mean(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of ``weight[ids]`` over ids != 0 -> (B, D); zeros for an all-padding row.

    Training uses the fused ``embedding_bag`` kernel; ONNX export uses a gather
    and a masked mean (the same numbers) because ``embedding_bag`` exports as a
    per-row loop.
    """
    if not torch.onnx.is_in_onnx_export():
        return F.embedding_bag(ids, weight, mode="mean", padding_idx=0)
    mask = (ids != 0).unsqueeze(-1).to(weight.dtype)  # (B, L, 1)
    return (F.embedding(ids, weight) * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class MultiHotEmbedding(nn.EmbeddingBag):
    """``MultiHotEmbedding(n, d)(ids (B, G)) -> (B, d)``: mean over non-padding ids (0 = padding)."""

    def __init__(self, num: int, dim: int):
        super().__init__(num, dim, mode="mean", padding_idx=0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _bag_mean(ids, self.weight)


class SparseEmbeddings(nn.Module):
    """Embeds every sparse input. The item table is shared by the candidate and the history.

    ``vectors``: D-wide embeddings (fields, genres, history, target).
    ``first_order``: 1-wide per-value weights summed into ``linear`` (LR, FM, wide parts).
    ``sequence``: return the history as a (B, L, D) sequence and mask (DIN, BST)
    instead of its mean. Only the tables a model uses exist, so DDP sees no unused parameters.

    >>> sparse = SparseEmbeddings(spec, 16, first_order=True)   # doctest: +SKIP
    >>> sparse(categorical, genres, history, numeric).fields.shape   # doctest: +SKIP
    torch.Size([512, 4, 16])
    """

    def __init__(self, spec: InputSpec, dim: int, *, vectors: bool = True, first_order: bool = False, sequence: bool = False):
        super().__init__()
        assert vectors or first_order, "a sparse part embeds something"
        assert vectors or not sequence, "a sequence needs vectors"
        self.spec, self.dim, self.sequence = spec, dim, sequence
        self.item_index = spec.categorical_fields.index(spec.item_field)
        self.tables = nn.ModuleList(_table(n, dim) for n in spec.categorical_sizes) if vectors else None
        self.genres = _bag(spec.genre_size, dim) if vectors else None
        self.biases = nn.ModuleList(_table(n, 1, zero=True) for n in spec.categorical_sizes) if first_order else None
        self.genre_bias = _bag(spec.genre_size, 1, zero=True) if first_order else None

    def forward(self, categorical, genres, history, numeric) -> SparseOutput:
        out = SparseOutput(numeric=numeric)
        if self.tables is not None and self.genres is not None:
            item = self.tables[self.item_index]
            out.fields = torch.stack([t(categorical[:, i]) for i, t in enumerate(self.tables)], dim=1)  # (B, F, D)
            out.target = out.fields[:, self.item_index]  # (B, D)
            out.genres = self.genres(genres)  # (B, D)
            if self.sequence:
                out.history = item(history)  # (B, L, D)
                out.history_mask = history != 0  # (B, L)
            else:
                out.history_pooled = _bag_mean(history, item.weight)  # (B, D)
        if self.biases is not None and self.genre_bias is not None:
            per_field = torch.cat([b(categorical[:, i]) for i, b in enumerate(self.biases)], dim=1)  # (B, F)
            item_bias = self.biases[self.item_index].weight
            out.linear = per_field.sum(1, keepdim=True) + self.genre_bias(genres) + _bag_mean(history, item_bias)  # (B, 1)
        return out


def _table(num: int, dim: int, zero: bool = False) -> nn.Embedding:
    table = nn.Embedding(num, dim, padding_idx=0)
    _init(table.weight, zero)
    return table


def _bag(num: int, dim: int, zero: bool = False) -> MultiHotEmbedding:
    bag = MultiHotEmbedding(num, dim)
    _init(bag.weight, zero)
    return bag


def _init(weight: torch.Tensor, zero: bool) -> None:
    """Small normal init (first-order weights: zeros); row 0 (padding) is zero either way."""
    with torch.no_grad():
        weight.zero_() if zero else weight.normal_(std=0.01)
        weight[0].zero_()


class CtrModel(nn.Module):
    """``model(categorical, genres, history, numeric) -> logits (B,)`` = ``dense(sparse(...))``."""

    def __init__(self, sparse: SparseEmbeddings, dense: nn.Module):
        super().__init__()
        self.sparse = sparse
        self.dense = dense

    def forward(self, categorical, genres, history, numeric) -> torch.Tensor:
        return self.dense(self.sparse(categorical, genres, history, numeric))


class MLP(nn.Sequential):
    """``MLP(in_dim, [128, 64], dropout)``: Linear-ReLU-Dropout blocks, then a Linear to ``out_dim`` (None: no head)."""

    def __init__(self, in_dim: int, dims: list[int], dropout: float, out_dim: int | None = 1):
        layers: list[nn.Module] = []
        for d in dims:
            layers += [nn.Linear(in_dim, d), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = d
        if out_dim is not None:
            layers.append(nn.Linear(in_dim, out_dim))
        super().__init__(*layers)
        self.out_dim = out_dim if out_dim is not None else in_dim


class FirstOrder(nn.Module):
    """The logistic-regression part: ``linear + w . numeric + b`` -> (B, 1)."""

    def __init__(self, num_numeric: int):
        super().__init__()
        self.numeric = nn.Linear(num_numeric, 1)

    def forward(self, x: SparseOutput) -> torch.Tensor:
        assert x.linear is not None
        return x.linear + self.numeric(x.numeric)


def fm_interactions(e: torch.Tensor) -> torch.Tensor:
    """Sum of pairwise dot products of the K field embeddings ``e`` (B, K, D) -> (B, 1)."""
    return 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1, keepdim=True)


class CrossNetwork(nn.Module):
    """DCN-V2 cross layers: ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l`` (full-rank W), (B, d) -> (B, d)."""

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class TargetAttention(nn.Module):
    """DIN's activation unit: the candidate attends over the behaviour sequence.

    Weights come from an MLP over ``[q, k, q - k, q * k]`` and are not
    softmax-normalised (Zhou et al., 2018); padding gets weight 0, so an empty
    history pools to zeros. (B, D), (B, L, D), (B, L) -> (B, D).
    """

    def __init__(self, dim: int, hidden: list[int]):
        super().__init__()
        self.score = MLP(4 * dim, hidden, dropout=0.0)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = query.unsqueeze(1).expand_as(keys)  # (B, L, D)
        w = self.score(torch.cat([q, keys, q - keys, q * keys], dim=-1)).squeeze(-1)  # (B, L)
        w = w * mask.to(w.dtype)
        return torch.bmm(w.unsqueeze(1), keys).squeeze(1)  # (B, D)


class TransformerLayer(nn.Module):
    """A post-LN transformer encoder layer on ``F.scaled_dot_product_attention``.

    ``mask`` (B, S) bool marks real positions; padded keys are never attended to.
    Every query row must have one real key (BST always has the target), so no row is all -inf.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        assert dim % heads == 0
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.LeakyReLU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, S, Dh)
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, S, Dh)
        x = self.norm1(x + self.drop(self.out(attn.transpose(1, 2).reshape(b, s, d))))
        return self.norm2(x + self.drop(self.ffn(x)))


def positional_table(length: int, dim: int) -> nn.Parameter:
    """A learned (length, dim) position embedding, small normal init."""
    return nn.Parameter(torch.randn(length, dim) / math.sqrt(dim) * 0.1)
