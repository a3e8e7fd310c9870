"""Walk a registered model back to the data it came from, through MLflow records.

Every step of a pipeline run is a nested MLflow run tagged with its
fingerprint and the artifact URIs it read (``mlsys.inputs``) and wrote
(``mlsys.outputs``). Starting at the run that registered a model version,
each input is matched to the sibling step run that produced it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mlsys.registry.mlflow_store import Tag


@dataclass(frozen=True)
class LineageNode:
    step: str
    run_id: str
    fingerprint: str
    cached_from: str | None
    params: dict[str, str]
    inputs: dict[str, dict]
    outputs: dict
    started: int


def walk(client, run_id: str) -> list[LineageNode]:
    """Nodes from the given step run back to the pipeline's first step (depth first)."""
    run = client.get_run(run_id)
    parent = run.data.tags.get(Tag.PARENT)
    siblings = client.search_runs([run.info.experiment_id], f"tags.{Tag.PARENT} = '{parent}'") if parent else [run]
    by_outputs = {r.data.tags.get(Tag.OUTPUTS): r for r in siblings}
    nodes: list[LineageNode] = []
    seen: set[str] = set()

    def visit(r) -> None:
        if r.info.run_id in seen:
            return
        seen.add(r.info.run_id)
        tags = r.data.tags
        inputs = json.loads(tags.get(Tag.INPUTS, "{}"))
        nodes.append(
            LineageNode(
                step=tags.get(Tag.STEP, r.info.run_name),
                run_id=r.info.run_id,
                fingerprint=tags.get(Tag.FINGERPRINT, ""),
                cached_from=tags.get(Tag.CACHED_FROM),
                params=dict(r.data.params),
                inputs=inputs,
                outputs=json.loads(tags.get(Tag.OUTPUTS, "{}")),
                started=r.info.start_time,
            )
        )
        for value in inputs.values():
            upstream = by_outputs.get(json.dumps(value))
            if upstream is not None:
                visit(upstream)

    visit(run)
    return sorted(nodes, key=lambda n: -n.started)  # the model first, the data last


def format_lineage(title: str, nodes: list[LineageNode]) -> str:
    lines = [title]
    for node in nodes:
        origin = f", computed in run {node.cached_from[:12]}" if node.cached_from else ""
        lines.append(f"  {node.step:<10} run {node.run_id[:12]}  fingerprint {node.fingerprint[:12]}{origin}")
        for name, uri in node.outputs.items():
            lines.append(f"      out {name}: {uri}")
        data_params = {k: v for k, v in node.params.items() if k.startswith("data.source") or k.startswith("model.name")}
        for key, value in data_params.items():
            lines.append(f"      {key} = {value}")
    return "\n".join(lines)
