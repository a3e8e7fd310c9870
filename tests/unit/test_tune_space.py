"""Search spaces from config: parsing, errors that name the key, and the configs they lead to (no Ray)."""

from __future__ import annotations

import json

import pytest

from mlsys.api.config import compose_config
from mlsys.errors import ConfigError
from mlsys.models.config import ModelConfig, ModelName
from mlsys.train.config import TrainConfig
from mlsys.tune.config import TuneConfig
from mlsys.tune.space import Kind, SearchSpace, apply, trial_configs, tuned_configs, tuned_model


def test_both_forms_parse_and_nested_keys_flatten():
    space = SearchSpace.parse({
        "model": {"embed_dim": "choice [8, 16, 32]", "dropout": {"uniform": [0.0, 0.3]}},
        "train.learning_rate": "loguniform [1e-4, 1e-1]",  # JSON numbers: YAML 1.1 would read 1e-4 as a string
        "train.batch_size": "int [256, 1024]",
    })
    assert space.keys == ("model.embed_dim", "model.dropout", "train.learning_rate", "train.batch_size")
    kinds = {d.key: (d.kind, d.values) for d in space.distributions}
    assert kinds["model.embed_dim"] == (Kind.choice, (8, 16, 32))
    assert kinds["model.dropout"] == (Kind.uniform, (0.0, 0.3))
    assert kinds["train.learning_rate"] == (Kind.loguniform, (1e-4, 1e-1))
    assert kinds["train.batch_size"] == (Kind.int, (256, 1024))


def test_list_choices_travel_as_json_and_come_back_as_lists():
    space = SearchSpace.parse({"model.mlp_dims": "choice [[64, 32], [128]]", "model.name": "choice [din, deepfm]"})
    mlp = space.distributions[0]
    assert mlp.options() == ["[64, 32]", "[128]"]  # Optuna keeps scalars only
    decoded = space.decode({"model.mlp_dims": "[128]", "model.name": "din"})
    assert decoded == {"model.mlp_dims": [128], "model.name": "din"}
    model, _ = apply(decoded, ModelConfig(), TrainConfig())
    assert model.mlp_dims == [128] and ModelName(model.name) is ModelName.din


@pytest.mark.parametrize("space, needles", [
    ({"model.embed_dimm": "choice [8]"}, ["'model.embed_dimm'", "did you mean 'model.embed_dim'"]),
    ({"train.max_epochs": "int [1, 3]"}, ["'train.max_epochs' cannot be tuned", "tune.max_epochs"]),
    ({"train.num_workers": "choice [1, 2]"}, ["'train.num_workers' cannot be tuned", "tune.workers_per_trial"]),
    ({"embed_dim": "choice [8]"}, ["'embed_dim' must be model.<field> or train.<field>"]),
    ({"data.path": "choice [a]"}, ["'data.path' must be model.<field> or train.<field>"]),
    ({"model.embed_dim": "gaussian [8, 2]"}, ["model.embed_dim", "unknown distribution 'gaussian'", "choice, uniform, loguniform, int"]),
    ({"model.embed_dim": 8}, ["model.embed_dim=8 must be a distribution"]),
    ({"model.embed_dim": "choice []"}, ["model.embed_dim", "non-empty list"]),
    ({"model.embed_dim": "choice [8, 16"}, ["model.embed_dim", "must be a list"]),
    ({"model.embed_dim": "uniform [8, 32]"}, ["model.embed_dim", "uniform draws floats but model.embed_dim is int", "int [low, high]"]),
    ({"model.embed_dim": "choice [8, 16.5]"}, ["model.embed_dim", "16.5 must be a whole number"]),
    ({"model.embed_dim": "choice [0, 8]"}, ["model.embed_dim", "the value 0 is invalid", "model.embed_dim=0 must be >= 1"]),
    ({"model.dropout": "uniform [0.1, 1.5]"}, ["model.dropout", "the value 1.5 is invalid", "in [0, 1)"]),
    ({"train.learning_rate": "loguniform [0, 0.1]"}, ["train.learning_rate", "loguniform needs low > 0"]),
    ({"train.learning_rate": "uniform [0.1, 0.01]"}, ["train.learning_rate", "low < high"]),
    ({"train.batch_size": "int [64.5, 128]"}, ["train.batch_size", "whole-number bounds"]),
    ({"model.mlp_dims": "choice [64, 32]"}, ["model.mlp_dims", "option 64 must be a list"]),
])
def test_bad_spaces_fail_with_the_key_named(space, needles):
    with pytest.raises(ConfigError) as e:
        SearchSpace.parse(space)
    for needle in needles:
        assert needle in str(e.value), str(e.value)


def test_values_are_checked_against_the_configs_in_force():
    bst = ModelConfig(name=ModelName.bst, embed_dim=16, attention_heads=2)
    SearchSpace.parse({"model.attention_heads": "choice [2, 4]"}, bst, TrainConfig())
    with pytest.raises(ConfigError, match=r"model.attention_heads.*the value 3 is invalid.*dividing model.embed_dim=16"):
        SearchSpace.parse({"model.attention_heads": "choice [2, 3]"}, bst, TrainConfig())


