"""Typed configuration of the online service."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlsys.features.feature_log import FeatureLoggingConfig


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
    # Serve's log level; INFO includes one access-log line per request.
    log_level: str = "INFO"
    # What serving used (features, model version, scores), sampled, to Parquet (docs/serving.md).
    feature_logging: FeatureLoggingConfig = field(default_factory=FeatureLoggingConfig)

    def __post_init__(self):
        from mlsys.config import require

        require(1 <= self.port <= 65535, "serve.port", self.port, "a TCP port (1-65535)")
        require(self.num_replicas >= 1, "serve.num_replicas", self.num_replicas, ">= 1")
        require(self.max_candidates >= 1, "serve.max_candidates", self.max_candidates, ">= 1")
        levels = ("DEBUG", "INFO", "WARNING", "ERROR")
        require(self.log_level in levels, "serve.log_level", self.log_level, f"one of {levels}")
