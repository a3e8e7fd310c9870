"""Typed configuration of the online service."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeConfig:
    """``mlsys serve serve.model=ctr@champion serve.port=8000``."""

    # A registered model `name@alias` or `name/version`, or a package URI.
    model: str = "ctr@champion"
    app_name: str = "ranking"
    # Bound to loopback by default: Ray's own ports listen on every interface.
    host: str = "127.0.0.1"
    port: int = 8000
    num_replicas: int = 1
    max_candidates: int = 1000
