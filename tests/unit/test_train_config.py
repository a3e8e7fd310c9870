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


# -- where the workers run -------------------------------------------------------------------


def test_placement_and_worker_resources_reach_ray_trains_scaling_config():
    cfg = TrainConfig(cpus_per_worker=2, use_gpu=True, placement_strategy="SPREAD", resources_per_worker={"worker": 1, "memory": 4e9})
    assert cfg.worker_resources() == {"worker": 1, "memory": 4e9, "CPU": 2, "GPU": 1}
    assert TrainConfig().worker_resources() == {"CPU": 1.0} and TrainConfig().placement_strategy == "PACK"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"placement_strategy": "pack"}, "train.placement_strategy='pack' must be one of PACK, SPREAD, STRICT_PACK, STRICT_SPREAD"),
        ({"resources_per_worker": {"CPU": 2}}, "train.resources_per_worker.CPU=2 must be set by train.cpus_per_worker instead"),
        ({"resources_per_worker": {"GPU": 1}}, "train.resources_per_worker.GPU=1 must be set by train.use_gpu instead"),
        ({"resources_per_worker": {"worker": -1}}, "train.resources_per_worker.worker=-1 must be >= 0"),
    ],
)
def test_bad_placement_is_named_by_its_key(kwargs, message):
    with pytest.raises(ConfigError, match="^Bad configuration: " + message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**kwargs)


def test_placement_keys_do_not_enter_the_train_steps_fingerprint():
    from mlsys.pipeline.ctr import CTR
    from mlsys.pipeline.fingerprint import basis, config_values

    train = next(s for s in CTR.steps if s.name == "train")
    moved = TrainConfig(placement_strategy="STRICT_SPREAD", resources_per_worker={"worker": 1})
    assert config_values({"train": moved}) == config_values({"train": TrainConfig()})
    assert "train.placement_strategy" not in config_values({"train": moved})
    assert basis("train", train.fn, {"train": moved}, {}).digest() == basis("train", train.fn, {"train": TrainConfig()}, {}).digest()
    assert basis("train", train.fn, {"train": TrainConfig(max_epochs=3)}, {}).digest() != basis("train", train.fn, {"train": TrainConfig()}, {}).digest()


def test_placement_travels_to_the_workers():
    import dataclasses
    import json

    cfg = TrainConfig(placement_strategy="SPREAD", resources_per_worker={"worker": 1.0})
    assert TrainConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg


def test_every_attempt_records_where_its_workers_ran(tmp_path):
    from mlsys.train import checkpoint
    from mlsys.train.loop import format_workers, record_attempt

    first = [{"rank": 0, "node_ip": "127.0.0.2", "node_id": "3f2a1b77e0c4", "hostname": "a", "pid": 11},
             {"rank": 1, "node_ip": "127.0.0.3", "node_id": "9c0d5e", "hostname": "b", "pid": 12}]
    assert format_workers(first) == "[train] workers: rank 0 on 127.0.0.2 (node 3f2a1b..), rank 1 on 127.0.0.3 (node 9c0d5e..)"
    state = record_attempt({"epoch": 0, "history": [], "resumed_after": [], "workers": []}, first)
    checkpoint.save_state(tmp_path, {**state, "epoch": 1})
    restarted = [{**w, "pid": w["pid"] + 100} for w in first]
    again = record_attempt(checkpoint.load_state(tmp_path), restarted)  # a restart appends, after what the checkpoint kept
    assert again["workers"] == [first, restarted] and again["epoch"] == 1
    assert record_attempt({"epoch": 2, "history": []}, first)["workers"] == [first]  # a checkpoint written before this record


def test_one_ddp_worker_starts_without_torch_in_the_trial_or_the_controller():
    """A tuning trial's process imports ``mlsys.tune.tuner`` and calls ``trainer.fit`` with one DDP
    worker: without torch there (and in Ray Train's controller, which unpickles the trainer's backend)
    each trial started ~1.3 s sooner (docs/benchmarks.md, "Tuning ... b"). More workers, or DeepSpeed,
    need torch's process group: ``TorchTrainer``."""
    import subprocess
    import sys

    code = """
import sys
from mlsys.train import trainer
from mlsys.train.config import StrategyConfig, TrainConfig
import mlsys.tune.tuner
one = trainer._trainer_class(TrainConfig(num_workers=1))
assert "torch" not in sys.modules, "importing the driver's side imported torch"
print(one.__name__, trainer._trainer_class(TrainConfig(num_workers=2)).__name__,
      trainer._trainer_class(TrainConfig(num_workers=1, strategy=StrategyConfig(kind="deepspeed", zero_stage=1))).__name__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["DataParallelTrainer", "TorchTrainer", "TorchTrainer"]
