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


def require_custom_resources(resources: dict, key: str, built_in: dict[str, str]) -> None:
    """Custom Ray resources under ``key`` (``train.resources_per_worker``): amounts >= 0, and none of
    ``built_in`` (resource name -> the key that sets it, e.g. ``{"CPU": "train.cpus_per_worker"}``).

    >>> require_custom_resources({"GPU": 1}, "serve.dense.resources", {"GPU": "serve.dense.num_gpus"})
    Traceback (most recent call last):
    mlsys.errors.ConfigError: Bad configuration: serve.dense.resources.GPU=1 must be set by serve.dense.num_gpus instead. ...
    """
    for name, amount in resources.items():
        require(name not in built_in, f"{key}.{name}", amount, f"set by {built_in.get(name)} instead")
        require(amount >= 0, f"{key}.{name}", amount, ">= 0")


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


class UiMode(str, Enum):
    """``ui.mode``: where ``mlsys ui`` runs the dashboard. process: in this process on ``ui.host:ui.port``;
    serve: as a Serve application on the cluster's Serve (``serve.port``, at ``ui.route_prefix``);
    auto: serve on a cluster (``cluster.address`` other than local), process otherwise."""

    auto = "auto"
    process = "process"
    serve = "serve"


@dataclass
class UiConfig:
    """The dashboard (``mlsys ui ui.port=8600``; docs/ui.md).

    Reading needs no token unless ``private_reads`` (set it where the dashboard is reachable beyond
    loopback, e.g. a Serve proxy on 0.0.0.0); every action that changes something (launch a run, push,
    roll back, start, promote or roll back a release) needs ``Authorization: Bearer <ui.token>``. Empty:
    a random token is made at the first start and kept in ``<home>/ui/token`` (mode 0600)."""

    mode: UiMode = UiMode.auto
    host: str = "127.0.0.1"
    port: int = 8600
    route_prefix: str = "/ui"  # mode=serve: the app's path on the cluster's Serve
    token: str = ""
    private_reads: bool = False
    runs: int = 200  # the newest pipeline runs the runs page lists
    mlflow_url: str = ""  # links out (empty: not shown), e.g. http://127.0.0.1:5000
    ray_dashboard_url: str = ""  # e.g. http://127.0.0.1:8265
    optuna_dashboard_url: str = ""

    def __post_init__(self):
        require(0 < self.port < 65536, "ui.port", self.port, "a TCP port, 1-65535")
        require(self.runs >= 1, "ui.runs", self.runs, ">= 1")
        require(self.route_prefix.startswith("/") and self.route_prefix != "/" and not self.route_prefix.endswith("/"),
                "ui.route_prefix", self.route_prefix, "a path of its own on Serve, e.g. /ui (not /, no trailing slash)")
