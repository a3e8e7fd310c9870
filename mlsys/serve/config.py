"""Typed configuration of the online service: the graph, its deployments, batching, limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, Optional

from mlsys.features.feature_log import FeatureLoggingConfig
from mlsys.monitor.config import OnlineStatisticsConfig
from mlsys.serve.release import ReleasePolicy


class Graph(str, Enum):
    """``serve.graph``: how a model version is laid out on Serve (docs/serving.md, "The graph").

    split: ingress -> embedding deployment (CPU replicas holding the table) -> dense deployment (batched; a GPU where given).
    fused: the same code in the ingress replica. auto: split when the dense deployment is given a GPU, else fused.
    """

    auto = "auto"
    split = "split"
    fused = "fused"


class Proxy(str, Enum):
    """``serve.proxy``: what takes HTTP in front of the ingress replicas (docs/serving.md, "The proxy").

    ray: Serve's own Python proxy, one hop (an actor call) before the ingress replica. haproxy: Ray Serve's
    HAProxy with direct ingress (``RAY_SERVE_ENABLE_HA_PROXY``): each ingress replica answers HTTP itself, HAProxy
    balances over them; no Python proxy and no extra hop; with it, Ray Serve's throughput-optimized mode
    (``RAY_SERVE_THROUGHPUT_OPTIMIZED``). Chosen when Ray starts (the embedded Ray takes both from here; a cluster's
    nodes must be started with ``RAY_SERVE_ENABLE_HA_PROXY=1``, and should be with ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``).
    """

    ray = "ray"
    haproxy = "haproxy"


@dataclass
class AutoscalingConfig:
    """Ray Serve's ``autoscaling_config`` for one deployment; off unless ``max_replicas`` is set
    (``serve.dense.autoscaling.max_replicas=4``), when it replaces ``num_replicas``."""

    min_replicas: int = 1
    max_replicas: int = 0  # 0: autoscaling off
    target_ongoing_requests: float = 8.0
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0
    look_back_period_s: float = 30.0  # Serve's: ongoing requests are averaged over it, and recorded every 0.2x of it (<= 10 s)

    def check(self, name: str) -> None:
        from mlsys.config import require

        if self.max_replicas:
            require(1 <= self.min_replicas <= self.max_replicas, f"serve.{name}.autoscaling.min_replicas", self.min_replicas,
                    f"in [1, serve.{name}.autoscaling.max_replicas={self.max_replicas}]")
            require(self.target_ongoing_requests > 0, f"serve.{name}.autoscaling.target_ongoing_requests",
                    self.target_ongoing_requests, "> 0")
            require(self.look_back_period_s > 0, f"serve.{name}.autoscaling.look_back_period_s", self.look_back_period_s, "> 0 seconds")


@dataclass
class DeploymentConfig:
    """One deployment's replicas and resources: ``serve.dense.num_gpus=1 serve.embedding.num_replicas=2``.

    ``memory`` (bytes) and ``resources`` (custom resources, ``serve.dense.resources={gpu_node: 1}`` to put
    the replicas on nodes that have it) go into each replica's ``ray_actor_options`` as well.
    """

    num_replicas: int = 1
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    max_ongoing_requests: int = 64
    memory: Optional[int] = None
    resources: Dict[str, float] = field(default_factory=dict)
    autoscaling: AutoscalingConfig = field(default_factory=AutoscalingConfig)

    def check(self, name: str) -> None:
        from mlsys.config import require, require_custom_resources

        require(self.num_replicas >= 1, f"serve.{name}.num_replicas", self.num_replicas, ">= 1")
        require(self.num_cpus >= 0, f"serve.{name}.num_cpus", self.num_cpus, ">= 0")
        require(self.num_gpus >= 0, f"serve.{name}.num_gpus", self.num_gpus, ">= 0")
        require(self.max_ongoing_requests >= 1, f"serve.{name}.max_ongoing_requests", self.max_ongoing_requests, ">= 1")
        require(self.memory is None or self.memory > 0, f"serve.{name}.memory", self.memory, "> 0 bytes, or null")
        require_custom_resources(self.resources, f"serve.{name}.resources",
                                 {"CPU": f"serve.{name}.num_cpus", "GPU": f"serve.{name}.num_gpus", "memory": f"serve.{name}.memory"})
        self.autoscaling.check(name)

    def options(self) -> dict:
        """``Deployment.options(**...)``."""
        from dataclasses import asdict

        scale = {"autoscaling_config": asdict(self.autoscaling)} if self.autoscaling.max_replicas else {"num_replicas": self.num_replicas}
        actor: dict = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory is not None:
            actor["memory"] = self.memory
        if self.resources:
            actor["resources"] = dict(self.resources)
        return {**scale, "max_ongoing_requests": self.max_ongoing_requests, "ray_actor_options": actor}


@dataclass
class BatchingConfig:
    """Dynamic batching of the scoring deployment, up to ``max_batch_size`` requests a call. The split
    graph's dense deployment uses ``@serve.batch``: requests arriving within ``wait_s`` of each other
    are scored in one call. The fused graph's ingress scores together the requests that reach it in
    one turn of its event loop (:mod:`mlsys.serve.coalesce`), with no wait, so ``wait_s`` is not
    used there."""

    enabled: bool = True
    max_batch_size: int = 16
    wait_s: float = 0.002

    def __post_init__(self):
        from mlsys.config import require

        require(self.max_batch_size >= 1, "serve.batching.max_batch_size", self.max_batch_size, ">= 1")
        require(0 <= self.wait_s <= 1, "serve.batching.wait_s", self.wait_s, "in [0, 1] seconds")


@dataclass
class ReleaseConfig:
    """How a running app follows the registry (docs/releases.md): ``serve.model=ctr@champion`` is
    followed; ``ctr/3`` or a package path is pinned."""

    # Seconds between two reads of the registry (the alias, a release's candidate and split).
    poll_s: float = 5.0
    # Shadow releases: the top-k overlap of the two variants' rankings is over this many items.
    shadow_top_k: int = 10
    # The embedding and dense deployments keep this many versions loaded (a switch serves both).
    keep_versions: int = 3
    policy: ReleasePolicy = field(default_factory=ReleasePolicy)

    def __post_init__(self):
        from mlsys.config import require

        require(self.poll_s > 0, "serve.release.poll_s", self.poll_s, "> 0 seconds")
        require(self.shadow_top_k >= 1, "serve.release.shadow_top_k", self.shadow_top_k, ">= 1")
        require(self.keep_versions >= 2, "serve.release.keep_versions", self.keep_versions, ">= 2 (the old and the new)")


@dataclass
class ServeConfig:
    """``mlsys serve serve.model=ctr@champion serve.port=8000 serve.graph=split``."""

    # A registered model `name@alias` or `name/version`, or a package URI.
    model: str = "ctr@champion"
    app_name: str = "ranking"
    # Where the app's routes live on the Serve proxy ("/": /v1/rank; "/b": /b/v1/rank beside another app).
    route_prefix: str = "/"
    # Bound to loopback by default: Ray's own ports listen on every interface.
    host: str = "127.0.0.1"
    port: int = 8000
    graph: Graph = Graph.auto
    proxy: Proxy = Proxy.ray
    ingress: DeploymentConfig = field(default_factory=DeploymentConfig)
    embedding: DeploymentConfig = field(default_factory=DeploymentConfig)
    dense: DeploymentConfig = field(default_factory=DeploymentConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    # ONNX Runtime execution providers for the dense part, best first; those not installed are skipped, CPU is last.
    providers: list[str] = field(default_factory=lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    max_candidates: int = 1000
    # DIN and bst_cached in the fused graph: the user side encoded once per request, and kept per user
    # (and version of the user's inputs) for this many users; 0 turns the cache off (still once per request).
    user_cache_size: int = 10000
    # v2 infer: at most this many (user, item) rows per call.
    max_rows: int = 10000
    # A request body above this many bytes is refused (413) before it is read whole.
    max_body_bytes: int = 4 * 1024 * 1024
    # Serve's log level; INFO includes one access-log line per request.
    log_level: str = "INFO"
    # What serving used (features, model version, scores), sampled, to Parquet (docs/serving.md).
    feature_logging: FeatureLoggingConfig = field(default_factory=FeatureLoggingConfig)
    # What serving scored, sketched per window for skew and drift (docs/monitoring.md; the path is `<home>/monitor`).
    monitoring: OnlineStatisticsConfig = field(default_factory=OnlineStatisticsConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)

    def __post_init__(self):
        from mlsys.config import require

        self.graph = Graph(self.graph)
        require(self.proxy in tuple(p.value for p in Proxy), "serve.proxy", self.proxy, "ray or haproxy")
        self.proxy = Proxy(self.proxy)
        require(1 <= self.port <= 65535, "serve.port", self.port, "a TCP port (1-65535)")
        require(self.route_prefix.startswith("/"), "serve.route_prefix", self.route_prefix, "a path starting with /")
        for name in ("ingress", "embedding", "dense"):
            getattr(self, name).check(name)
        require(self.max_candidates >= 1, "serve.max_candidates", self.max_candidates, ">= 1")
        require(self.user_cache_size >= 0, "serve.user_cache_size", self.user_cache_size, ">= 0")
        require(self.max_rows >= 1, "serve.max_rows", self.max_rows, ">= 1")
        require(self.max_body_bytes >= 1024, "serve.max_body_bytes", self.max_body_bytes, ">= 1024")
        levels = ("DEBUG", "INFO", "WARNING", "ERROR")
        require(self.log_level in levels, "serve.log_level", self.log_level, f"one of {levels}")

    def resolved_graph(self) -> Graph:
        """What ``auto`` means here: split only when the dense deployment has a GPU; on CPU the hops only cost
        (docs/serving.md has the measurement)."""
        if self.graph is not Graph.auto:
            return self.graph
        return Graph.split if self.dense.num_gpus > 0 else Graph.fused
