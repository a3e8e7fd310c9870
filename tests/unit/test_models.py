"""mlsys.models: every model in the zoo: shapes, the sparse/dense split, gradients, masking, ONNX parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlsys.models import MODEL_INPUTS, InputSpec, ModelConfig, ModelName
from mlsys.models.blocks import CtrModel, SparseOutput, table_segments
from mlsys.models.zoo import MODELS, Scorer, build_model

SPEC = InputSpec(
    categorical_fields=("user_id", "item_id", "gender", "occupation"),
    categorical_sizes=(7, 11, 4, 5),
    item_field="item_id",
    multi_hot_fields=("genres", "tags"),  # two multi-hot features, each its own block and mean
    multi_hot_sizes=(6, 4),
    multi_hot_length=3,
    history_length=5,
    numeric_fields=("age", "year"),
)
# A data set with neither multi-hot nor numeric features (only ids and the behaviour sequence).
BARE = InputSpec(("user_id", "item_id", "device"), (7, 11, 3), "item_id", (), (), 3, 5, ())
NAMES = list(ModelName)
SEQUENCE = {ModelName.din, ModelName.bst, ModelName.bst_cached}
ITEM = SPEC.categorical_fields.index("item_id")


def _cfg(name: ModelName) -> ModelConfig:
    return ModelConfig(name=name, embed_dim=4, mlp_dims=[8, 6], dropout=0.0, cross_layers=2, attention_dims=[8], attention_heads=2)


def _inputs(batch: int, seed: int = 0, spec: InputSpec = SPEC) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    categorical = torch.stack([torch.randint(1, n, (batch,), generator=g) for n in spec.categorical_sizes], dim=1)
    multi_hot = torch.cat([torch.randint(0, n, (batch, spec.multi_hot_length), generator=g) for n in spec.multi_hot_sizes]
                          or [torch.zeros(batch, 0, dtype=torch.int64)], dim=1)
    history = torch.randint(1, spec.item_size, (batch, spec.history_length), generator=g)
    history[:, 3:] = 0  # right padding, as the preprocessor writes it
    history[0] = 0  # one row with an empty history
    multi_hot[-1] = 0  # and one with no multi-hot values
    numeric = torch.randn(batch, len(spec.numeric_fields), generator=g)
    return categorical, multi_hot, history, numeric


PADDING_ROWS = [start for start, _ in table_segments(SPEC).values()]  # each input's index 0 in the one table


def _model(name: ModelName, seed: int = 0, spec: InputSpec = SPEC) -> CtrModel:
    torch.manual_seed(seed)
    model = build_model(spec, _cfg(name))
    # Spread the weights so outputs differ visibly between rows (init std is 0.01, first order 0).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        model.sparse.table.weight[[start for start, _ in table_segments(spec).values()]] = 0.0
    return model.eval()


@pytest.mark.parametrize("name", NAMES)
def test_build_model_uses_the_closed_table(name):
    model = build_model(SPEC, _cfg(name))
    assert type(model) is MODELS[name] and isinstance(model, CtrModel)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 16])
def test_forward_shape(name, batch):
    out = _model(name)(*_inputs(batch))
    assert out.shape == (batch,) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_sparse_then_dense_equals_full_model(name):
    model = _model(name, 1)
    inputs = _inputs(9, seed=1)
    with torch.no_grad():
        x = model.sparse(*inputs)
        full = model(*inputs)
        split = model.dense(x)
    assert isinstance(x, SparseOutput)
    torch.testing.assert_close(split, full, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_sparse_output_shapes(name):
    model = _model(name)
    cat, multi_hot, history, numeric = _inputs(5)
    x = model.sparse(cat, multi_hot, history, numeric)
    f, d, n = len(SPEC.categorical_fields), 4, len(SPEC.numeric_fields)
    assert x.numeric.shape == (5, n)
    if name is ModelName.lr:
        assert x.fields is None and x.history is None
    else:
        assert x.fields.shape == (5, f, d) and x.multi_hot.shape == (5, len(SPEC.multi_hot_fields), d)
        torch.testing.assert_close(x.target, x.fields[:, ITEM])
        torch.testing.assert_close(x.fields[:, ITEM], model.sparse.rows("item_id")[cat[:, ITEM], :d])
        torch.testing.assert_close(x.fields[:, 0], model.sparse.rows("user_id")[cat[:, 0], :d])
    if name in SEQUENCE:
        assert x.history.shape == (5, SPEC.history_length, d) and x.history_pooled is None
        assert torch.equal(x.history_mask, history != 0)
    elif name is not ModelName.lr:
        assert x.history_pooled.shape == (5, d) and x.history is None
        assert x.pooled_fields().shape == (5, SPEC.pooled_fields, d) == (5, f + 2 + 1, d)
    has_linear = name in {ModelName.lr, ModelName.fm, ModelName.widedeep, ModelName.deepfm}
    assert (x.linear is not None) == has_linear
    if has_linear:
        assert x.linear.shape == (5, 1)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter_and_used_embedding_rows(name):
    model = _model(name, 4).train()
    inputs = _inputs(8, seed=4)
    model(*inputs).sum().backward()
    for pname, p in model.named_parameters():  # every parameter is used (DDP needs that)
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert torch.count_nonzero(p.grad) > 0, pname
    grad = model.sparse.table.weight.grad
    assert torch.count_nonzero(grad[PADDING_ROWS]) == 0  # padding rows learn nothing
    cat, _, history, _ = inputs
    start, rows = table_segments(SPEC)["item_id"]
    item_table = grad[start : start + rows]
    only_history = set(history.flatten().tolist()) - set(cat[:, ITEM].tolist()) - {0}
    assert only_history, "the test data should have items seen only in histories"
    for item in only_history:  # the history shares the item table
        assert torch.count_nonzero(item_table[item]) > 0
    used = set(history.flatten().tolist()) | set(cat[:, ITEM].tolist())
    for item in set(range(SPEC.item_size)) - used:
        assert torch.count_nonzero(item_table[item]) == 0


@pytest.mark.parametrize("name", NAMES)
def test_padding_positions_do_not_change_the_output(name):
    model = _model(name, 5)
    inputs = _inputs(6, seed=5)
    with torch.no_grad():
        before = model(*inputs)
        model.sparse.table.weight[PADDING_ROWS] = torch.randn(len(PADDING_ROWS), model.sparse.table.weight.shape[1]) * 3.0
        # whatever sits in the padding rows must be masked out
        after = model(*inputs)
    torch.testing.assert_close(after, before, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in {ModelName.bst, ModelName.bst_cached}])  # positions
def test_pooled_history_ignores_where_padding_sits(name):
    model = _model(name, 6)
    cat, multi_hot, _, numeric = _inputs(1, seed=6)
    with torch.no_grad():
        a = model(cat, multi_hot, torch.tensor([[3, 4, 0, 0, 0]]), numeric)
        b = model(cat, multi_hot, torch.tensor([[0, 4, 0, 0, 3]]), numeric)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_history_changes_the_output_and_empty_history_is_finite(name):
    model = _model(name, 7)
    cat, multi_hot, history, numeric = _inputs(8, seed=7)
    changed = history.clone()
    changed[:, 0] = changed[:, 0] % (SPEC.item_size - 1) + 1  # another real item
    with torch.no_grad():
        a = model(cat, multi_hot, history, numeric)
        c = model(cat, multi_hot, changed, numeric)
        empty = model(cat, multi_hot, torch.zeros_like(history), numeric)
    assert not torch.allclose(a[1:], c[1:])  # row 0 has no history
    assert torch.isfinite(empty).all()


def test_scorer_outputs_probabilities():
    model = _model(ModelName.din, 8)
    inputs = _inputs(5, seed=8)
    with torch.no_grad():
        torch.testing.assert_close(Scorer(model)(*inputs), torch.sigmoid(model(*inputs)))


@pytest.mark.parametrize("spec", [SPEC, BARE], ids=["multi-hot-and-numeric", "ids-only"])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_onnx_export_matches_torch(name, spec, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from mlsys.registry.package import export_onnx

    model = _model(name, 9, spec)
    path = tmp_path / "model.onnx"
    export_onnx(model, spec, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(MODEL_INPUTS)
    assert [o.name for o in session.get_outputs()] == ["score"]
    for batch in (7, 1):  # the export example has batch 2
        inputs = _inputs(batch, seed=batch, spec=spec)
        (scores,) = session.run(["score"], {k: v.numpy() for k, v in zip(MODEL_INPUTS, inputs)})
        with torch.no_grad():
            expected = torch.sigmoid(model(*inputs)).numpy()
        assert scores.shape == (batch,) and np.isfinite(scores).all()
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
        assert np.ptp(expected) > 1e-3 or batch == 1  # the rows really differ


def test_an_id_outside_its_vocabulary_is_refused_not_read_from_another_inputs_rows():
    model = _model(ModelName.deepfm)
    cat, multi_hot, history, numeric = _inputs(2)
    cat[1, 0] = SPEC.categorical_sizes[0]  # one past the user vocabulary: the first item row
    with pytest.raises(RuntimeError, match="outside its vocabulary"):
        model(cat, multi_hot, history, numeric)
