"""Warm start without Ray: vocabulary continuation, table growth, compatibility and resolution errors."""

import numpy as np
import pandas as pd
import pytest
import torch

from mlsys.data.preprocessor import CtrPreprocessor
from mlsys.errors import ConfigError
from mlsys.models.config import ModelConfig
from mlsys.train.warm_start import WarmStart, check_compatible, grow_state_dict, resolve


def frame(users, items, ages) -> pd.DataFrame:
    n = len(users)
    return pd.DataFrame({
        "user_id": users, "item_id": items, "gender": ["F"] * n, "occupation": ["x"] * n,
        "age": np.asarray(ages, dtype=np.float32), "year": np.full(n, 2000.0, dtype=np.float32),
        "genres": [["g1"]] * n, "history": [[]] * n, "label": np.zeros(n, dtype=np.float32),
    })


def test_continued_vocabulary_keeps_old_indices_and_appends_new_ids():
    old = CtrPreprocessor(min_count=1).fit_frame(frame([1, 1, 2], [10, 11, 11], [20, 30, 40]))
    new_span = frame([2, 3, 3, 4], [11, 12, 12, 13], [60, 70, 80, 90])  # user 1 and item 10 are gone
    new = CtrPreprocessor(min_count=1).continuing(old).fit_frame(new_span)

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
    old = CtrPreprocessor(min_count=1).fit_frame(frame([1], [10], [20]))
    new = CtrPreprocessor(min_count=2).continuing(old).fit_frame(frame([2, 2, 3], [11, 11, 12], [20, 20, 20]))
    assert new.vocabularies_["user_id"] == [1, 2]  # 1 kept though unseen, 3 seen once: OOV
    assert new.vocabularies_["item_id"] == [10, 11]


def test_continued_vocabulary_survives_json_round_trip():
    old = CtrPreprocessor.from_json(CtrPreprocessor(min_count=1).fit_frame(frame([5, 6], [10, 11], [1, 2])).to_json())
    new = CtrPreprocessor(min_count=1).continuing(old).fit_frame(frame([7], [12], [3]))
    assert new.vocabularies_["user_id"] == [5, 6, 7]


def test_grow_state_dict_copies_old_rows_and_keeps_fresh_new_rows():
    old = {"table": torch.arange(6.0).reshape(3, 2), "dense": torch.ones(4)}
    fresh = {"table": torch.full((5, 2), -1.0), "dense": torch.zeros(4)}
    grown = grow_state_dict(old, fresh, "ctr/1")
    torch.testing.assert_close(grown["table"][:3], old["table"])
    torch.testing.assert_close(grown["table"][3:], fresh["table"][3:])
    torch.testing.assert_close(grown["dense"], old["dense"])


@pytest.mark.parametrize(
    "old, fresh, match",
    [
        ({"t": torch.zeros(3, 4)}, {"t": torch.zeros(3, 8)}, r"parameter t has shape \(3, 4\).*needs \(3, 8\)"),
        ({"t": torch.zeros(5, 4)}, {"t": torch.zeros(3, 4)}, r"parameter t has shape \(5, 4\)"),
        ({"t": torch.zeros(3)}, {"t": torch.zeros(3), "u": torch.zeros(1)}, r"missing \['u'\]"),
    ],
)
def test_grow_state_dict_refuses_other_architectures(old, fresh, match):
    with pytest.raises(ConfigError, match=r"train\.warm_start='ctr/1'.*" + match):
        grow_state_dict(old, fresh, "ctr/1")


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
