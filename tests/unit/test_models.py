"""mlsys.models: DeepFM shapes, the sparse/dense split, padding, gradients, ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlsys.models import MODEL_INPUTS, InputSpec, ModelConfig, Scorer, build_model
from mlsys.models.blocks import SparseFeatures, masked_mean
from mlsys.models.deepfm import DeepFM

SPEC = InputSpec(
    categorical_fields=("user_id", "item_id", "gender", "occupation"),
    categorical_sizes=(7, 11, 4, 5),
    item_field="item_id",
    genre_size=6,
    max_genres=3,
    history_length=5,
    numeric_fields=("age", "year"),
)
CFG = ModelConfig(embed_dim=4, mlp_dims=[8, 6], dropout=0.0)


def _inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    categorical = torch.stack([torch.randint(0, n, (batch,), generator=g) for n in SPEC.categorical_sizes], dim=1)
    genres = torch.randint(0, SPEC.genre_size, (batch, SPEC.max_genres), generator=g)
    history = torch.randint(0, SPEC.item_size, (batch, SPEC.history_length), generator=g)
    history[0] = 0  # one row with an empty history
    numeric = torch.randn(batch, len(SPEC.numeric_fields), generator=g)
    return categorical, genres, history, numeric


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(SPEC, CFG)
    # Spread the weights so outputs differ visibly between rows (init std is 0.01).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        for table in [*model.sparse.tables, *model.sparse.biases, model.sparse.genres]:
            table.weight[0].zero_()
    return model.eval()


def test_build_model_returns_deepfm():
    assert isinstance(build_model(SPEC, ModelConfig(embed_dim=4, mlp_dims=[8])), DeepFM)


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_forward_shape(batch):
    model = _model()
    out = model(*_inputs(batch))
    assert out.shape == (batch,)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_sparse_features_shapes():
    model = _model()
    x = model.sparse(*_inputs(5))
    assert isinstance(x, SparseFeatures)
    k = len(SPEC.categorical_fields) + 2
    assert model.sparse.num_fields == k
    assert x.fields.shape == (5, k, CFG.embed_dim)
    assert x.linear.shape == (5, 1)
    assert x.numeric.shape == (5, len(SPEC.numeric_fields))


def test_sparse_then_dense_equals_full_model():
    model = _model(1)
    inputs = _inputs(9, seed=1)
    with torch.no_grad():
        full = model(*inputs)
        split = model.dense(model.sparse(*inputs))
    torch.testing.assert_close(split, full, rtol=0, atol=0)


def test_fields_are_embeddings_and_pooled_lists():
    model = _model(2)
    cat, genres, history, numeric = _inputs(4, seed=2)
    with torch.no_grad():
        x = model.sparse(cat, genres, history, numeric)
        emb = model.sparse
        for i, table in enumerate(emb.tables):
            torch.testing.assert_close(x.fields[:, i], table.weight[cat[:, i]])
        # genres: mean over non-padding entries; history uses the item table.
        for b in range(4):
            g = [table_row for table_row in genres[b].tolist() if table_row != 0]
            exp_g = emb.genres.weight[g].mean(0) if g else torch.zeros(CFG.embed_dim)
            torch.testing.assert_close(x.fields[b, -2], exp_g)
            h = [v for v in history[b].tolist() if v != 0]
            item_table = emb.tables[SPEC.categorical_fields.index("item_id")]
            exp_h = item_table.weight[h].mean(0) if h else torch.zeros(CFG.embed_dim)
            torch.testing.assert_close(x.fields[b, -1], exp_h)
        expected_linear = sum(bias.weight[cat[:, i]] for i, bias in enumerate(emb.biases))
        torch.testing.assert_close(x.linear, expected_linear)
        torch.testing.assert_close(x.numeric, numeric)


def test_masked_mean():
    emb = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4).repeat(2, 1, 1)
    ids = torch.tensor([[5, 0, 7], [0, 0, 0]])
    out = masked_mean(emb, ids)
    torch.testing.assert_close(out[0], (emb[0, 0] + emb[0, 2]) / 2)
    torch.testing.assert_close(out[1], torch.zeros(4))


def test_fm_term_is_pairwise_interactions():
    model = _model(3)
    with torch.no_grad():
        x = model.sparse(*_inputs(3, seed=3))
        k = x.fields.shape[1]
        pairwise = sum((x.fields[:, i] * x.fields[:, j]).sum(1) for i in range(k) for j in range(i + 1, k))
        dense = model.dense
        deep = dense.mlp(torch.cat([x.fields.flatten(1), x.numeric], 1)).squeeze(1)
        expected = x.linear.squeeze(1) + dense.numeric_linear(x.numeric).squeeze(1) + pairwise + deep + dense.bias
        torch.testing.assert_close(dense(x), expected, rtol=1e-5, atol=1e-5)


def test_padding_rows_are_zero_at_init():
    torch.manual_seed(0)
    model = build_model(SPEC, CFG)
    emb = model.sparse
    for table in [*emb.tables, emb.genres]:
        assert table.padding_idx == 0
        assert torch.count_nonzero(table.weight[0]) == 0
        assert torch.count_nonzero(table.weight[1:]) > 0
    for bias in emb.biases:
        assert bias.padding_idx == 0
        assert torch.count_nonzero(bias.weight) == 0  # first-order terms start at zero


def test_padding_rows_get_no_gradient_and_embeddings_do():
    model = _model(4).train()
    inputs = _inputs(8, seed=4)
    model(*inputs).sum().backward()
    emb = model.sparse
    for table in [*emb.tables, emb.genres]:
        assert table.weight.grad is not None
        assert torch.count_nonzero(table.weight.grad[0]) == 0  # padding
        assert torch.count_nonzero(table.weight.grad[1:]) > 0
    for bias in emb.biases:
        assert torch.count_nonzero(bias.weight.grad[1:]) > 0
    # Items reached only through the history still get a gradient (shared item table).
    cat, _, history, _ = inputs
    item_col = SPEC.categorical_fields.index("item_id")
    only_history = set(history.flatten().tolist()) - set(cat[:, item_col].tolist()) - {0}
    assert only_history, "test data should have items seen only in histories"
    grad = emb.tables[item_col].weight.grad
    for item in only_history:
        assert torch.count_nonzero(grad[item]) > 0
    # Rows never used get none.
    used = set(history.flatten().tolist()) | set(cat[:, item_col].tolist())
    for item in set(range(SPEC.item_size)) - used:
        assert torch.count_nonzero(grad[item]) == 0
    # And the dense part has gradients too.
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.dense.parameters())


def test_padding_history_positions_do_not_change_the_output():
    model = _model(5)
    cat, genres, _, numeric = _inputs(1, seed=5)
    with torch.no_grad():
        a = model(cat, genres, torch.tensor([[3, 4, 0, 0, 0]]), numeric)
        b = model(cat, genres, torch.tensor([[0, 4, 0, 0, 3]]), numeric)
        c = model(cat, genres, torch.tensor([[3, 3, 0, 0, 0]]), numeric)
    torch.testing.assert_close(a, b)  # a mean over non-padding items, wherever they are
    assert not torch.allclose(a, c)


def test_scorer_outputs_probabilities():
    model = _model(6)
    inputs = _inputs(5, seed=6)
    with torch.no_grad():
        torch.testing.assert_close(Scorer(model)(*inputs), torch.sigmoid(model(*inputs)))


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_onnx_export_dynamic_batch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from mlsys.registry.package import export_onnx

    model = _model(7)
    path = tmp_path / "model.onnx"
    export_onnx(model, SPEC, path)
    assert path.stat().st_size > 0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(MODEL_INPUTS)
    assert [o.name for o in session.get_outputs()] == ["score"]
    for batch in (7, 1):  # the export example has batch 2
        inputs = _inputs(batch, seed=batch)
        (scores,) = session.run(["score"], {k: v.numpy() for k, v in zip(MODEL_INPUTS, inputs)})
        with torch.no_grad():
            expected = torch.sigmoid(model(*inputs)).numpy()
        assert scores.shape == (batch,)
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
        assert np.ptp(expected) > 1e-3 or batch == 1  # the rows really differ
