"""Scoring by user side in torch: the two-part path equals the fused model; BST-cached against an oracle."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mlsys.models import ModelName, UserFields
from mlsys.models.blocks import CtrModel, table_segments
from mlsys.models.zoo import build_model
from tests.unit.test_models import BARE, SPEC, _cfg, _inputs, _model

USER_SIDE = [ModelName.din, ModelName.bst_cached]
DECLARED = ("user_id", "gender", "occupation", "age", "device")  # the user's own fields of SPEC and BARE


def _one_user(spec, n: int, seed: int, user: UserFields, empty_history: bool):
    """N candidate rows of one user: random items and per-row features, the user's fields and history repeated."""
    categorical, multi_hot, history, numeric = _inputs(max(n, 2), seed=seed, spec=spec)
    row = 0 if empty_history else 1  # _inputs leaves row 0's history empty
    categorical[:, list(user.categorical)] = categorical[row, list(user.categorical)]
    numeric[:, list(user.numeric)] = numeric[row, list(user.numeric)]
    return categorical[:n], multi_hot[:n], history[row : row + 1].expand(n, -1).contiguous(), numeric[:n]


def test_exactly_the_sequence_models_without_first_order_terms_score_by_user_side():
    for name in ModelName:
        assert build_model(SPEC, _cfg(name)).supports_user_side == (name in USER_SIDE), name


@pytest.mark.parametrize("empty_history", [False, True], ids=["history", "empty-history"])
@pytest.mark.parametrize("fields", [(), DECLARED], ids=["all-per-row", "user-fields"])
@pytest.mark.parametrize("spec", [SPEC, BARE], ids=["multi-hot-and-numeric", "ids-only"])
@pytest.mark.parametrize("name", USER_SIDE)
def test_two_part_scores_equal_the_fused_model_on_one_users_rows(name, spec, fields, empty_history):
    model = _model(name, 11, spec)
    user = UserFields.of(spec, fields)
    categorical, multi_hot, history, numeric = _one_user(spec, 9, 11, user, empty_history)
    assert bool((history == 0).all()) == empty_history
    with torch.no_grad():
        fused = model(categorical, multi_hot, history, numeric)
        state = model.encode_user(history[:1], categorical[:1], numeric[:1], user)
        split = model.score_candidates(state, categorical, multi_hot, numeric, user)
        one = model.score_candidates(state, categorical[4:5], multi_hot[4:5], numeric[4:5], user)
    assert split.shape == (9,) and torch.isfinite(split).all()
    torch.testing.assert_close(split, fused, rtol=0, atol=1e-5)
    torch.testing.assert_close(one, fused[4:5], rtol=0, atol=1e-5)
    assert fused.max() - fused.min() > 1e-3  # the candidates really differ


@pytest.mark.parametrize("name", USER_SIDE)
def test_the_user_state_is_read_from_the_history_and_the_user_fields_only(name):
    model = _model(name, 12)
    user = UserFields.of(SPEC, DECLARED)
    categorical, multi_hot, history, numeric = _one_user(SPEC, 4, 12, user, empty_history=False)
    other = categorical.clone()
    other[:, list(user.candidate_categorical(SPEC))] = categorical.flip(0)[:, list(user.candidate_categorical(SPEC))]
    with torch.no_grad():
        a = model.encode_user(history[:1], categorical[:1], numeric[:1], user)
        b = model.encode_user(history[:1], other[:1], numeric[:1], user)  # another item in the row, the same user
        changed = categorical[:1].clone()
        changed[0, 2] = changed[0, 2] % (SPEC.categorical_sizes[2] - 1) + 1  # the user's gender
        c = model.encode_user(history[:1], changed, numeric[:1], user)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert not torch.allclose(a[-1], c[-1])  # the head bias holds the user's fields


