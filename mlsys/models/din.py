"""DIN (Zhou et al., 2018): the candidate item attends over the user's behaviour sequence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlsys.models.blocks import MLP, CtrModel, SparseEmbeddings, SparseOutput, TargetAttention, first_layer_columns
from mlsys.models.config import InputSpec, ModelConfig, UserFields


class DINDense(nn.Module):
    """MLP over [F field embeddings, K pooled multi-hot features, attention-pooled history, numeric] -> logits (B,)."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__()
        self.attention = TargetAttention(cfg.embed_dim, list(cfg.attention_dims))
        width = spec.pooled_fields * cfg.embed_dim + len(spec.numeric_fields)
        self.layout = (len(spec.categorical_fields), len(spec.multi_hot_fields), len(spec.numeric_fields))
        self.mlp = MLP(width, list(cfg.mlp_dims), cfg.dropout)

    def forward(self, x: SparseOutput) -> torch.Tensor:
        assert x.fields is not None and x.multi_hot is not None and x.target is not None
        assert x.history is not None and x.history_mask is not None
        interest = self.attention(x.target, x.history, x.history_mask)  # (B, D)
        features = torch.cat([x.fields.flatten(1), x.multi_hot.flatten(1), interest, x.numeric], dim=1)
        return self.mlp(features).squeeze(1)

    state_names = ("history_embeddings", "history_mask", "key_term", "product_term", "head_bias")

    def encode_user(self, x: SparseOutput, user: UserFields) -> tuple[torch.Tensor, ...]:
        """One user's history and fields -> its query-independent parts of the activation unit and the MLP.

        With ``W = [W1, W2, W3, W4]`` over ``[q, k, q - k, q * k]`` (:class:`PairLinear`):
        ``key_term`` (L, H) = (W2 - W3) k for every history item, and ``product_term`` (D, L H)
        with ``q @ product_term`` = W4 (q * k) for every item, so a candidate's first layer is one
        (N, D) x (D, L H) product plus its own (W1 + W3) q + b. ``head_bias`` (H1,): the MLP's
        first bias plus the user fields' part of its first layer.
        """
        assert x.history is not None and x.history_mask is not None and x.history.shape[0] == 1
        assert x.fields is not None
        keys, mask = x.history[0], x.history_mask[0]  # (L, D), (L,)
        d = keys.shape[-1]
        _, w_k, w_diff, w_prod = self.attention.score[0].weight.split(d, dim=1)  # (H, D) each
        key_term = F.linear(keys, w_k - w_diff)  # (L, H)
        product_term = (keys.unsqueeze(1) * w_prod).reshape(-1, d).t()  # (D, L H): [d, l H + h] = k[l, d] W4[h, d]
        first = self.mlp[0]
        own = torch.cat([x.fields.flatten(1), x.numeric], dim=1)[0]  # (F_u D + N_u,)
        head_bias = first.bias + own @ first.weight[:, self._user_columns(user, d)].t()  # (H1,)
        return keys, mask, key_term, product_term, head_bias

    def score_candidates(self, state: tuple[torch.Tensor, ...], x: SparseOutput, user: UserFields) -> torch.Tensor:
        """N candidates against :meth:`encode_user`'s state -> logits (N,)."""
        assert x.fields is not None and x.multi_hot is not None and x.target is not None
        keys, mask, key_term, product_term, head_bias = state
        first = self.attention.score[0]
        d = keys.shape[-1]
        w_q, _, w_diff, _ = first.weight.split(d, dim=1)
        q = x.target  # (N, D)
        h = (q @ product_term).view(q.shape[0], *key_term.shape) + key_term  # (N, L, H)
        h = h + F.linear(q, w_q + w_diff, first.bias).unsqueeze(1)
        for layer in list(self.attention.score)[1:]:
            h = layer(h)
        w = h.squeeze(-1) * mask.to(h.dtype)  # (N, L)
        interest = w @ keys  # (N, D)
        features = torch.cat([x.fields.flatten(1), x.multi_hot.flatten(1), interest, x.numeric], dim=1)
        top = self.mlp[0]
        hidden = F.linear(features, top.weight[:, self._candidate_columns(user, d)], head_bias)
        for module in list(self.mlp)[1:]:
            hidden = module(hidden)
        return hidden.squeeze(1)

    # The MLP's input: [F fields, K multi-hot, interest (all D wide), N numeric].
    def _user_columns(self, user: UserFields, d: int) -> list[int]:
        f, k, _ = self.layout
        return first_layer_columns(0, d, user.categorical) + [(f + k + 1) * d + i for i in user.numeric]

    def _candidate_columns(self, user: UserFields, d: int) -> list[int]:
        f, k, n = self.layout
        fields = first_layer_columns(0, d, [i for i in range(f) if i not in user.categorical])
        numeric = [(f + k + 1) * d + i for i in range(n) if i not in user.numeric]
        return [*fields, *range(f * d, (f + k + 1) * d), *numeric]


class DIN(CtrModel):
    """``DIN(spec, ModelConfig(name="din"))(categorical, multi_hot, history, numeric) -> logits (B,)``."""

    def __init__(self, spec: InputSpec, cfg: ModelConfig):
        super().__init__(SparseEmbeddings(spec, cfg.embed_dim, sequence=True), DINDense(spec, cfg))
