"""Connecting to Ray: the embedded local default, or an existing cluster."""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlparse

from mlsys.errors import ClusterUnreachableError
from mlsys.config import ClusterConfig


def _probe(address: str) -> None:
    """Fail fast (seconds, not Ray's minute of retries) when nothing listens."""
    if address in ("auto", "local") or address.startswith("anyscale://"):
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    if not parsed.hostname or not parsed.port:
        raise ClusterUnreachableError(address, "expected host:port or ray://host:port")
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=5).close()
    except OSError as e:
        raise ClusterUnreachableError(address, f"nothing answers at {parsed.hostname}:{parsed.port}: {e.strerror or e}") from None


def connect(cfg: ClusterConfig) -> None:
    """``connect(ClusterConfig())`` starts Ray in-process; ``address=auto`` joins a running cluster."""
    import ray

    if ray.is_initialized():
        return
    if cfg.address == "local":
        # The dashboard hosts the State API that Ray Train V2 polls.
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=True, logging_level=logging.WARNING)
        return
    _probe(cfg.address)
    try:
        ray.init(address=cfg.address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as e:
        raise ClusterUnreachableError(cfg.address, str(e).splitlines()[0]) from None
