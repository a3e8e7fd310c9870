"""mlsys.registry.halves: a package's sparse half (NumPy) then dense half (ONNX) score as the fused model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlsys.errors import InvalidRequestError
from mlsys.models.zoo import MODELS, Scorer
from mlsys.registry.halves import DENSE_ONNX, SPARSE_PLAN, SPARSE_TABLE, DenseScorer, SparseLookup, export_halves
from tests.unit.test_models import BARE, SPEC, _inputs, _model

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.mark.parametrize("spec", [SPEC, BARE], ids=["full", "bare"])
@pytest.mark.parametrize("name", list(MODELS))
def test_sparse_then_dense_equals_the_fused_model(name, spec, tmp_path):
    model = _model(name, spec=spec)
    assert export_halves(model, tmp_path) == [SPARSE_TABLE, SPARSE_PLAN, DENSE_ONNX]
    sparse, dense = SparseLookup.load(tmp_path), DenseScorer(tmp_path)
    for batch, seed in ((1, 1), (7, 2), (64, 3)):
        inputs = _inputs(batch, seed, spec)
        with torch.no_grad():
            fused = Scorer(model)(*inputs).numpy()
            torch_sparse = model.sparse(*inputs)
        tensors = sparse(*(t.numpy() for t in inputs))
        for key, value in tensors.items():  # the NumPy lookup is the torch one
            np.testing.assert_allclose(value, getattr(torch_sparse, key).numpy(), atol=1e-6, err_msg=key)
        np.testing.assert_allclose(dense.score(tensors), fused, atol=1e-5)


def test_an_id_outside_its_vocabulary_is_refused(tmp_path):
    model = _model(next(iter(MODELS)))
    export_halves(model, tmp_path)
    categorical, multi_hot, history, numeric = (t.numpy() for t in _inputs(3))
    categorical[1, 0] = SPEC.categorical_sizes[0]  # one past the user block
    with pytest.raises(InvalidRequestError, match="outside its vocabulary"):
        SparseLookup.load(tmp_path)(categorical, multi_hot, history, numeric)
