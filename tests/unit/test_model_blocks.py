"""mlsys.models.blocks and ModelConfig: the shared layers against their formulas, and range checks."""

from __future__ import annotations

import pytest
import torch

from mlsys.models import ModelConfig, ModelName
from mlsys.models import InputSpec
from mlsys.models.blocks import CrossNetwork, PairLinear, SparseEmbeddings, TargetAttention, TransformerLayer, fm_interactions, table_segments


SPEC = InputSpec(("user_id", "item_id"), (4, 6), "item_id", multi_hot_fields=("genres",), multi_hot_sizes=(6,),
                 multi_hot_length=3, history_length=3, numeric_fields=("age",))


def test_one_table_holds_a_block_per_input_and_the_history_shares_the_item_block():
    assert table_segments(SPEC) == {"user_id": (0, 4), "item_id": (4, 6), "genres": (10, 6)}
    torch.manual_seed(0)
    sparse = SparseEmbeddings(SPEC, 3, first_order=True)
    w = sparse.table.weight
    assert w.shape == (16, 4)  # 3 embedding columns + 1 first-order column
    assert torch.count_nonzero(w[:, 3]) == 0 and torch.count_nonzero(w[[0, 4, 10]]) == 0  # first order, padding rows
    categorical, genres, history = torch.tensor([[2, 5]]), torch.tensor([[2, 5, 0]]), torch.tensor([[3, 0, 1]])
    with torch.no_grad():
        w.add_(torch.randn_like(w))
    x = sparse(categorical, genres, history, torch.zeros(1, 1))
    user, item, genre = sparse.rows("user_id"), sparse.rows("item_id"), sparse.rows("genres")
    torch.testing.assert_close(x.fields[0], torch.stack([user[2, :3], item[5, :3]]))
    torch.testing.assert_close(x.target, x.fields[:, 1])
    torch.testing.assert_close(x.multi_hot[0, 0], (genre[2, :3] + genre[5, :3]) / 2)  # the mean over real ids
    torch.testing.assert_close(x.history_pooled[0], (item[3, :3] + item[1, :3]) / 2)  # from the item block
    linear = user[2, 3] + item[5, 3] + (genre[2, 3] + genre[5, 3]) / 2 + (item[3, 3] + item[1, 3]) / 2
    torch.testing.assert_close(x.linear[0, 0], linear)


def test_multi_hot_and_history_pool_to_zeros_when_empty_whatever_the_padding_row_holds():
    torch.manual_seed(1)
    sparse = SparseEmbeddings(SPEC, 3)
    with torch.no_grad():
        sparse.table.weight[0] = 5.0
    x = sparse(torch.tensor([[1, 1]]), torch.zeros(1, 3, dtype=torch.int64), torch.zeros(1, 3, dtype=torch.int64), torch.zeros(1, 1))
    torch.testing.assert_close(x.multi_hot, torch.zeros(1, 1, 3))
    torch.testing.assert_close(x.history_pooled, torch.zeros(1, 3))


def test_sequence_models_get_the_history_and_its_mask():
    sparse = SparseEmbeddings(SPEC, 3, sequence=True)
    history = torch.tensor([[3, 0, 0]])
    x = sparse(torch.tensor([[1, 1]]), torch.zeros(1, 3, dtype=torch.int64), history, torch.zeros(1, 1))
    assert x.history_pooled is None and x.linear is None
    torch.testing.assert_close(x.history[0, 0], sparse.rows("item_id")[3])
    assert torch.equal(x.history_mask, history != 0) and torch.count_nonzero(x.history[0, 1:]) == 0


def test_fm_interactions_are_pairwise_dot_products():
    e = torch.randn(3, 5, 4)
    expected = sum((e[:, i] * e[:, j]).sum(1) for i in range(5) for j in range(i + 1, 5)).unsqueeze(1)
    torch.testing.assert_close(fm_interactions(e), expected, rtol=1e-5, atol=1e-5)


def test_cross_network_formula():
    torch.manual_seed(1)
    net = CrossNetwork(4, 2)
    x0 = torch.randn(3, 4)
    x1 = x0 * net.layers[0](x0) + x0
    x2 = x0 * net.layers[1](x1) + x1
    torch.testing.assert_close(net(x0), x2)


def test_target_attention_weights_real_items_only():
    torch.manual_seed(2)
    att = TargetAttention(4, [8])
    q, keys = torch.randn(2, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    out = att(q, keys, mask)
    w = att.score(torch.cat([q[0].expand(2, 4), keys[0, :2], q[0] - keys[0, :2], q[0] * keys[0, :2]], -1)).squeeze(-1)
    torch.testing.assert_close(out[0], (w.unsqueeze(1) * keys[0, :2]).sum(0))
    torch.testing.assert_close(out[1], torch.zeros(4))  # an empty history pools to zeros


def test_pair_linear_equals_the_linear_map_of_the_four_way_concatenation():
    torch.manual_seed(4)
    layer = PairLinear(4 * 3, 5)
    q, keys = torch.randn(2, 3), torch.randn(2, 4, 3)
    qe = q.unsqueeze(1).expand_as(keys)
    torch.testing.assert_close(layer(q, keys), layer(torch.cat([qe, keys, qe - keys, qe * keys], -1)))


def test_transformer_layer_never_attends_to_padded_keys():
    torch.manual_seed(3)
    layer = TransformerLayer(4, 2, dropout=0.0).eval()
    x = torch.randn(1, 4, 4)
    mask = torch.tensor([[True, False, True, True]])
    y = x.clone()
    y[0, 1] = 100.0  # the padded position's content
    a, b = layer(x, mask), layer(y, mask)
    torch.testing.assert_close(a[:, [0, 2, 3]], b[:, [0, 2, 3]])
    assert torch.isfinite(b).all()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cross_layers": 0}, "model.cross_layers"),
        ({"attention_dims": []}, "model.attention_dims"),
        ({"transformer_layers": 9}, "model.transformer_layers"),
        ({"name": ModelName.bst, "embed_dim": 6, "attention_heads": 4}, "model.attention_heads"),
        ({"embed_dim": 0}, "model.embed_dim"),
        ({"dropout": 1.0}, "model.dropout"),
    ],
)
def test_config_range_checks_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        ModelConfig(**overrides)


def test_heads_need_to_divide_embed_dim_only_for_bst():
    ModelConfig(name=ModelName.deepfm, embed_dim=6, attention_heads=4)  # unused there, so allowed
    assert ModelConfig(name="bst", embed_dim=8, attention_heads=4).attention_heads == 4


@pytest.mark.parametrize("name", list(ModelName))
def test_every_model_config_composes(name):
    from mlsys.api.config import compose_config

    cfg = compose_config([f"model={name.value}"])
    assert ModelName(cfg.model.name) is name
