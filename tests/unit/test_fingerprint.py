"""Step fingerprints follow the code a step reaches (mlsys.pipeline.fingerprint), no Ray.

A throwaway package on disk plays the pipeline: three steps in one module, a
helper beside them, a library two imports away, and an unrelated module.
Editing a file and planning again must rerun exactly the steps that reach it.
"""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from mlsys.pipeline.fingerprint import Basis, explain, library_versions, reached_code
from mlsys.pipeline.runner import PipelineRunner
from mlsys.pipeline.step import Pipeline

FILES = {
    "fpdemo/__init__.py": "",
    "fpdemo/lib/__init__.py": "",
    "fpdemo/lib/one.py": """
        from fpdemo.lib import two

        def scale(x):
            return two.double(x) + 1
    """,
    "fpdemo/lib/two.py": """
        import json

        def double(x):
            return json.loads(json.dumps(2 * x))
    """,
    "fpdemo/other.py": """
        def unrelated():
            return 0
    """,
    "fpdemo/steps.py": """
        from dataclasses import dataclass

        from mlsys.pipeline.step import Pipeline, StepContext, step


        @dataclass
        class Conf:
            size: int = 3


        @dataclass(frozen=True)
        class A:
            uri: str


        @dataclass(frozen=True)
        class B:
            uri: str


        @dataclass(frozen=True)
        class C:
            uri: str


        def _helper(x):
            return x + 1


        def _unused_helper(x):
            return x - 1


        @step()
        def first(ctx: StepContext, conf: Conf) -> A:
            return A(str(conf.size))


        @step()
        def second(ctx: StepContext, a: A) -> B:
            from fpdemo.lib.one import scale

            return B(str(scale(_helper(int(a.uri)))))


        @step()
        def third(ctx: StepContext, b: B) -> C:
            return C(b.uri)


        PIPELINE = Pipeline("demo", (first, second, third))
    """,
}


@pytest.fixture
def demo(tmp_path, monkeypatch):
    root = tmp_path / "src"
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m == "fpdemo" or m.startswith("fpdemo.")]:
        del sys.modules[name]
    steps = importlib.import_module("fpdemo.steps")

    def plan(resources=None, **sections):
        runner = PipelineRunner(steps.PIPELINE, {"conf": sections.get("conf", steps.Conf())}, str(tmp_path / "home"), "", "x",
                                resources=resources)
        return {p.name: p.fingerprint for p in runner.plan()}

    def edit(name: str, old: str, new: str):
        path = root / name
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))

    yield steps, plan, edit
    for name in [m for m in sys.modules if m == "fpdemo" or m.startswith("fpdemo.")]:
        del sys.modules[name]


def _changed(before: dict, after: dict) -> set[str]:
    return {name for name in before if before[name] != after[name]}


def test_editing_a_helper_beside_the_step_reruns_it_and_downstream(demo):
    steps, plan, edit = demo
    before = plan()
    edit("fpdemo/steps.py", "return x + 1", "return x + 2")
    assert _changed(before, plan()) == {"second", "third"}


def test_editing_a_module_two_imports_away_reruns_it_and_downstream(demo):
    steps, plan, edit = demo
    before = plan()
    edit("fpdemo/lib/two.py", "2 * x", "3 * x")
    assert _changed(before, plan()) == {"second", "third"}


@pytest.mark.parametrize(
    "name, old, new",
    [
        ("fpdemo/other.py", "return 0", "return 1"),  # a module no step imports
        ("fpdemo/steps.py", "return x - 1", "return x - 5"),  # a helper no step calls
        ("fpdemo/lib/two.py", "def double", "def unused(x):\n    return x\n\n\ndef double"),  # a new function nothing calls
    ],
)
def test_unrelated_edits_rerun_nothing(demo, name, old, new):
    steps, plan, edit = demo
    before = plan()
    edit(name, old, new)
    assert _changed(before, plan()) == set()


def test_editing_the_first_step_reruns_everything(demo):
    steps, plan, edit = demo
    before = plan()
    edit("fpdemo/steps.py", "return A(str(conf.size))", "return A(str(conf.size * 2))")
    assert _changed(before, plan()) == {"first", "second", "third"}


def test_config_change_reruns_its_step_and_downstream(demo):
    steps, plan, edit = demo
    assert _changed(plan(), plan(conf=steps.Conf(size=4))) == {"first", "second", "third"}


def test_where_a_step_runs_reruns_nothing(demo):
    from mlsys.pipeline.config import StepResources

    steps, plan, edit = demo
    before = plan()
    assert _changed(before, plan(resources={"second": StepResources(num_cpus=2, resources={"worker": 1})})) == set()


def test_reached_code_names_definitions_and_libraries(demo):
    steps, _, _ = demo
    code, libraries = reached_code(steps.second.fn)
    assert {"fpdemo/steps.py::second", "fpdemo/steps.py::_helper", "fpdemo/lib/one.py::scale", "fpdemo/lib/two.py::double"} <= set(code)
    assert "fpdemo/steps.py::_unused_helper" not in code and "fpdemo/steps.py::first" not in code
    assert "fpdemo/other.py::unrelated" not in code
    assert "json" in libraries


def test_the_pipeline_steps_reach_what_they_compute_with():
    from mlsys.pipeline.ctr import CTR

    by_name = {s.name: s for s in CTR.steps}
    ingest, _ = reached_code(by_name["ingest"].fn)
    assert any(k.startswith("mlsys/data/events.py::") for k in ingest)
    assert not any(k.startswith(("mlsys/train/", "mlsys/serve/", "mlsys/features/")) for k in ingest)
    train, libraries = reached_code(by_name["train"].fn)
    assert any(k.startswith("mlsys/models/din.py::") for k in train)  # the whole zoo: build_model's table
    assert {"torch", "ray", "deepspeed"} <= libraries
    versions = library_versions(libraries)
    assert versions["torch"].startswith("2.") and "python" in versions


def test_library_versions_skip_the_standard_library_and_add_implied_ones():
    versions = library_versions({"json", "torch"})
    assert "json" not in versions
    assert {"torch", "onnx", "onnxscript"} <= set(versions)  # torch.onnx.export loads onnxscript and onnx


def test_explain_names_what_changed():
    old = Basis("s", {"a.py::f": "1", "b.py::g": "2"}, {"torch": "2.13.0"}, {"data.rows": 10}, {"data": "x"})
    new = Basis("s", {"a.py::f": "9", "c.py::h": "3"}, {"torch": "2.14.0"}, {"data.rows": 20}, {"data": "y"})
    assert explain(old, new) == [
        "input data changed (upstream ran)",
        "config data.rows: 10 -> 20",
        "code a.py::f changed",
        "code b.py::g removed",
        "code c.py::h added",
        "library torch: 2.13.0 -> 2.14.0",
    ]
    assert explain(old, old) == []
    assert explain(None, new) == ["never ran with this step's code before"]
