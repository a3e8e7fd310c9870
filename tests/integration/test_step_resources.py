"""Resources per step and per training worker on a real (embedded) Ray: what was asked, and where it ran.

One node here, so "where" is always this host; the records are the point (docs/pipeline.md,
"Resources per step"). A request the node cannot meet would wait forever, so none is made.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass

import pytest
import ray.cloudpickle

from mlsys.models import ModelConfig
from mlsys.pipeline import Pipeline, PipelineRunner, StepContext, step
from mlsys.pipeline.config import StepResources
from mlsys.train.config import TrainConfig

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import this module by name


@dataclass(frozen=True)
class Placed:
    node_id: str
    cpus: float


@dataclass(frozen=True)
class Unplaced:
    node_id: str


@step()
def placed(ctx: StepContext) -> Placed:
    import ray

    return Placed(ray.get_runtime_context().get_node_id(), ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))


@step()
def unplaced(ctx: StepContext, before: Placed) -> Unplaced:
    import ray

    return Unplaced(ray.get_runtime_context().get_node_id())


def test_a_steps_run_records_what_its_task_asked_for_and_where_it_ran(tmp_path, ray_local):
    from mlsys import storage
    from mlsys.config import HomeConfig
    from mlsys.registry import mlflow_store

    home = tmp_path / "home"
    uri = mlflow_store.tracking_uri(HomeConfig(root=str(home)))
    lines: list[str] = []
    resources = {"placed": StepResources(num_cpus=1, memory=50 * 2**20)}
    runner = PipelineRunner(Pipeline("placing", (placed, unplaced)), {}, str(home), uri, "placing", echo=lines.append,
                            resources=resources)
    result = runner.run()
    node = ray_local.get_runtime_context().get_node_id()
    assert result.output("placed") == Placed(node, 1.0)  # the task held the CPU it asked for

    client = mlflow_store.client(uri)
    tags = client.get_run(result.steps[0].run_id).data.tags
    assert json.loads(tags["mlsys.resources"]) == {"num_cpus": 1, "num_gpus": 0, "memory": 50 * 2**20}
    assert tags["mlsys.node_id"] == node and tags["mlsys.node_ip"] == ray_local.util.get_node_ip_address()
    plain = client.get_run(result.steps[1].run_id).data.tags
    assert json.loads(plain["mlsys.resources"]) == {"num_cpus": 0, "num_gpus": 0} and plain["mlsys.node_id"] == node
    manifest = storage.read_json(runner._cache_uri(placed, result.steps[0].fingerprint))
    assert manifest["resources"] == resources["placed"].task_options(0) and manifest["tags"]["node_id"] == node
    assert any(line.startswith("[placed] done in") and line.endswith(f"on node {tags['mlsys.node_ip']}") for line in lines)
    assert not any(line.startswith("[unplaced] done in") and "on node" in line for line in lines)  # no resources given: no new echo

    moved = PipelineRunner(Pipeline("placing", (placed, unplaced)), {}, str(home), uri, "placing",
                           resources={"placed": StepResources(num_cpus=2)})
    assert [s.status for s in moved.run().steps] == ["cached", "cached"]  # where a step runs is not what it computes


@pytest.mark.timeout(600)
def test_every_training_attempt_records_where_its_workers_ran(tmp_path, ray_local, capfd):
    from mlsys.train import trainer
    from mlsys.train.synthetic import synthetic_dataset, synthetic_spec

    spec = synthetic_spec(users=50, items=80)
    train = synthetic_dataset(spec, rows=2_000, seed=0, blocks=2).materialize()
    evaluation = synthetic_dataset(spec, rows=400, seed=0, start=2_000, blocks=1).materialize()
    model = ModelConfig(embed_dim=4, mlp_dims=[8])
    cfg = TrainConfig(num_workers=2, cpus_per_worker=0.5, max_epochs=1, batch_size=256, placement_strategy="SPREAD",
                      resources_per_worker={"memory": 20 * 2**20})
    first = trainer.fit(train, evaluation, spec, model, cfg, str(tmp_path), "placed")
    assert len(first.workers) == 1 and [w["rank"] for w in first.workers[0]] == [0, 1]
    node = ray_local.get_runtime_context().get_node_id()
    assert {w["node_id"] for w in first.workers[0]} == {node} and len({w["pid"] for w in first.workers[0]}) == 2

    # The same run, longer: it resumes from the epoch-1 checkpoint and appends the new attempt to the restored record.
    again = trainer.fit(train, evaluation, spec, model, dataclasses.replace(cfg, max_epochs=2), str(tmp_path), "placed")
    assert [h["epoch"] for h in again.history] == [1, 2]
    assert len(again.workers) == 2 and again.workers[0] == first.workers[0]
    assert {w["pid"] for w in again.workers[1]}.isdisjoint({w["pid"] for w in first.workers[0]})
    # rank 0's line of the first attempt (forwarded from its worker; checked last, when it has long arrived)
    assert trainer.format_workers(first.workers[0]) in capfd.readouterr().out
