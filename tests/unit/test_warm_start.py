"""Warm start without Ray: vocabulary continuation, table growth, compatibility and resolution errors."""

import numpy as np
import pandas as pd
import pytest
import torch

from mlsys.data.preprocessor import CtrPreprocessor
from mlsys.errors import ConfigError
from mlsys.models import InputSpec, ModelConfig
from mlsys.models.zoo import build_model
from mlsys.train.warm_start import SPARSE_TABLE, WarmStart, check_compatible, grow_state_dict, resolve
from tests.schemas import movielens_like


def frame(users, items, ages) -> pd.DataFrame:
    n = len(users)
    return pd.DataFrame({
        "user_id": users, "item_id": items, "gender": ["F"] * n, "occupation": ["x"] * n,
        "age": np.asarray(ages, dtype=np.float32), "year": np.full(n, 2000.0, dtype=np.float32),
        "genres": [["g1"]] * n, "history": [[]] * n, "label": np.zeros(n, dtype=np.float32),
    })


def test_continued_vocabulary_keeps_old_indices_and_appends_new_ids():
    old = CtrPreprocessor(movielens_like(), min_count=1).fit_frame(frame([1, 1, 2], [10, 11, 11], [20, 30, 40]))
    new_span = frame([2, 3, 3, 4], [11, 12, 12, 13], [60, 70, 80, 90])  # user 1 and item 10 are gone
    new = CtrPreprocessor(movielens_like(), min_count=1).continuing(old).fit_frame(new_span)

    for column in ("user_id", "item_id"):
        before = old.vocabularies_[column]
        assert new.vocabularies_[column][: len(before)] == before
    assert new.vocabularies_["user_id"][2:] == [3, 4]  # 3 is more frequent than 4
    assert new.vocabularies_["item_id"][2:] == [12, 13]
    assert new.scaling_ == old.scaling_  # the old model's numeric inputs mean the same
    probe = frame([1, 2], [10, 11], [30, 30])
    np.testing.assert_array_equal(new.transform_batch(probe)["categorical"], old.transform_batch(probe)["categorical"])
    sizes_old, sizes_new = old.input_spec().categorical_sizes, new.input_spec().categorical_sizes
    assert sizes_new[0] == sizes_old[0] + 2 and sizes_new[1] == sizes_old[1] + 2


def test_continued_vocabulary_applies_min_count_to_new_ids_only():
    old = CtrPreprocessor(movielens_like(), min_count=1).fit_frame(frame([1], [10], [20]))
    new = CtrPreprocessor(movielens_like(), min_count=2).continuing(old).fit_frame(frame([2, 2, 3], [11, 11, 12], [20, 20, 20]))
    assert new.vocabularies_["user_id"] == [1, 2]  # 1 kept though unseen, 3 seen once: OOV
    assert new.vocabularies_["item_id"] == [10, 11]


def test_continued_vocabulary_survives_json_round_trip():
    old = CtrPreprocessor.from_json(CtrPreprocessor(movielens_like(), min_count=1).fit_frame(frame([5, 6], [10, 11], [1, 2])).to_json())
    new = CtrPreprocessor(movielens_like(), min_count=1).continuing(old).fit_frame(frame([7], [12], [3]))
    assert new.vocabularies_["user_id"] == [5, 6, 7]


def _spec(users: int, items: int, genres: int = 3):
    return InputSpec(("user_id", "item_id"), (users, items), "item_id", ("genres",), (genres,), 2, 3, ("age",))


