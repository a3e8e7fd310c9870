"""mlsys.pipeline.step (declaration and wiring checks) and runner.fingerprint, no Ray."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum

import pytest

from mlsys.errors import PipelineDefinitionError
from mlsys.pipeline.runner import fingerprint
from mlsys.pipeline.step import Pipeline, Step, StepContext, step


class Mode(str, Enum):
    fast = "fast"
    slow = "slow"


@dataclass
class ConfA:
    size: int = 3
    mode: Mode = Mode.fast
    dims: list[int] = dataclasses.field(default_factory=lambda: [1, 2])


@dataclass
class ConfB:
    rate: float = 0.5


@dataclass(frozen=True)
class OutA:
    uri: str


@dataclass(frozen=True)
class OutB:
    uri: str


@dataclass(frozen=True)
class OutC:
    uri: str


class NotADataclass:
    pass


@step()
def make_a(ctx: StepContext, conf: ConfA) -> OutA:
    return OutA(f"a-{conf.size}")


@step(num_cpus=2)
def make_b(ctx: StepContext, a: OutA, conf: ConfA, other: ConfB) -> OutB:
    return OutB(a.uri + "-b")


@step()
def make_c(ctx: StepContext, b: OutB) -> OutC:
    return OutC(b.uri + "-c")


@step()
def make_a_again(ctx: StepContext, conf: ConfB) -> OutA:
    return OutA("again")


CONFIGS = {ConfA: "a", ConfB: "b"}


# -- the decorator -----------------------------------------------------------------


def test_step_records_signature():
    assert isinstance(make_b, Step)
    assert make_b.name == "make_b"
    assert make_b.output is OutB
    assert make_b.params == (("a", OutA), ("conf", ConfA), ("other", ConfB))
    assert make_b.num_cpus == 2
    ctx = StepContext("make_a", "fp", "/tmp/x", "/tmp", "sqlite://", "run")
    assert make_a.fn(ctx, ConfA(size=9)) == OutA("a-9")


def test_step_rejects_missing_ctx():
    def no_ctx(conf: ConfA) -> OutA: ...

    with pytest.raises(PipelineDefinitionError, match="ctx: StepContext"):
        step()(no_ctx)


def test_step_rejects_ctx_not_first():
    def ctx_second(conf: ConfA, ctx: StepContext) -> OutA: ...

    with pytest.raises(PipelineDefinitionError, match="first parameter"):
        step()(ctx_second)


def test_step_rejects_unannotated_ctx():
    def bare_ctx(ctx, conf: ConfA) -> OutA: ...

    with pytest.raises(PipelineDefinitionError):
        step()(bare_ctx)


def test_step_rejects_no_parameters():
    def nothing() -> OutA: ...

    with pytest.raises(PipelineDefinitionError):
        step()(nothing)


def test_step_rejects_unannotated_parameter():
    def unannotated(ctx: StepContext, conf) -> OutA: ...

    with pytest.raises(PipelineDefinitionError, match="conf"):
        step()(unannotated)


def test_step_rejects_missing_return_annotation():
    def no_return(ctx: StepContext, conf: ConfA): ...

    with pytest.raises(PipelineDefinitionError, match="no_return"):
        step()(no_return)


def test_step_rejects_non_dataclass_return():
    def returns_str(ctx: StepContext, conf: ConfA) -> str: ...

    def returns_class(ctx: StepContext, conf: ConfA) -> NotADataclass: ...

    for fn in (returns_str, returns_class):
        with pytest.raises(PipelineDefinitionError, match="output dataclass"):
            step()(fn)


# -- pipeline wiring ----------------------------------------------------------------


def test_valid_pipeline():
    p = Pipeline("ok", (make_a, make_b, make_c))
    p.validate(CONFIGS)
    assert p.producer(OutB) is make_b
    assert p.producer(ConfA) is None


def test_validate_rejects_input_produced_by_a_later_step():
    p = Pipeline("late", (make_b, make_a, make_c))
    with pytest.raises(PipelineDefinitionError, match="later step 'make_a'"):
        p.validate(CONFIGS)


def test_validate_rejects_input_produced_by_nothing():
    p = Pipeline("orphan", (make_a, make_c))  # OutB has no producer
    with pytest.raises(PipelineDefinitionError, match="neither a step output nor a config section") as e:
        p.validate(CONFIGS)
    assert "make_c" in str(e.value) and "OutB" in str(e.value)


def test_validate_rejects_a_missing_config_section():
    p = Pipeline("noconf", (make_a, make_b, make_c))
    with pytest.raises(PipelineDefinitionError, match="other: ConfB"):
        p.validate({ConfA: "a"})


def test_two_producers_of_one_output_are_rejected():
    with pytest.raises(PipelineDefinitionError, match="make_a.*make_a_again.*OutA"):
        Pipeline("dup", (make_a, make_a_again, make_b))


def test_ctr_pipeline_is_wired():
    from mlsys.api.pipeline import PIPELINE_SECTIONS
    from mlsys.api.config import MlsysConfig
    from mlsys.pipeline.ctr import CTR

    cfg = MlsysConfig()
    from mlsys.train.warm_start import WarmStart

    sections = {type(getattr(cfg, n)): n for n in PIPELINE_SECTIONS}
    sections[WarmStart] = "warm_start"  # derived: execute_pipeline resolves train.warm_start
    CTR.validate(sections)
    assert [s.name for s in CTR.steps] == [
        "ingest", "statistics", "schema", "validate", "features", "materialize", "transform", "tune", "train", "package", "evaluate",
        "register", "bless", "push"]
    with pytest.raises(PipelineDefinitionError):
        CTR.validate({k: v for k, v in sections.items() if v != "registry"})


# -- fingerprints ---------------------------------------------------------------------


def _fp(configs=None, inputs=None, s=make_b):
    configs = {"conf": ConfA(), "other": ConfB()} if configs is None else configs
    inputs = {"a": "f" * 64} if inputs is None else inputs
    return fingerprint(s, configs, inputs)


def test_fingerprint_is_stable():
    a = _fp()
    assert a == _fp()
    assert len(a) == 64 and int(a, 16) >= 0
    # Equal values in new objects, and dict order, do not matter.
    assert a == fingerprint(make_b, {"other": ConfB(0.5), "conf": ConfA(3, Mode.fast, [1, 2])}, {"a": "f" * 64})


@pytest.mark.parametrize(
    "configs",
    [
        {"conf": ConfA(size=4), "other": ConfB()},
        {"conf": ConfA(mode=Mode.slow), "other": ConfB()},
        {"conf": ConfA(dims=[1, 3]), "other": ConfB()},
        {"conf": ConfA(), "other": ConfB(rate=0.25)},
        {"conf": ConfA()},  # a section dropped
    ],
)
def test_fingerprint_changes_with_config(configs):
    assert _fp(configs=configs) != _fp()


def test_fingerprint_changes_with_input_fingerprint():
    assert _fp(inputs={"a": "e" * 64}) != _fp()
    assert _fp(inputs={"a": "f" * 63 + "0"}) != _fp()
    assert _fp(inputs={}) != _fp()


def test_fingerprint_depends_on_the_step():
    configs = {"conf": ConfA()}
    assert fingerprint(make_a, configs, {}) != fingerprint(make_c, configs, {})


def test_fingerprint_distinguishes_section_names():
    assert fingerprint(make_a, {"x": ConfB()}, {}) != fingerprint(make_a, {"y": ConfB()}, {})


def test_enum_config_fingerprints_as_its_value():
    # A config that holds the enum and one that holds its plain value are the same config.
    assert fingerprint(make_a, {"conf": ConfA(mode=Mode.slow)}, {}) == fingerprint(
        make_a, {"conf": {"size": 3, "mode": "slow", "dims": [1, 2]}}, {}
    )


# -- resources per step (pipeline.resources) -------------------------------------------------


def _runner(tmp_path, resources=None):
    from mlsys.pipeline.runner import PipelineRunner

    return PipelineRunner(Pipeline("ok", (make_a, make_b, make_c)), {"a": ConfA(), "b": ConfB()}, str(tmp_path), "", "x",
                          resources=resources)


def test_a_step_task_asks_for_its_declared_cpus_unless_pipeline_resources_say_otherwise(tmp_path):
    from mlsys.pipeline.config import StepResources

    plain = _runner(tmp_path)
    assert plain.task_options(make_b) == {"num_cpus": 2, "num_gpus": 0}
    given = _runner(tmp_path, {"make_b": StepResources(num_gpus=1, memory=2**30, resources={"worker": 1}),
                               "make_c": StepResources(num_cpus=0.5)})
    assert given.task_options(make_b) == {"num_cpus": 2, "num_gpus": 1, "memory": 2**30, "resources": {"worker": 1}}
    assert given.task_options(make_c) == {"num_cpus": 0.5, "num_gpus": 0}
    assert given.task_options(make_a) == {"num_cpus": 0, "num_gpus": 0}


def test_pipeline_resources_of_a_step_the_pipeline_lacks_are_refused_naming_the_steps(tmp_path):
    from mlsys.errors import ConfigError
    from mlsys.pipeline.config import StepResources

    with pytest.raises(ConfigError) as e:
        _runner(tmp_path, {"make_bb": StepResources(num_cpus=1)})
    assert "pipeline.resources.make_bb" in str(e.value) and "['make_a', 'make_b', 'make_c']" in str(e.value)


def test_resources_do_not_enter_the_fingerprints(tmp_path):
    from mlsys.pipeline.config import StepResources

    before = {p.name: p.fingerprint for p in _runner(tmp_path).plan()}
    moved = _runner(tmp_path, {n: StepResources(num_cpus=1, num_gpus=1, memory=10**9, resources={"worker": 1})
                               for n in ("make_a", "make_b", "make_c")})
    assert {p.name: p.fingerprint for p in moved.plan()} == before
