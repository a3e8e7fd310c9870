"""Typed configuration of model registration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class RegistryConfig:
    """``registry.model_name=ctr registry.alias=champion`` (alias ``null`` registers without one)."""

    model_name: str = "ctr"
    alias: Optional[str] = "champion"
