"""Typed configuration of how the pipeline runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Optional

from mlsys.config import require, require_custom_resources

# Ray resource names set by their own keys, not under `resources`.
_BUILT_IN = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}


@dataclass
class StepResources:
    """What a step's own Ray task asks for: ``pipeline.resources.train={num_cpus:1,resources:{worker:1}}``.

    These size and place the step's driver code only: Ray Train workers are sized by ``train.*``
    (``train.cpus_per_worker``, ``train.resources_per_worker``), Serve replicas by ``serve.<deployment>.*``.
    Where a step runs does not change what it computes: none of this enters a fingerprint.

    >>> StepResources(num_cpus=1, resources={"worker": 1}).task_options(default_cpus=0)
    {'num_cpus': 1, 'num_gpus': 0, 'resources': {'worker': 1}}
    """

    num_cpus: Optional[float] = None  # null: the step's declared default (`@step(num_cpus=...)`)
    num_gpus: float = 0
    memory: Optional[int] = None  # bytes (Ray's `memory` resource); null: no reservation
    # Custom resources, e.g. one a node was started with (`ray start --resources='{"worker": 1}'`): the way
    # to pin a step to a node, or to a kind of node.
    resources: Dict[str, float] = field(default_factory=dict)

    def check(self, key: str) -> None:
        """``key``: where this sits in the config (``pipeline.resources.train``), for the errors."""
        require(self.num_cpus is None or self.num_cpus >= 0, f"{key}.num_cpus", self.num_cpus, ">= 0, or null for the step's default")
        require(self.num_gpus >= 0, f"{key}.num_gpus", self.num_gpus, ">= 0")
        require(self.memory is None or self.memory > 0, f"{key}.memory", self.memory, "> 0 bytes, or null")
        require_custom_resources(self.resources, f"{key}.resources", {n: f"{key}.{k}" for n, k in _BUILT_IN.items()})

    def task_options(self, default_cpus: float) -> dict:
        """The resource arguments of ``ray.remote(...)`` for the step's task."""
        out: dict = {"num_cpus": default_cpus if self.num_cpus is None else self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory is not None:
            out["memory"] = self.memory
        if self.resources:
            out["resources"] = dict(self.resources)
        return out

    @classmethod
    def parse(cls, key: str, raw: Any) -> "StepResources":
        """``raw`` (a composed mapping, or a StepResources) checked, each bad value named by its full key."""
        if isinstance(raw, StepResources):
            raw.check(key)
            return raw
        require(isinstance(raw, dict), key, raw, "a mapping, e.g. {num_cpus: 1, resources: {worker: 1}}")
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(fields))
        require(not unknown, f"{key}.{unknown[0] if unknown else ''}", raw.get(unknown[0]) if unknown else None,
                f"one of the fields {fields}")
        values = dict(raw)
        for name, kind in (("num_cpus", float), ("num_gpus", float), ("memory", int)):
            if values.get(name) is not None:
                values[name] = _number(f"{key}.{name}", values[name], kind)
        extra = values.get("resources") or {}
        require(isinstance(extra, dict), f"{key}.resources", extra, "a mapping of resource name to amount")
        values["resources"] = {str(n): _number(f"{key}.resources.{n}", v, float) for n, v in extra.items()}
        made = cls(**values)
        made.check(key)
        return made


def _number(key: str, value: Any, kind: type) -> float | int:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or float(value).is_integer())
    require(ok, key, value, "an integer" if kind is int else "a number")
    return kind(value)


def check_step_resources(resources: Dict[str, Any], pipeline: str, steps: Iterable[str]) -> None:
    """Every key of ``pipeline.resources`` names a step of the pipeline: a misspelt one would silently change nothing."""
    names = list(steps)
    for key in resources:
        require(key in names, f"pipeline.resources.{key}", resources[key], f"keyed by a step of pipeline '{pipeline}', one of {names}")


@dataclass
class PipelineConfig:
    name: str = "ctr"
    experiment: str = "ctr"
    use_cache: bool = True
    # Stop after this step (e.g. `validate` to check a new span without training).
    until: Optional[str] = None
    # Step name -> StepResources: what that step's Ray task asks for; steps not named keep their defaults.
    # Plain mappings for Hydra (OmegaConf refuses a new entry of a dict of dataclasses from the command
    # line); they become StepResources here, a bad value named by its key.
    resources: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.resources = {step: StepResources.parse(f"pipeline.resources.{step}", raw) for step, raw in self.resources.items()}
