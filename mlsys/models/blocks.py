"""Shared building blocks: the sparse part (embeddings) and dense layers.

Every model is ``CtrModel(sparse, dense)``: :class:`SparseEmbeddings` turns the
four input tensors into a :class:`SparseOutput` (embedding lookups only, no
interactions) and a model-specific dense module turns that into logits. The two
halves meet only through :class:`SparseOutput`, so they can live on different
devices or processes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from mlsys.models.config import InputSpec, UserFields


@dataclass
class SparseOutput:
    """The typed interface between the sparse (embedding) and dense parts.

    B = batch, F = categorical fields, L = history length, D = embed_dim, N = numeric.
    Fields a model did not ask for (see :class:`SparseEmbeddings`) are ``None``.

    ``fields`` (B, F, D): one embedding per categorical field (the candidate item among them).
    ``multi_hot`` (B, K, D): per multi-hot feature, the mean of its values' embeddings (zeros for none).
    ``history`` (B, L, D): behaviour-sequence embeddings from the item table (sequence models).
    ``history_mask`` (B, L) bool: True at real items, False at padding (sequence models).
    ``history_pooled`` (B, D): mean over the real history items (pooling models).
    ``target`` (B, D): the candidate item's embedding, ``fields[:, item_field]``.
    ``linear`` (B, 1): first-order terms (per-value weights of fields, multi-hot values and history).
    ``numeric`` (B, N): scaled numeric features, passed through.
    """

    numeric: torch.Tensor
    fields: torch.Tensor | None = None
    multi_hot: torch.Tensor | None = None
    history: torch.Tensor | None = None
    history_mask: torch.Tensor | None = None
    history_pooled: torch.Tensor | None = None
    target: torch.Tensor | None = None
    linear: torch.Tensor | None = None

    def pooled_fields(self) -> torch.Tensor:
        """(B, F + K + 1, D): the categorical fields, the pooled multi-hot features and the pooled history, stacked."""
        assert self.fields is not None and self.multi_hot is not None and self.history_pooled is not None
        return torch.cat([self.fields, self.multi_hot, self.history_pooled.unsqueeze(1)], dim=1)


def table_segments(spec: InputSpec) -> dict[str, tuple[int, int]]:
    """``{name: (first row, rows)}`` of every input's block in the one embedding table.

    The categorical fields in order, then the multi-hot features; each block starts with
    its padding row (index 0 of that input). The history shares the item field's block.

    >>> table_segments(InputSpec(("u", "i"), (3, 5), "i", ("g",), (4,), 2, 3, ()))
    {'u': (0, 3), 'i': (3, 5), 'g': (8, 4)}
    """
    sizes = {**dict(zip(spec.categorical_fields, spec.categorical_sizes)), **dict(zip(spec.multi_hot_fields, spec.multi_hot_sizes))}
    starts = [0, *itertools.accumulate(sizes.values())]
    return {name: (start, n) for (name, n), start in zip(sizes.items(), starts)}


class SparseEmbeddings(nn.Module):
    """Embeds every sparse input with one lookup in one table.

    ``table`` holds a block of rows per categorical field and per multi-hot feature
    (:func:`table_segments`); the history looks up the item field's block.
    Columns: ``dim`` embedding columns (``vectors``), then one first-order weight
    (``first_order``, summed into ``linear`` for LR, FM and the wide parts).
    ``sequence``: return the history as a (B, L, D) sequence and mask (DIN, BST)
    instead of its mean.

    A forward is one gather (``index_select``) over the (B, F + K W + L) ids shifted into
    their blocks, so a batch costs one gather and one gradient scatter, not one per
    input and per column group. Index 0 (padding) of every input reads row 0 and is
    masked to zeros (so row 0 gets no gradient); each multi-hot feature and a pooled
    history are the mean over their real ids (an all-padding row pools to zeros).

    >>> sparse = SparseEmbeddings(spec, 16, first_order=True)   # doctest: +SKIP
    >>> sparse(categorical, multi_hot, history, numeric).fields.shape   # doctest: +SKIP
    torch.Size([512, 4, 16])
    """

    def __init__(self, spec: InputSpec, dim: int, *, vectors: bool = True, first_order: bool = False, sequence: bool = False):
        super().__init__()
        assert vectors or first_order, "a sparse part embeds something"
        assert vectors or not sequence, "a sequence needs vectors"
        self.spec, self.sequence, self.first_order = spec, sequence, first_order
        self.dim = dim if vectors else 0
        self.item_index = spec.categorical_fields.index(spec.item_field)
        w = spec.multi_hot_length
        self.multi_hot_shape = (len(spec.multi_hot_fields), w)
        self.widths = [len(spec.categorical_fields), len(spec.multi_hot_fields) * w, spec.history_length]
        blocks = table_segments(spec)
        inputs = [*spec.categorical_fields, *(f for f in spec.multi_hot_fields for _ in range(w)),
                  *([spec.item_field] * spec.history_length)]  # the block each id column reads
        self.register_buffer("offsets", torch.tensor([blocks[f][0] for f in inputs], dtype=torch.int64), persistent=False)
        # ids must stay inside their own block
        self.register_buffer("limits", torch.tensor([blocks[f][1] for f in inputs], dtype=torch.int64), persistent=False)
        self.table = RowTable(sum(n for _, n in blocks.values()), self.dim + int(first_order))
        with torch.no_grad():  # small normal init, first-order weights zero, padding rows zero
            self.table.weight.normal_(std=0.01)
            self.table.weight[:, self.dim :].zero_()
            self.table.weight[[start for start, _ in blocks.values()]] = 0.0

    def rows(self, name: str) -> torch.Tensor:
        """The block of ``table.weight`` of one input (a categorical field or a multi-hot feature), a view."""
        start, n = table_segments(self.spec)[name]
        return self.table.weight[start : start + n]

    def forward(self, categorical, multi_hot, history, numeric) -> SparseOutput:
        out = SparseOutput(numeric=numeric)
        ids = torch.cat([categorical, multi_hot, history], dim=1)  # (B, F + K W + L)
        e = self._lookup(ids, self.offsets, self.limits)  # (B, F + K W + L, D + first order)
        fields, hot_rows, history_rows = e.split(self.widths, dim=1)
        hot_mean = self._multi_hot_mean(hot_rows, multi_hot)  # (B, K, D + first order)
        history_mean = None if self.sequence else _mean_over_real(history_rows, history)
        d = self.dim
        if d:
            out.fields = fields[..., :d]  # (B, F, D)
            out.target = out.fields[:, self.item_index]  # (B, D)
            out.multi_hot = hot_mean[..., :d]  # (B, K, D)
            if self.sequence:
                out.history = history_rows[..., :d]  # (B, L, D)
                out.history_mask = history != 0  # (B, L)
            else:
                assert history_mean is not None
                out.history_pooled = history_mean[:, :d]  # (B, D)
        if self.first_order:
            assert history_mean is not None
            out.linear = fields[..., d:].sum(1) + hot_mean[..., d:].sum(1) + history_mean[:, d:]  # (B, 1)
        return out

    def embed_user(self, history: torch.Tensor, categorical: torch.Tensor, numeric: torch.Tensor,
                   user: UserFields) -> SparseOutput:
        """The user side of a sequence model, from one row: ``history`` (1, L) -> ``history`` (1, L, D) and
        ``history_mask``; the ``user`` fields of ``categorical`` (1, F) -> ``fields`` (1, F_u, D) and of
        ``numeric`` (1, N) -> ``numeric`` (1, N_u). The rows :meth:`forward` gives for those inputs."""
        assert self.sequence and not self.first_order, "only sequence models without first-order terms split by user"
        start, picks = self.widths[0] + self.widths[1], list(user.categorical)
        e = self._lookup(history, self.offsets[start:], self.limits[start:])  # (1, L, D)
        fields = self._lookup(categorical[:, picks], self.offsets[picks], self.limits[picks]) if picks \
            else e.new_zeros(1, 0, e.shape[-1])  # (1, F_u, D)
        numeric = numeric[:, list(user.numeric)] if user.numeric else numeric.new_zeros(1, 0)  # (1, N_u)
        return SparseOutput(numeric=numeric, fields=fields, history=e, history_mask=history != 0)

    def embed_candidates(self, categorical: torch.Tensor, multi_hot: torch.Tensor, numeric: torch.Tensor,
                         user: UserFields) -> SparseOutput:
        """The candidate side, N rows: :meth:`forward`'s ``fields`` (N, F_c, D) of the categorical fields that are
        not ``user``'s, ``multi_hot``, ``target`` and the non-user ``numeric`` (N, N_c); no history."""
        assert self.sequence and not self.first_order, "only sequence models without first-order terms split by user"
        f, end = self.widths[0], self.widths[0] + self.widths[1]
        picks = [i for i in range(f) if i not in user.categorical]
        assert self.item_index in picks, "the item is the candidate's, never a user field"
        ids = categorical.index_select(1, torch.tensor(picks)) if user.categorical else categorical  # (N, F_c)
        if torch.onnx.is_in_onnx_export():
            # Padding reads its block's row zeroed in a copy of the table (constant, folded when the graph
            # loads) instead of being masked, and each multi-hot sum is a matmul: the masking ops and the
            # middle-axis reduction cost more than the gather itself.
            weight = self.table.weight
            keep = torch.ones(weight.shape[0], 1, dtype=weight.dtype)
            keep[[start for start, _ in table_segments(self.spec).values()]] = 0.0
            table = weight * keep

            def rows(ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
                return table.index_select(0, (ids + offsets).flatten()).view(*ids.shape, -1)

            fields = rows(ids, self.offsets[picks])  # (N, F_c, D)
            (k, w), b, d = self.multi_hot_shape, ids.shape[0], weight.shape[1]
            if k:
                hot_rows = rows(multi_hot, self.offsets[f:end])  # (N, K W, D)
                summed = hot_rows.reshape(b * k, w * d) @ torch.eye(d, dtype=weight.dtype).repeat(w, 1)  # (N K, D)
                count = (multi_hot != 0).view(b * k, w).sum(1, keepdim=True).clamp(min=1).to(weight.dtype)
                hot_mean = (summed / count).view(b, k, d)
            else:
                hot_mean = weight.new_zeros(b, 0, d)
        else:
            offsets, limits = self.offsets[[*picks, *range(f, end)]], self.limits[[*picks, *range(f, end)]]
            e = self._lookup(torch.cat([ids, multi_hot], dim=1), offsets, limits)
            fields, hot_rows = e.split([len(picks), self.widths[1]], dim=1)  # (N, F_c, D), (N, K W, D)
            hot_mean = self._multi_hot_mean(hot_rows, multi_hot)  # (N, K, D)
        if user.numeric:
            numeric = numeric.index_select(1, torch.tensor([i for i in range(numeric.shape[1]) if i not in user.numeric]))
        return SparseOutput(numeric=numeric, fields=fields, multi_hot=hot_mean, target=fields[:, picks.index(self.item_index)])

    def _lookup(self, ids: torch.Tensor, offsets: torch.Tensor, limits: torch.Tensor) -> torch.Tensor:
        """(B, C) ids of the inputs whose blocks ``offsets`` start -> (B, C, width), zeros at padding."""
        if not torch.onnx.is_in_onnx_export():  # an id past its block would read another input's rows
            torch._assert_async(((ids >= 0) & (ids < limits)).all(),
                                "an input id is outside its vocabulary: encode inputs with the model's own preprocessor")
        real = ids != 0
        e = self.table(torch.where(real, ids + offsets, 0))  # (B, C, width)
        return e * real.unsqueeze(-1).to(e.dtype)  # padding contributes zeros, whatever row 0 holds

    def _multi_hot_mean(self, hot_rows: torch.Tensor, multi_hot: torch.Tensor) -> torch.Tensor:
        """(B, K W, width) rows, (B, K W) ids -> (B, K, width): each feature's mean over its real ids."""
        (k, w), b, width = self.multi_hot_shape, hot_rows.shape[0], hot_rows.shape[-1]
        if not k:  # no multi-hot feature in the schema
            return hot_rows.new_zeros(b, 0, width)
        return _mean_over_real(hot_rows.reshape(b * k, w, width), multi_hot.reshape(b * k, w)).reshape(b, k, width)


class RowTable(nn.Module):
    """``RowTable(rows, width)(ids (...)) -> (..., width)``: rows of ``weight`` by index.

    ``index_select``, not ``F.embedding``: its gradient is an ``index_add``, ~4x faster
    on CPU than embedding's backward for these batches. A module of its own (not a bare
    parameter of :class:`SparseEmbeddings`) because ZeRO-3 gathers a partitioned parameter
    around the forward and backward of the module that owns it, and that module's
    output must be a tensor for the backward hook.
    """

    def __init__(self, rows: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, width))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight.index_select(0, ids.flatten()).view(*ids.shape, -1)