def _oracle(model: CtrModel, categorical, multi_hot, history, numeric) -> torch.Tensor:
    """BST-cached written as one transformer over [history..., target] with a (L+1, L+1) mask:
    a history position attends to the real history (and itself), the target to the real history and itself."""
    dense = model.dense
    x = model.sparse(categorical, multi_hot, history, numeric)
    b, length = history.shape
    seq = torch.cat([x.history, x.target.unsqueeze(1)], dim=1) + dense.positions  # (B, L + 1, D)
    real = torch.cat([history != 0, torch.ones(b, 1, dtype=torch.bool)], dim=1)  # (B, L + 1)
    allowed = real.unsqueeze(1).expand(b, length + 1, length + 1).clone()
    allowed[:, :length, length] = False  # the history never reads the target
    allowed |= torch.eye(length + 1, dtype=torch.bool)
    d = seq.shape[-1]
    for layer in dense.layers:
        q, k, v = layer.qkv(seq).view(b, length + 1, 3, dense.heads, d // dense.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // dense.heads)
        attn = scores.masked_fill(~allowed.unsqueeze(1), float("-inf")).softmax(-1) @ v
        seq = layer.norm1(seq + layer.out(attn.transpose(1, 2).reshape(b, length + 1, d)))
        seq = layer.norm2(seq + layer.ffn(seq))
    mask = (history != 0).unsqueeze(-1).float()
    behaviour = (seq[:, :-1] * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    features = torch.cat([seq[:, -1], behaviour, x.fields.flatten(1), x.multi_hot.flatten(1), x.numeric], dim=1)
    return dense.mlp(features).squeeze(1)


@pytest.mark.parametrize("layers", [1, 2])
def test_bst_cached_equals_a_masked_transformer_oracle(layers):
    torch.manual_seed(13)
    cfg = _cfg(ModelName.bst_cached)
    cfg.transformer_layers = layers
    model = build_model(SPEC, cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.eval()
    inputs = _inputs(8, seed=13)
    assert bool((inputs[2][0] == 0).all())  # one empty history among the rows
    with torch.no_grad():
        torch.testing.assert_close(model(*inputs), _oracle(model, *inputs), rtol=0, atol=1e-5)


def test_bst_cached_has_bsts_parameters_and_equals_it_without_history():
    """Same state-dict keys as BST; with no history BST's target attends only to itself, as the variant's does."""
    bst, cached = _model(ModelName.bst, 14), _model(ModelName.bst_cached, 15)
    assert bst.state_dict().keys() == cached.state_dict().keys()
    cached.load_state_dict(bst.state_dict())
    categorical, multi_hot, history, numeric = _inputs(6, seed=14)
    with torch.no_grad():
        empty = torch.zeros_like(history)
        torch.testing.assert_close(cached(categorical, multi_hot, empty, numeric), bst(categorical, multi_hot, empty, numeric),
                                   rtol=0, atol=1e-5)
        assert not torch.allclose(cached(categorical, multi_hot, history, numeric)[1:], bst(categorical, multi_hot, history, numeric)[1:])


def test_bst_cached_trains_with_dropout_and_an_empty_history():
    torch.manual_seed(16)
    cfg = _cfg(ModelName.bst_cached)
    cfg.dropout = 0.3
    model = build_model(SPEC, cfg).train()
    categorical, multi_hot, history, numeric = _inputs(8, seed=16)
    history[:] = 0  # every row a new user
    loss = F.binary_cross_entropy_with_logits(model(categorical, multi_hot, history, numeric), torch.ones(8))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_padding_rows_are_never_read_by_either_part():
    model = _model(ModelName.bst_cached, 17)
    user = UserFields.of(SPEC, DECLARED)
    categorical, multi_hot, history, numeric = _one_user(SPEC, 5, 17, user, empty_history=False)
    with torch.no_grad():
        before = model.score_candidates(model.encode_user(history[:1], categorical[:1], numeric[:1], user),
                                        categorical, multi_hot, numeric, user)
        rows = [start for start, _ in table_segments(SPEC).values()]
        model.sparse.table.weight[rows] = 5.0
        after = model.score_candidates(model.encode_user(history[:1], categorical[:1], numeric[:1], user),
                                       categorical, multi_hot, numeric, user)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def test_user_fields_name_positions_and_refuse_the_item():
    assert UserFields.of(SPEC, DECLARED) == UserFields(categorical=(0, 2, 3), numeric=(0,))
    assert UserFields.of(SPEC, DECLARED).candidate_categorical(SPEC) == (1,)
    assert UserFields.of(BARE, DECLARED) == UserFields(categorical=(0, 2), numeric=())
    with pytest.raises(AssertionError, match="item"):
        UserFields.of(SPEC, ("user_id", "item_id"))
