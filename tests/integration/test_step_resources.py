"""Resources per step on a real (embedded) Ray: what a step's task asked for, and where it ran.

One node here, so "where" is always this host; the records are the point (docs/pipeline.md,
"Resources per step"). A request the node cannot meet would wait forever, so none is made.
Training workers' placement, per attempt across a restart, is tested on three nodes in
test_multinode.py.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import ray.cloudpickle

from mlsys.pipeline import Pipeline, PipelineRunner, StepContext, step
from mlsys.pipeline.config import StepResources

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
