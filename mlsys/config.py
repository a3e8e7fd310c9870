"""Configuration shared by every package: where things live, which Ray, and :func:`require`.

Each stage keeps its own config dataclass beside its code; what several
stages share lives here, below all of them, so none imports another for it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional

from mlsys.errors import ConfigError


def require(ok: bool, key: str, value: Any, expected: str) -> None:
    """Raise :class:`~mlsys.errors.ConfigError` naming ``key`` unless ``ok``.

    >>> require(0 < 2 < 1, "data.eval_fraction", 2, "between 0 and 1")
    Traceback (most recent call last):
    mlsys.errors.ConfigError: Bad configuration: data.eval_fraction=2 must be between 0 and 1. ...
    """
    if not ok:
        raise ConfigError(f"{key}={value!r} must be {expected}")


def plain(value: Any) -> Any:
    """Config dataclasses (and dicts, lists, tuples of them) as plain JSON-ready data, enums as their values.

    >>> plain(ModelConfig(name=ModelName.din))["name"]  # doctest: +SKIP
    'din'
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    return value


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
