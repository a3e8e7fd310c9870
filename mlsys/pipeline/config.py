"""Typed configuration of where things live and how the pipeline runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class HomeConfig:
    """``MLSYS_HOME`` holds artifacts and the step cache (any pyarrow/fsspec URI);
    ``MLFLOW_TRACKING_URI`` overrides the SQLite store kept under it."""

    root: str = ".mlsys"
    tracking_uri: Optional[str] = None


@dataclass
class ClusterConfig:
    """``local`` starts Ray in-process; ``auto`` or ``host:port`` joins a cluster."""

    address: str = "local"
    # Logical CPUs of the embedded Ray: more than cores, so Ray Data keeps
    # running beside the training workers (see ARCHITECTURE.md, traps).
    num_cpus: int = 4


@dataclass
class PipelineConfig:
    name: str = "ctr"
    experiment: str = "ctr"
    use_cache: bool = True
    # Stop after this step (e.g. `validate` to check a new span without training).
    until: Optional[str] = None
