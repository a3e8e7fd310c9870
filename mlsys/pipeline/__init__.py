"""Step DAG with caching by fingerprint, lineage records in MLflow, and resume."""

from mlsys.pipeline.runner import PipelineResult, PipelineRunner, StepReport
from mlsys.pipeline.step import Pipeline, Step, StepContext, step

__all__ = ["Pipeline", "PipelineResult", "PipelineRunner", "Step", "StepContext", "StepReport", "step"]
