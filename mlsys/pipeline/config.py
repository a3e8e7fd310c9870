"""Typed configuration of how the pipeline runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class PipelineConfig:
    name: str = "ctr"
    experiment: str = "ctr"
    use_cache: bool = True
    # Stop after this step (e.g. `validate` to check a new span without training).
    until: Optional[str] = None
