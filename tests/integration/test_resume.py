"""A pipeline that failed at step k, run again with the same command, resumes at k.

Real Ray tasks and a real MLflow store; the failure is real too: the second
step reads an external file that does not exist yet.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray.cloudpickle

from mlsys import storage
from mlsys.errors import StepFailedError
from mlsys.pipeline import Pipeline, PipelineRunner, StepContext, step

# Ray workers cannot import this test module by name: ship it by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass
class SourceConfig:
    path: str


@dataclass(frozen=True)
class Numbers:
    uri: str


@dataclass(frozen=True)
class Joined:
    uri: str


@dataclass(frozen=True)
class Total:
    value: int


@step()
def produce(ctx: StepContext) -> Numbers:
    out = Numbers(storage.join(ctx.output_uri, "numbers.txt"))
    Path(out.uri).parent.mkdir(parents=True, exist_ok=True)
    Path(out.uri).write_text("1 2 3")
    return out


@step()
def join_external(ctx: StepContext, numbers: Numbers, source: SourceConfig) -> Joined:
    external = Path(source.path).read_text()  # FileNotFoundError on the first run
    out = Joined(storage.join(ctx.output_uri, "joined.txt"))
    Path(out.uri).parent.mkdir(parents=True, exist_ok=True)
    Path(out.uri).write_text(Path(numbers.uri).read_text() + " " + external)
    return out


@step()
def total(ctx: StepContext, joined: Joined) -> Total:
    value = sum(int(x) for x in Path(joined.uri).read_text().split())
    ctx.log_metric("total", value)
    return Total(value)


PIPE = Pipeline("toy", (produce, join_external, total))


def test_failed_pipeline_resumes_at_the_failed_step(tmp_path, ray_local):
    from mlsys.registry import mlflow_store
    from mlsys.config import HomeConfig

    home = tmp_path / "home"
    uri = mlflow_store.tracking_uri(HomeConfig(root=str(home)))
    external = tmp_path / "external.txt"
    lines: list[str] = []

    def runner():
        return PipelineRunner(PIPE, {"source": SourceConfig(str(external))}, str(home), uri, "toy", echo=lines.append)

    with pytest.raises(StepFailedError) as failure:
        runner().run()
    assert failure.value.step == "join_external"
    assert "FileNotFoundError" in str(failure.value) and "resumes at 'join_external'" in str(failure.value)

    external.write_text("10")
    lines.clear()
    result = runner().run()
    assert [s.status for s in result.steps] == ["cached", "ran", "ran"]
    assert result.output("total") == Total(16)
    assert any(line.startswith("[produce] cached") for line in lines)

    client = mlflow_store.client(uri)
    runs = client.search_runs([result.experiment_id], "tags.`mlsys.pipeline` = 'toy'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    total_run = client.get_run(result.steps[2].run_id)
    assert total_run.data.metrics["total"] == 16.0


def test_pipeline_wiring_is_checked_before_anything_runs(tmp_path):
    from mlsys.errors import PipelineDefinitionError

    backwards = Pipeline("bad", (join_external, produce, total))
    with pytest.raises(PipelineDefinitionError, match="later step 'produce'"):
        PipelineRunner(backwards, {"source": SourceConfig("x")}, str(tmp_path), "sqlite:///unused.db", "bad")
