"""mlsys.registry.user_side: the two ONNX graphs against the fused torch Scorer, the user-state cache."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mlsys.models import ModelName, UserFields
from mlsys.models.blocks import table_segments
from mlsys.models.zoo import Scorer
from tests.unit.test_models import BARE, SPEC, _model
from tests.unit.test_user_side_models import DECLARED, _one_user

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

from mlsys.registry.user_side import (  # noqa: E402
    CANDIDATE_GRAPH, SPLIT, USER_GRAPH, UserSideScorer, UserStateCache, export_user_side, user_fields_of, user_version,
)

CASES = [(ModelName.din, SPEC, DECLARED), (ModelName.bst_cached, SPEC, DECLARED),
         (ModelName.din, BARE, ()), (ModelName.bst_cached, BARE, DECLARED), (ModelName.bst_cached, SPEC, ())]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0].value}-{'ids-only' if c[1] is BARE else 'full'}-"
                                                       f"{'user-fields' if c[2] else 'all-per-row'}")
def exported(request, tmp_path_factory):
    name, spec, fields = request.param
    model = _model(name, 21, spec)
    with torch.no_grad():  # padding rows hold values: neither graph may read them
        model.sparse.table.weight[[start for start, _ in table_segments(spec).values()]] = 3.0
    directory = tmp_path_factory.mktemp(name.value)
    assert export_user_side(model, spec, directory, fields) == [USER_GRAPH, CANDIDATE_GRAPH, SPLIT]
    return model, spec, UserFields.of(spec, fields), directory


def _fused(model, *inputs) -> np.ndarray:
    with torch.no_grad():
        return Scorer(model)(*inputs).numpy()


@pytest.mark.parametrize("n", [1, 7, 64])
@pytest.mark.parametrize("empty_history", [False, True], ids=["history", "empty-history"])
def test_onnx_two_part_scores_equal_the_fused_torch_scorer(exported, n, empty_history):
    model, spec, user, directory = exported
    scorer = UserSideScorer(directory, spec)
    assert scorer.user == user
    inputs = _one_user(spec, n, 22 + n, user, empty_history)
    arrays = [t.numpy() for t in inputs]
    got = scorer.score(*arrays)
    expected = _fused(model, *inputs)
    assert got.shape == (n,) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert n == 1 or np.ptp(expected) > 1e-3
    # a history given once, (1, L), is the same request
    np.testing.assert_allclose(scorer.score(arrays[0], arrays[1], arrays[2][:1], arrays[3]), expected, rtol=0, atol=1e-5)


def test_a_cache_hit_gives_the_same_scores(exported):
    model, spec, user, directory = exported
    scorer = UserSideScorer(directory, spec, cache=UserStateCache(max_entries=4))
    arrays = [t.numpy() for t in _one_user(spec, 9, 30, user, empty_history=False)]
    first = scorer.score(*arrays, user_id="u1")
    assert scorer.cache.stats.misses == 1 and "u1" in scorer.cache
    again = scorer.score(*arrays, user_id="u1")
    assert scorer.cache.stats.hits == 1 and scorer.cache.stats.misses == 1  # the state came from the cache
    np.testing.assert_array_equal(again, first)
    np.testing.assert_allclose(first, _fused(model, *(torch.from_numpy(a) for a in arrays)), rtol=0, atol=1e-5)


def test_a_changed_history_is_a_miss_and_invalidate_drops_a_callers_version(exported):
    model, spec, user, directory = exported
    scorer = UserSideScorer(directory, spec)
    old = [t.numpy() for t in _one_user(spec, 6, 31, user, empty_history=False)]
    new = [a.copy() for a in old]
    new[2][:, 0] = new[2][:, 0] % (spec.item_size - 1) + 1  # one more event changed the history
    expected_old, expected_new = (_fused(model, *(torch.from_numpy(a) for a in x)) for x in (old, new))
    assert np.abs(expected_old - expected_new).max() > 1e-4

    scorer.score(*old, user_id=7)  # default version: the digest of the history and the user fields
    np.testing.assert_allclose(scorer.score(*new, user_id=7), expected_new, rtol=0, atol=1e-5)
    assert scorer.cache.stats.misses == 2

    # A caller's own version ("v1") is trusted until the user is invalidated (a POST /v1/events push)
    np.testing.assert_allclose(scorer.score(*old, user_id=8, version="v1"), expected_old, rtol=0, atol=1e-5)
    stale = scorer.score(*new, user_id=8, version="v1")
    np.testing.assert_allclose(stale, expected_old, rtol=0, atol=1e-5)  # the cached state was used
    assert scorer.cache.invalidate(8) and not scorer.cache.invalidate(8)
    np.testing.assert_allclose(scorer.score(*new, user_id=8, version="v1"), expected_new, rtol=0, atol=1e-5)
    assert scorer.cache.stats.invalidations == 1


def test_rows_of_two_users_are_refused(exported):
    _, spec, user, directory = exported
    scorer = UserSideScorer(directory, spec)
    categorical, multi_hot, history, numeric = (t.numpy().copy() for t in _one_user(spec, 4, 32, user, empty_history=False))
    scorer.score(categorical, multi_hot, history, numeric)
    mixed = history.copy()
    mixed[2] = np.roll(mixed[2], 1)
    with pytest.raises(ValueError, match="one user"):
        scorer.score(categorical, multi_hot, mixed, numeric)
    if user.categorical:
        other = categorical.copy()
        other[3, user.categorical[0]] = other[3, user.categorical[0]] % 2 + 1
        with pytest.raises(ValueError, match="user fields"):
            scorer.score(other, multi_hot, history, numeric)
    assert scorer.score(categorical[:0], multi_hot[:0], history[:1], numeric[:0]).shape == (0,)


def test_the_cache_is_an_lru_of_one_state_per_user():
    cache = UserStateCache(max_entries=2)
    state = (np.zeros(2),)
    cache.put("a", 1, state)
    cache.put("b", 1, state)
    assert cache.get("a", 1) is state  # "a" is now the most recent
    cache.put("c", 1, state)  # evicts "b"
    assert "b" not in cache and cache.get("a", 1) is state and cache.get("c", 1) is state
    cache.put("a", 2, state)  # a newer version replaces the user's entry
    assert cache.get("a", 1) is None and cache.get("a", 2) is state and len(cache) == 2
    with pytest.raises(ValueError, match="max_entries"):
        UserStateCache(max_entries=0)


def test_user_version_changes_with_any_input_the_state_reads():
    history, categorical, numeric = np.array([4, 5, 0]), np.array([1, 2]), np.array([0.5], np.float32)
    base = user_version(history, categorical, numeric)
    assert base == user_version(history.copy(), categorical.copy(), numeric.copy())
    assert len({base, user_version(np.array([5, 4, 0]), categorical, numeric), user_version(history, np.array([1, 3]), numeric),
                user_version(history, categorical, np.array([0.25], np.float32))}) == 4


def test_models_without_a_user_side_export_nothing(tmp_path):
    assert export_user_side(_model(ModelName.deepfm, 1), SPEC, tmp_path) == []
    assert list(tmp_path.iterdir()) == [] and not UserSideScorer.available(tmp_path)
    with pytest.raises(FileNotFoundError, match="export_user_side"):
        UserSideScorer(tmp_path, SPEC)


def test_user_fields_default_to_the_packages_declared_user_table(tmp_path):
    from mlsys.data.preprocessor import CtrPreprocessor
    from tests.schemas import movielens_like

    schema = movielens_like(history_length=SPEC.history_length, multi_hot_length=SPEC.multi_hot_length)
    frame = pd.DataFrame({"user_id": [1, 2], "item_id": [3, 4], "gender": ["F", "M"], "occupation": ["a", "b"],
                          "age": [20.0, 30.0], "year": [1990.0, 2000.0], "genres": [["x"], ["y"]], "history": [[3], []]})
    preprocessor = CtrPreprocessor(schema).fit_frame(frame)
    (tmp_path / "preprocessor.json").write_text(preprocessor.to_json())
    assert user_fields_of(tmp_path) == ("user_id", "gender", "occupation", "age")
    spec = preprocessor.input_spec()
    model = _model(ModelName.bst_cached, 2, spec)
    export_user_side(model, spec, tmp_path)  # no user_fields: the schema's
    split = json.loads((tmp_path / SPLIT).read_text())
    assert split["user_categorical"] == ["user_id", "gender", "occupation"] and split["user_numeric"] == ["age"]
    inputs = preprocessor.transform_batch(frame.assign(user_id=1, gender="F", occupation="a", age=20.0, history=[[3, 4]] * 2))
    arrays = [inputs[k] for k in ("categorical", "multi_hot", "history", "numeric")]
    np.testing.assert_allclose(UserSideScorer(tmp_path, spec).score(*arrays),
                               _fused(model, *(torch.from_numpy(a) for a in arrays)), rtol=0, atol=1e-5)