def test_grow_state_dict_keeps_every_blocks_old_rows_and_fresh_new_rows():
    old_spec, spec = _spec(3, 4), _spec(5, 6)  # 2 new users, 2 new items; genres unchanged
    old = {SPARSE_TABLE: torch.arange(20.0).reshape(10, 2), "dense": torch.ones(4)}
    fresh = {SPARSE_TABLE: torch.full((14, 2), -1.0), "dense": torch.zeros(4)}
    grown = grow_state_dict(old, fresh, "ctr/1", old_spec, spec)[SPARSE_TABLE]
    assert grown.shape == (14, 2)
    torch.testing.assert_close(grown[0:3], old[SPARSE_TABLE][0:3])  # users 0-2
    torch.testing.assert_close(grown[3:5], torch.full((2, 2), -1.0))  # users 3-4: fresh
    torch.testing.assert_close(grown[5:9], old[SPARSE_TABLE][3:7])  # items 0-3, moved down with their block
    torch.testing.assert_close(grown[9:11], torch.full((2, 2), -1.0))  # items 4-5: fresh
    torch.testing.assert_close(grown[11:14], old[SPARSE_TABLE][7:10])  # genres
    torch.testing.assert_close(grow_state_dict(old, fresh, "ctr/1", old_spec, spec)["dense"], old["dense"])


def test_grown_model_scores_old_ids_exactly_as_the_source_model():
    old_spec, spec = _spec(3, 4), _spec(5, 6)
    torch.manual_seed(0)
    source = build_model(old_spec, ModelConfig(embed_dim=4, dropout=0.0)).eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    target = build_model(spec, ModelConfig(embed_dim=4, dropout=0.0)).eval()
    target.load_state_dict(grow_state_dict(source.state_dict(), target.state_dict(), "ctr/1", old_spec, spec))
    inputs = (torch.tensor([[2, 3], [1, 1]]), torch.tensor([[1, 2], [0, 0]]), torch.tensor([[3, 1, 0], [0, 0, 0]]), torch.ones(2, 1))
    with torch.no_grad():
        torch.testing.assert_close(target(*inputs), source(*inputs))


@pytest.mark.parametrize(
    "old, fresh, old_spec, match",
    [
        ({"t": torch.zeros(3, 4)}, {"t": torch.zeros(3, 8)}, _spec(3, 4), r"parameter t has shape \(3, 4\).*needs \(3, 8\)"),
        ({SPARSE_TABLE: torch.zeros(10, 4)}, {SPARSE_TABLE: torch.zeros(10, 8)}, _spec(3, 4), r"parameter sparse.table.weight has shape \(10, 4\)"),
        ({SPARSE_TABLE: torch.zeros(12, 4)}, {SPARSE_TABLE: torch.zeros(10, 4)}, _spec(5, 4), r"user_id has 5 embedding rows, the continued vocabulary only 3"),
        ({"t": torch.zeros(3)}, {"t": torch.zeros(3), "u": torch.zeros(1)}, _spec(3, 4), r"missing \['u'\]"),
    ],
)
def test_grow_state_dict_refuses_other_architectures(old, fresh, old_spec, match):
    with pytest.raises(ConfigError, match=r"train\.warm_start='ctr/1'.*" + match):
        grow_state_dict(old, fresh, "ctr/1", old_spec, _spec(3, 4))


def test_compatibility_names_the_differing_fields_and_the_fix():
    with pytest.raises(ConfigError, match=r"embed_dim=8, but the config has embed_dim=16.*set model\.embed_dim=8"):
        check_compatible("models:/ctr@champion", ModelConfig(embed_dim=8), ModelConfig(embed_dim=16))
    with pytest.raises(ConfigError, match=r"mlp_dims=\[64\].*model\.mlp_dims=\[64\]"):
        check_compatible("ctr/1", ModelConfig(mlp_dims=[64]), ModelConfig())
    check_compatible("ctr/1", ModelConfig(dropout=0.0), ModelConfig(dropout=0.3))  # no shape changes


def test_resolve_without_a_uri_is_a_cold_start(tmp_path):
    warm = resolve(None, f"sqlite:///{tmp_path}/unused.db", ModelConfig())
    assert warm == WarmStart() and not warm.active and warm.lineage() == {}


def test_resolve_an_unknown_model_is_a_config_error(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"  # one store: creating one takes seconds
    for uri in ("models:/ctr@champion", "ctr/7", "not a model uri", str(tmp_path / "no-package")):
        with pytest.raises(ConfigError, match=r"train\.warm_start=.* does not resolve"):
            resolve(uri, store, ModelConfig())