def _mean_over_real(rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, K, W) rows (zeros at padding), (B, K) ids -> (B, W): the mean over ids != 0, zeros if none."""
    return rows.sum(1) / (ids != 0).sum(1, keepdim=True).clamp(min=1).to(rows.dtype)


@runtime_checkable
class UserSide(Protocol):
    """A dense part that scores many candidates against one user's history and fields, encoded once.

    ``score_candidates(encode_user(xu, user), xc, user)`` equals ``dense(x)`` on the N rows of one
    user, where ``xu`` is :meth:`SparseEmbeddings.embed_user` of the user's row and ``xc``
    :meth:`SparseEmbeddings.embed_candidates` of the N rows, both split by the same
    :class:`~mlsys.models.config.UserFields`. The state is a tuple of tensors without a batch
    axis, named by ``state_names`` (the ONNX user graph's outputs).
    """

    state_names: tuple[str, ...]

    def encode_user(self, x: SparseOutput, user: UserFields) -> tuple[torch.Tensor, ...]: ...

    def score_candidates(self, state: tuple[torch.Tensor, ...], x: SparseOutput, user: UserFields) -> torch.Tensor: ...


class CtrModel(nn.Module):
    """``model(categorical, multi_hot, history, numeric) -> logits (B,)`` = ``dense(sparse(...))``.

    Models whose dense part is :class:`UserSide` (DIN, BST-cached) also score in two parts::

        state = model.encode_user(history[:1], categorical[:1], numeric[:1], user)   # once per user
        logits = model.score_candidates(state, categorical, multi_hot, numeric, user)  # (N,)

    ``user`` (:class:`~mlsys.models.config.UserFields`): which fields are the same in every row
    (encoded once with the history); the default, none, reads every field per candidate.
    """

    def __init__(self, sparse: SparseEmbeddings, dense: nn.Module):
        super().__init__()
        self.sparse = sparse
        self.dense = dense

    def forward(self, categorical, multi_hot, history, numeric) -> torch.Tensor:
        return self.dense(self.sparse(categorical, multi_hot, history, numeric))

    @property
    def supports_user_side(self) -> bool:
        return isinstance(self.dense, UserSide)

    def encode_user(self, history: torch.Tensor, categorical: torch.Tensor, numeric: torch.Tensor,
                    user: UserFields = UserFields()) -> tuple[torch.Tensor, ...]:
        """One user's row: ``history`` (1, L), ``categorical`` (1, F), ``numeric`` (1, N) -> the user state
        (``dense.state_names``); only ``user``'s fields of the row are read."""
        assert isinstance(self.dense, UserSide), f"{type(self).__name__} does not score by user side"
        assert history.shape[0] == 1, "one user's row, (1, L)"
        return self.dense.encode_user(self.sparse.embed_user(history, categorical, numeric, user), user)

    def score_candidates(self, state: tuple[torch.Tensor, ...], categorical, multi_hot, numeric,
                         user: UserFields = UserFields()) -> torch.Tensor:
        """Logits (N,) of N candidate rows against one user's state; ``user``'s fields of the rows are not read."""
        assert isinstance(self.dense, UserSide), f"{type(self).__name__} does not score by user side"
        return self.dense.score_candidates(state, self.sparse.embed_candidates(categorical, multi_hot, numeric, user), user)


def first_layer_columns(start: int, width: int, picks) -> list[int]:
    """Input columns of the fields at positions ``picks`` of a block of ``width``-wide fields at ``start``.

    >>> first_layer_columns(10, 2, [0, 2])
    [10, 11, 14, 15]
    """
    return [start + p * width + j for p in picks for j in range(width)]


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
        self.numeric = nn.Linear(max(num_numeric, 1), 1)  # no numeric input: its weight is unused, b remains
        self.has_numeric = num_numeric > 0

    def forward(self, x: SparseOutput) -> torch.Tensor:
        assert x.linear is not None
        return x.linear + (self.numeric(x.numeric) if self.has_numeric else self.numeric.bias)


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
        self.score[0] = PairLinear(4 * dim, hidden[0])

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.score[0](query, keys)  # (B, L, H)
        for layer in list(self.score)[1:]:
            h = layer(h)
        w = h.squeeze(-1) * mask.to(h.dtype)  # (B, L)
        return torch.bmm(w.unsqueeze(1), keys).squeeze(1)  # (B, D)


class PairLinear(nn.Linear):
    """``nn.Linear(4 D, H)`` over ``[q, k, q - k, q * k]``; ``layer(query (B, D), keys (B, L, D)) -> (B, L, H)``.

    W [q, k, q - k, q * k] = (W1 + W3) q + [W2 - W3, W4] [k, q * k]: the query's part is
    computed once per row, not once per history item, and the 4 D-wide input is never
    built (half the FLOPs of the widest matmul). ``layer(x)`` is the plain linear map.
    """

    def forward(self, query: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if keys is None:
            return super().forward(query)
        w_q, w_k, w_diff, w_prod = self.weight.split(query.shape[-1], dim=1)  # (H, D) each
        per_row = F.linear(query, w_q + w_diff, self.bias).unsqueeze(1)  # (B, 1, H)
        return F.linear(torch.cat([keys, query.unsqueeze(1) * keys], dim=-1), torch.cat([w_k - w_diff, w_prod], dim=1)) + per_row


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