def test_apply_returns_new_typed_configs_and_leaves_the_inputs_alone():
    model, train = ModelConfig(), TrainConfig()
    tuned_model_, tuned_train = apply({"model.embed_dim": 32, "train.learning_rate": 0.01}, model, train)
    assert (tuned_model_.embed_dim, tuned_train.learning_rate) == (32, 0.01)
    assert (model.embed_dim, train.learning_rate) == (16, 2e-3)
    assert tuned_train.max_epochs == train.max_epochs and tuned_train.num_workers == train.num_workers
    with pytest.raises(ConfigError, match="model.dropout=1.2 must be in"):
        apply({"model.dropout": 1.2}, model, train)
    with pytest.raises(ConfigError, match="'train.seed' cannot be tuned"):
        apply({"train.seed": 3}, model, train)


def test_a_trial_runs_tune_epochs_and_resources():
    tune = TuneConfig(enabled=True, max_epochs=3, workers_per_trial=1, cpus_per_worker=0.5,
                      search_space={"train.learning_rate": "loguniform [1e-3, 1e-1]"})
    train = TrainConfig(max_epochs=7, num_workers=2, warm_start="ctr@champion", checkpoint_every=5)
    model_cfg, trial_train = trial_configs({"train.learning_rate": 0.02}, ModelConfig(), train, tune)
    assert (trial_train.learning_rate, trial_train.max_epochs, trial_train.num_workers, trial_train.cpus_per_worker) == (0.02, 3, 1, 0.5)
    assert trial_train.checkpoint_every == 1 and trial_train.warm_start is None
    assert model_cfg == ModelConfig()


def test_tuned_configs_read_the_tune_steps_best(tmp_path):
    model, train = ModelConfig(), TrainConfig(max_epochs=5)
    assert tuned_configs("", model, train) == (model, train)  # tune=none
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"params": {"model.embed_dim": 8, "model.mlp_dims": [64], "train.weight_decay": 1e-5}, "value": 0.8}))
    tuned_m, tuned_t = tuned_configs(str(best), model, train)
    assert (tuned_m.embed_dim, tuned_m.mlp_dims, tuned_t.weight_decay, tuned_t.max_epochs) == (8, [64], 1e-5, 5)
    assert tuned_model(str(best), model) == tuned_m


def test_tune_config_checks_its_fields():
    with pytest.raises(ConfigError, match="tune.grace_period=5 must be between 1 and tune.max_epochs=2"):
        TuneConfig(max_epochs=2, grace_period=5)
    with pytest.raises(ConfigError, match="tune.metric='accuracy' must be one of auc, user_auc, logloss, calibration"):
        TuneConfig(metric="accuracy")
    with pytest.raises(ConfigError, match="tune.search_space=.* when tuning is on"):
        TuneConfig(enabled=True)
    with pytest.raises(ConfigError, match="tune.reduction_factor=1 must be >= 2"):
        TuneConfig(reduction_factor=1)


def test_the_config_group_composes_and_overrides_reach_the_space(monkeypatch):
    monkeypatch.delenv("MLSYS_HOME", raising=False)
    assert compose_config([]).tune.enabled is False
    cfg = compose_config(["tune=optuna_asha", "tune/search_space=small", 'tune.search_space.train.learning_rate="loguniform [1e-3, 1e-2]"',
                          '+tune.search_space.model.mlp_dims="choice [[64], [128, 64]]"'])
    assert cfg.tune.enabled and cfg.tune.num_samples >= 1
    space = SearchSpace.parse(cfg.tune.search_space)
    assert space.keys == ("model.embed_dim", "model.mlp_dims", "train.learning_rate")
    assert space.distributions[-1].values == (1e-3, 1e-2)
    with pytest.raises(ConfigError, match="'model.embed_dimm' is not a field of ModelConfig"):
        compose_config(["tune=optuna_asha", '+tune.search_space.model.embed_dimm="choice [8]"'])


@pytest.mark.parametrize("searcher", ["random", "optuna"])
def test_both_searchers_keep_to_max_concurrent_trials(searcher):
    """Tune applies TuneConfig.max_concurrent_trials only to a Searcher; random search is a search generator,
    so it carries the limit itself (without it, a benchmark ran all 8 trials at once)."""
    from ray.tune.search import ConcurrencyLimiter

    from mlsys.tune.tuner import _searcher

    made = _searcher(TuneConfig(searcher=searcher, max_concurrent_trials=3), "study", None)
    if searcher == "random":
        assert made.max_concurrent == 3
    else:  # Tune wraps a Searcher in a ConcurrencyLimiter of max_concurrent_trials
        assert not isinstance(made, ConcurrencyLimiter) and hasattr(made, "suggest")
