"""Declaring steps, apart from running them.

A step is a typed function ``fn(ctx, *inputs, *configs) -> Output``. Its
parameters bind by type: a parameter annotated with another step's output
dataclass is an input artifact; one annotated with a config dataclass is
that config section. Outputs are frozen dataclasses of artifact URIs.
:class:`Pipeline` checks the wiring before anything runs.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from mlsys.errors import PipelineDefinitionError


@dataclass
class StepContext:
    """What a running step knows about itself; metrics it logs travel back."""

    step: str
    fingerprint: str
    output_uri: str
    home: str
    tracking_uri: str
    run_id: str
    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    def log_metric(self, name: str, value: float, step: int = 0) -> None:
        self.metrics.append((name, float(value), int(step)))

    def log_metrics(self, values: dict[str, float], step: int = 0) -> None:
        for name, value in values.items():
            self.log_metric(name, value, step)

    def set_tag(self, name: str, value: str) -> None:
        """A fact about this run (e.g. which executor ran it), set on the step's MLflow run as ``mlsys.<name>``."""
        self.tags[name] = str(value)


@dataclass(frozen=True)
class Step:
    name: str
    fn: Callable[..., Any]
    output: type
    params: tuple[tuple[str, type], ...]  # (parameter name, annotated type) after ctx
    num_cpus: float


def step(*, num_cpus: float = 0) -> Callable[[Callable], Step]:
    """Declare a step: a top-level function whose code, and all the code it reaches, enter its fingerprint
    (see :mod:`mlsys.pipeline.fingerprint`; nothing is declared by hand).

    >>> @step()
    ... def train(ctx: StepContext, data: TransformOutput, cfg: TrainConfig) -> TrainOutput: ...
    """

    def wrap(fn: Callable) -> Step:
        hints = typing.get_type_hints(fn)
        names = list(inspect.signature(fn).parameters)
        if not names or hints.get(names[0]) is not StepContext:
            raise PipelineDefinitionError(f"step '{fn.__name__}': the first parameter must be `ctx: StepContext`")
        missing = [n for n in names[1:] if n not in hints]
        if missing or "return" not in hints or not dataclasses.is_dataclass(hints["return"]):
            raise PipelineDefinitionError(
                f"step '{fn.__name__}': annotate every parameter {missing or ''} and return an output dataclass"
            )
        return Step(fn.__name__, fn, hints["return"], tuple((n, hints[n]) for n in names[1:]), num_cpus)

    return wrap


@dataclass(frozen=True)
class Pipeline:
    """Steps in an order where every input is produced by an earlier step."""

    name: str
    steps: tuple[Step, ...]

    def __post_init__(self):
        producers: dict[type, str] = {}
        for s in self.steps:
            if s.output in producers:
                raise PipelineDefinitionError(
                    f"steps '{producers[s.output]}' and '{s.name}' both produce {s.output.__name__}"
                )
            producers[s.output] = s.name

    def until(self, name: str) -> "Pipeline":
        """The steps up to and including ``name``."""
        names = [s.name for s in self.steps]
        if name not in names:
            raise PipelineDefinitionError(f"pipeline.until={name!r} is not a step of '{self.name}': {names}")
        return Pipeline(self.name, self.steps[: names.index(name) + 1])

    def producer(self, output_type: type) -> Step | None:
        return next((s for s in self.steps if s.output is output_type), None)

    def validate(self, config_types: dict[type, str]) -> None:
        """Every parameter is an earlier step's output or a config section."""
        seen: set[type] = set()
        for s in self.steps:
            for name, typ in s.params:
                if typ in seen or typ in config_types:
                    continue
                upstream = self.producer(typ)
                where = f"produced by the later step '{upstream.name}'" if upstream else "neither a step output nor a config section"
                raise PipelineDefinitionError(f"step '{s.name}' parameter '{name}: {typ.__name__}' is {where}")
            seen.add(s.output)
