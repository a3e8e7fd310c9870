"""DDP and every DeepSpeed ZeRO strategy train on 2 CPU workers (gloo) to a comparable AUC,
and each restores its own checkpoint: a run stopped after epoch 1 and started again under
the same name resumes at epoch 2 (Ray Train restores it; DeepSpeed reads every rank's shard)."""

from __future__ import annotations

import dataclasses

import pytest

from mlsys.models import ModelConfig
from mlsys.train.config import StrategyConfig, TrainConfig

STRATEGIES = {
    "ddp": StrategyConfig(),
    "zero1": StrategyConfig(kind="deepspeed", zero_stage=1),
    "zero2": StrategyConfig(kind="deepspeed", zero_stage=2),
    "zero3": StrategyConfig(kind="deepspeed", zero_stage=3),
    "zero3_offload": StrategyConfig(kind="deepspeed", zero_stage=3, offload_optimizer=True, offload_params=True),
}
AUC_TOLERANCE = 0.01  # same data, seed and update rule; only summation order differs


@pytest.fixture(scope="module")
def data(ray_local):
    from mlsys.train.synthetic import synthetic_dataset, synthetic_spec

    spec = synthetic_spec(users=300, items=500)
    train = synthetic_dataset(spec, rows=12_000, seed=0).materialize()
    evaluation = synthetic_dataset(spec, rows=4_000, seed=0, start=12_000).materialize()
    return spec, train, evaluation


def _train(data, tmp_path, strategy: StrategyConfig, max_epochs: int, run_name: str = "run"):
    from mlsys.train import trainer

    spec, train, evaluation = data
    cfg = TrainConfig(num_workers=2, cpus_per_worker=0.5, max_epochs=max_epochs, batch_size=256,
                      learning_rate=5e-3, strategy=strategy)
    return trainer.fit(train, evaluation, spec, ModelConfig(embed_dim=8, mlp_dims=[32]), cfg, str(tmp_path), run_name)


def _stopped_and_resumed(data, tmp_path, strategy: StrategyConfig):
    first = _train(data, tmp_path, strategy, max_epochs=1)
    resumed = _train(data, tmp_path, strategy, max_epochs=2)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[0] == first.history[0], "epoch 1 came from the checkpoint, not a new run"
    return resumed


@pytest.fixture(scope="module")
def ddp_auc(data, tmp_path_factory):
    resumed = _stopped_and_resumed(data, tmp_path_factory.mktemp("ddp"), STRATEGIES["ddp"])
    return resumed.history[-1]["eval_auc"]


def test_ddp_learns_the_planted_signal(ddp_auc):
    assert ddp_auc > 0.70


@pytest.mark.parametrize(
    "name", ["zero2", "zero3", pytest.param("zero1", marks=pytest.mark.slow), pytest.param("zero3_offload", marks=pytest.mark.slow)]
)
def test_deepspeed_resumes_and_matches_ddp(name, data, tmp_path, ddp_auc):
    from safetensors.torch import load_file

    from mlsys.models.zoo import build_model

    resumed = _stopped_and_resumed(data, tmp_path, STRATEGIES[name])
    assert resumed.history[-1]["eval_auc"] == pytest.approx(ddp_auc, abs=AUC_TOLERANCE)
    # Every rank's shard is in the one merged checkpoint folder, beside the full weights.
    shards = sorted(p.name for p in (resumed.checkpoint_dir / "deepspeed" / "state").glob("*optim_states.pt"))
    assert len(shards) == 2, shards
    weights = load_file(resumed.checkpoint_dir / "model.safetensors")
    model = build_model(data[0], ModelConfig(embed_dim=8, mlp_dims=[32]))
    model.load_state_dict(weights)  # full, unsharded shapes (ZeRO-3 gathered them)
