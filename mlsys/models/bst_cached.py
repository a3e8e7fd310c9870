"""BST with user-sequence caching: the history encodes without the candidate, the candidate reads from it.

As in HSTU's M-FALCON (Zhai et al., 2024), the history tokens (+ positions) go through
the transformer layers attending only to the real history; the candidate's token
attends, at each layer, over that layer's history keys and values and itself. The
candidate never changes the history, so one user's keys and values are computed once
and every candidate is scored against them in one batched pass
(:meth:`BSTCachedDense.encode_user`, :meth:`BSTCachedDense.score_candidates`); the
training forward computes exactly this, so the model is trained as it serves.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mlsys.models.blocks import (
    MLP, CtrModel, SparseEmbeddings, SparseOutput, TransformerLayer, first_layer_columns, positional_table,
)
from mlsys.models.config import InputSpec, ModelConfig, UserFields


class BSTCachedDense(nn.Module):
    """History-only transformer; the target's token attends over each layer's history K/V and itself.
    MLP over the target's output, the mean of the real history outputs, the other fields and numeric -> logits (B,)."""

    state_names = ("scores_weight", "scores_bias", "values_out", "head_bias")

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.attention_heads
        self.dropout = cfg.dropout
        self.positions = positional_table(spec.history_length + 1, cfg.embed_dim)  # the target is at position L
        self.layers = nn.ModuleList(
            TransformerLayer(cfg.embed_dim, cfg.attention_heads, cfg.dropout) for _ in range(cfg.transformer_layers)
        )
        width = (spec.pooled_fields + 1) * cfg.embed_dim + len(spec.numeric_fields)
        self.layout = (len(spec.categorical_fields), len(spec.multi_hot_fields), len(spec.numeric_fields))
        self.mlp = MLP(width, list(cfg.mlp_dims), cfg.dropout)

    def forward(self, x: SparseOutput) -> torch.Tensor:
        assert x.fields is not None and x.multi_hot is not None and x.target is not None
        assert x.history is not None and x.history_mask is not None
        keys, values, behaviour = self._encode(x.history, x.history_mask)  # (layers, B, H, L, Dh) x 2, (B, D)
        target = x.target + self.positions[-1]  # (B, D)
        for layer, k, v in zip(self.layers, keys, values):
            q, k_self, v_self = self._target_qkv(layer, target)  # (B, H, Dh) each
            scores = (q.unsqueeze(2) @ k.transpose(-1, -2)).squeeze(2)  # (B, H, L)
            attn = self._attend(scores, q, k_self, v_self, x.history_mask.unsqueeze(1))
            read = (attn[..., :-1].unsqueeze(2) @ v).squeeze(2) + attn[..., -1:] * v_self  # (B, H, Dh)
            target = self._target_update(layer, target, read)
        return self._head(target, behaviour, x)

    def encode_user(self, x: SparseOutput, user: UserFields) -> tuple[torch.Tensor, ...]:
        """One user's history and fields -> each layer's history keys and values, folded into the weights that read them.

        Per layer, with H heads of Dh, the candidate's (scaled) scores over the history are
        ``t @ scores_weight + scores_bias`` (D, H L) and (H L,): the keys multiplied into the query
        projection, padding's bias -inf; ``values_out`` (H L, D) is the values multiplied into the
        output projection, so the history read is one (N, H L) x (H L, D) product. ``head_bias`` (H1,)
        is the MLP's first bias plus the part of its first layer from the pooled history (``behaviour``)
        and the user's fields.
        """
        assert x.history is not None and x.history_mask is not None and x.history.shape[0] == 1
        assert x.fields is not None
        keys, values, behaviour = self._encode(x.history, x.history_mask)  # (layers, 1, H, L, Dh) x 2, (1, D)
        mask = x.history_mask[0]  # (L,)
        weights, biases, reads = [], [], []
        for layer, k, v in zip(self.layers, keys[:, 0], values[:, 0]):  # (H, L, Dh)
            h, length, dh = k.shape
            scale = 1.0 / math.sqrt(dh)
            k = k * mask.unsqueeze(-1).to(k.dtype)  # padding's keys exactly 0: its score is the bias alone, -inf
            w_q, b_q = layer.qkv.weight[: h * dh].view(h, dh, -1), layer.qkv.bias[: h * dh].view(h, dh)
            weights.append(torch.einsum("hei,hle->ihl", w_q, k).reshape(-1, h * length) * scale)  # (D, H L)
            bias = torch.einsum("he,hle->hl", b_q, k) * scale
            biases.append(torch.where(mask, bias, float("-inf")).reshape(h * length))  # (H L,)
            read = torch.einsum("hle,jhe->hlj", v, layer.out.weight.view(-1, h, dh)).reshape(h * length, -1)  # (H L, D)
            reads.append(read)
        first = self.mlp[0]
        own = torch.cat([behaviour, x.fields.flatten(1), x.numeric], dim=1)[0]  # (D + F_u D + N_u,)
        head_bias = first.bias + own @ first.weight[:, self._user_columns(user, behaviour.shape[-1])].t()  # (H1,)
        return torch.stack(weights), torch.stack(biases), torch.stack(reads), head_bias

    def score_candidates(self, state: tuple[torch.Tensor, ...], x: SparseOutput, user: UserFields) -> torch.Tensor:
        """N candidates against :meth:`encode_user`'s state -> logits (N,), one batched pass per layer."""
        assert x.fields is not None and x.multi_hot is not None and x.target is not None
        scores_weight, scores_bias, values_out, head_bias = state
        target = x.target + self.positions[-1]  # (N, D)
        n, d = target.shape
        h = self.heads
        # (D, H): sums each head's Dh columns, scaled: (q * k) @ heads = the scaled per-head dot products
        heads = torch.eye(h, dtype=target.dtype).repeat_interleave(d // h, dim=0) / math.sqrt(d // h)
        for i, layer in enumerate(self.layers):
            weight, bias, read_out = scores_weight[i], scores_bias[i], values_out[i]
            q, k_self, v_self = layer.qkv(target).split(d, dim=1)  # (N, D) each
            own = ((q * k_self) @ heads).unsqueeze(-1)  # (N, H, 1)
            history = torch.addmm(bias, target, weight).view(n, h, -1)  # (N, H, L), scaled, padding -inf
            attn = torch.cat([history, own], dim=-1).softmax(-1)  # (N, H, L + 1)
            on_history, on_self = attn.split([attn.shape[-1] - 1, 1], dim=-1)
            read = on_history.reshape(n, -1) @ read_out + layer.out((on_self * v_self.view(n, h, d // h)).view(n, d))
            target = layer.norm1(target + read)
            target = layer.norm2(target + layer.ffn(target))
        first = self.mlp[0]
        features = torch.cat([target, x.fields.flatten(1), x.multi_hot.flatten(1), x.numeric], dim=1)
        hidden = F.linear(features, first.weight[:, self._candidate_columns(user, d)], head_bias)
        for module in list(self.mlp)[1:]:
            hidden = module(hidden)
        return hidden.squeeze(1)

    # The MLP's input: [target, behaviour, F fields, K multi-hot (all D wide), N numeric].
    def _user_columns(self, user: UserFields, d: int) -> list[int]:
        f, k, _ = self.layout
        numeric = [(f + k + 2) * d + i for i in user.numeric]
        return [*range(d, 2 * d), *first_layer_columns(2 * d, d, user.categorical), *numeric]

    def _candidate_columns(self, user: UserFields, d: int) -> list[int]:
        f, k, n = self.layout
        fields = first_layer_columns(2 * d, d, [i for i in range(f) if i not in user.categorical])
        numeric = [(f + k + 2) * d + i for i in range(n) if i not in user.numeric]
        return [*range(d), *fields, *range((f + 2) * d, (f + k + 2) * d), *numeric]

    def _encode(self, history: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L, D), (B, L) -> every layer's keys and values (layers, B, H, L, Dh) and the pooled output (B, D)."""
        b, length, d = history.shape
        h = history + self.positions[:-1]  # (B, L, D)
        # Real keys, plus each position itself: a padded position (an empty history is all padding)
        # gets a finite output that no real position reads, never an all -inf row.
        attend = (mask.unsqueeze(1) | torch.eye(length, dtype=torch.bool, device=mask.device)).unsqueeze(1)  # (B, 1, L, L)
        keys, values = [], []
        for layer in self.layers:
            q, k, v = layer.qkv(h).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, L, Dh)
            keys.append(k)
            values.append(v)
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, dropout_p=self.dropout if self.training else 0.0)
            h = layer.norm1(h + layer.drop(layer.out(attn.transpose(1, 2).reshape(b, length, d))))
            h = layer.norm2(h + layer.drop(layer.ffn(h)))
        real = mask.unsqueeze(-1).to(h.dtype)  # (B, L, 1)
        behaviour = (h * real).sum(1) / real.sum(1).clamp(min=1.0)  # (B, D); zeros for no history
        return torch.stack(keys), torch.stack(values), behaviour

    def _target_qkv(self, layer: TransformerLayer, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, d = target.shape
        q, k, v = layer.qkv(target).view(b, 3, self.heads, d // self.heads).unbind(1)  # (B, H, Dh) each
        return q, k, v

    def _attend(self, scores, q, k_self, v_self, mask) -> torch.Tensor:
        """Softmax over [history keys (masked), the target itself] -> (B, H, L + 1); the self term keeps a row finite."""
        scale = 1.0 / math.sqrt(q.shape[-1])
        scores = torch.where(mask, scores * scale, float("-inf"))  # (B, H, L)
        attn = torch.cat([scores, (q * k_self).sum(-1, keepdim=True) * scale], dim=-1).softmax(-1)
        return F.dropout(attn, self.dropout, self.training)

    def _target_update(self, layer: TransformerLayer, target: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
        target = layer.norm1(target + layer.drop(layer.out(read.flatten(1))))
        return layer.norm2(target + layer.drop(layer.ffn(target)))

    def _head(self, target: torch.Tensor, behaviour: torch.Tensor, x: SparseOutput) -> torch.Tensor:
        assert x.fields is not None and x.multi_hot is not None
        features = torch.cat([target, behaviour, x.fields.flatten(1), x.multi_hot.flatten(1), x.numeric], dim=1)
        return self.mlp(features).squeeze(1)


class BSTCached(CtrModel):
    """``BSTCached(spec, ModelConfig(name="bst_cached"))(categorical, multi_hot, history, numeric) -> logits (B,)``;
    ``model.score_candidates(model.encode_user(history[:1], categorical[:1], numeric[:1]), categorical, multi_hot, numeric)``
    gives the same for the rows of one user."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__(SparseEmbeddings(spec, cfg.embed_dim, sequence=True), BSTCachedDense(spec, cfg))
