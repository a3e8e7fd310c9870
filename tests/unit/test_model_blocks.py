"""mlsys.models.blocks and ModelConfig: the shared layers against their formulas, and range checks."""

from __future__ import annotations

import pytest
import torch

from mlsys.models import ModelConfig, ModelName
from mlsys.models.blocks import CrossNetwork, MultiHotEmbedding, TargetAttention, TransformerLayer, fm_interactions


def test_multi_hot_is_the_mean_over_real_ids_and_zero_when_empty():
    torch.manual_seed(0)
    bag = MultiHotEmbedding(6, 3)
    ids = torch.tensor([[2, 5, 0], [0, 0, 0], [4, 0, 4]])
    out = bag(ids)
    w = bag.weight
    torch.testing.assert_close(out[0], (w[2] + w[5]) / 2)
    torch.testing.assert_close(out[1], torch.zeros(3))
    torch.testing.assert_close(out[2], w[4])


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
    from mlsys.cli.config import compose_config

    cfg = compose_config([f"model={name.value}"])
    assert ModelName(cfg.model.name) is name
