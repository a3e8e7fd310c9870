"""Every strategy takes a full set of weights (warm start) and gives them back, and trains on from them.

One process, a gloo group of one (no Ray): ``load_full_state_dict`` then ``full_state_dict``
must round-trip, and the next optimizer step must start from the loaded weights, which under
ZeRO needs the partitions rewritten and the optimizer's fp32 master copy refreshed (without
the refresh ZeRO-3's first step put the initial weights back: a warm start lost).
"""

from __future__ import annotations

import pytest
import torch

from mlsys.models import InputSpec, ModelConfig
from mlsys.models.zoo import build_model
from mlsys.train.config import TrainConfig
from tests.integration.test_training_strategies import STRATEGIES

SPEC = InputSpec(("user_id", "item_id"), (20, 30), "item_id", multi_hot_fields=("tags",), multi_hot_sizes=(5,), multi_hot_length=2,
                 history_length=3, numeric_fields=("n1",))
MODEL = ModelConfig(embed_dim=4, mlp_dims=[8], dropout=0.0)


@pytest.fixture(scope="module")
def process_group():
    import torch.distributed as dist

    from tests.conftest import free_port

    with pytest.MonkeyPatch.context() as env:  # not left behind for processes later tests start
        for key, value in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0").items():
            env.setenv(key, value)
        dist.init_process_group("gloo", rank=0, world_size=1)
        yield
        dist.destroy_process_group()


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    categorical = torch.stack([torch.randint(1, n, (16,), generator=g) for n in SPEC.categorical_sizes], dim=1)
    multi_hot = torch.randint(0, SPEC.multi_hot_sizes[0], (16, SPEC.multi_hot_length), generator=g)
    history = torch.randint(0, SPEC.item_size, (16, SPEC.history_length), generator=g)
    return categorical, multi_hot, history, torch.randn(16, 1, generator=g), torch.randint(0, 2, (16,), generator=g).float()


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_loaded_weights_round_trip_and_training_continues_from_them(process_group, name):
    from mlsys.train.strategies import make_strategy

    torch.manual_seed(0)
    strategy = make_strategy(build_model(SPEC, MODEL), TrainConfig(num_workers=1, learning_rate=1e-4, strategy=STRATEGIES[name]), torch.device("cpu"))
    torch.manual_seed(1)
    source = {k: v + torch.randn_like(v) for k, v in build_model(SPEC, MODEL).state_dict().items()}  # far from the init
    strategy.load_full_state_dict(source)
    loaded = strategy.full_state_dict()
    assert loaded.keys() == source.keys()
    for key, value in source.items():
        torch.testing.assert_close(loaded[key], value, msg=key)

    *inputs, label = _batch(2)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(strategy.module(*inputs), label)
    strategy.step(loss)
    stepped = strategy.full_state_dict()
    moved = max((stepped[k] - source[k]).abs().max().item() for k in source)
    assert 0 < moved < 1e-3, f"one step at lr 1e-4 moves weights by at most ~1e-4 from the loaded ones, moved {moved}"
