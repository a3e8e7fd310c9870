"""Training strategies are Hydra choices typed by StrategyConfig; bad combinations fail in one line."""

from __future__ import annotations

import pytest

from mlsys.api.config import compose_config
from mlsys.errors import ConfigError
from mlsys.train.config import StrategyConfig, StrategyKind, TrainConfig, deepspeed_config


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    from pathlib import Path

    for var in ("RAY_ADDRESS", "MLSYS_HOME", "MLFLOW_TRACKING_URI", "MLSYS_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(Path(__file__).resolve().parents[2])


@pytest.mark.parametrize(
    "choice, kind, stage, offload, label",
    [
        ("ddp", StrategyKind.ddp, 0, False, "ddp"),
        ("deepspeed_zero1", StrategyKind.deepspeed, 1, False, "zero1"),
        ("deepspeed_zero2", StrategyKind.deepspeed, 2, False, "zero2"),
        ("deepspeed_zero3", StrategyKind.deepspeed, 3, False, "zero3"),
        ("deepspeed_zero3_offload", StrategyKind.deepspeed, 3, True, "zero3+offload"),
    ],
)
def test_every_strategy_composes(choice, kind, stage, offload, label):
    cfg = compose_config([f"train/strategy={choice}"]).train
    assert isinstance(cfg.strategy, StrategyConfig)
    assert (cfg.strategy.kind, cfg.strategy.zero_stage, cfg.strategy.offload_optimizer) == (kind, stage, offload)
    assert cfg.strategy.label == label


def test_ddp_is_the_default_and_scaling_is_one_override():
    cfg = compose_config(["train.num_workers=8", "train.use_gpu=true"]).train
    assert cfg.strategy.kind is StrategyKind.ddp and cfg.num_workers == 8 and cfg.use_gpu


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train/strategy=deepspeed_zero4"], "deepspeed_zero4"),
        (["train.strategy.zero_stage=2"], "train.strategy.zero_stage=2 must be 0 with kind=ddp"),
        (["train/strategy=deepspeed_zero2", "train.strategy.offload_params=true"], "train.strategy.offload_params=True must be false unless zero_stage=3"),
        (["train/strategy=deepspeed_zero2", "train.strategy.zero_stage=5"], "train.strategy.zero_stage=5 must be 0, 1, 2 or 3"),
        (["train.strategy.kind=zero"], "kind"),
        (["train.max_failures=-2"], "train.max_failures=-2 must be >= 0, or -1 for unlimited"),
        (["train.checkpoint_every=0"], "train.checkpoint_every=0 must be >= 1"),
    ],
)
def test_bad_strategy_settings_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        compose_config(overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_deepspeed_config_follows_the_typed_config():
    cfg = TrainConfig(num_workers=4, batch_size=128, learning_rate=1e-3, weight_decay=1e-5,
                      strategy=StrategyConfig(kind="deepspeed", zero_stage=3, offload_optimizer=True, offload_params=True))
    ds = deepspeed_config(cfg)
    assert ds["train_batch_size"] == 512 and ds["train_micro_batch_size_per_gpu"] == 128
    assert ds["gradient_accumulation_steps"] == 1
    assert ds["optimizer"] == {"type": "Adam", "params": {"lr": 1e-3, "weight_decay": 1e-5, "adam_w_mode": False}}
    plain = TrainConfig(strategy=StrategyConfig(kind="deepspeed", zero_stage=1))
    assert deepspeed_config(plain)["optimizer"]["params"]["torch_adam"] is True  # no op to compile
    assert ds["zero_optimization"] == {
        "stage": 3,
        "reduce_bucket_size": 25 * 2**20 // 4,
        "allgather_bucket_size": 25 * 2**20 // 4,
        "offload_optimizer": {"device": "cpu", "pin_memory": False},
        "offload_param": {"device": "cpu", "pin_memory": False},
    }
    gpu = TrainConfig(use_gpu=True, strategy=StrategyConfig(kind="deepspeed", zero_stage=2, offload_optimizer=True))
    assert deepspeed_config(gpu)["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": True}


def test_train_config_round_trips_through_plain_data():
    import dataclasses
    import json

    cfg = TrainConfig(strategy=StrategyConfig(kind="deepspeed", zero_stage=1))
    assert TrainConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
