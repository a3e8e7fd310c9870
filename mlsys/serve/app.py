"""Ray Serve edge: the ranking application and its builder.

``build_app(ServeConfig, package_uri, model_name, version, store, log_dir) -> Application``;
the app is a single deployment today (FastAPI ingress + in-process ONNX
Runtime); the split CPU-embedding / GPU-dense graph binds more deployments
into the same builder. With an online store (``features=feast``) request
features come from it and ``POST /v1/events`` updates it; without one, from
the model package's tables. Each replica logs what it scored
(:mod:`mlsys.features.feature_log`) and counts requests, unknown users and
items (Ray Serve metrics, and ``GET /v1/metrics`` for this replica).
"""

# No `from __future__ import annotations` here: FastAPI reads the request
# models from real annotations on the Serve-wrapped methods.
import socket
import threading
import uuid
from dataclasses import asdict, dataclass
from typing import Optional, Union

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from mlsys.errors import InvalidRequestError, PortInUseError
from mlsys.features.feature_log import FeatureLoggingConfig
from mlsys.serve.config import ServeConfig


class RankRequest(BaseModel):
    user_id: int = Field(description="The user to rank for; unknown users get default features.")
    candidates: list[int] = Field(min_length=1, description="Candidate item ids.")
    k: Optional[int] = Field(default=None, ge=1, description="Return only the best k.")
    context: dict[str, Union[str, float, int, list[Union[str, float, int]], None]] = Field(
        default_factory=dict, description="The request's own features (the data set's event features, e.g. "
        "{\"device\": \"ios\"}), checked against the model's feature schema; one not given is missing.")
    request_id: Optional[str] = Field(default=None, max_length=128, description="Your id for this request (joins the feature log with labels); default: a new UUID.")


class ScoredItemOut(BaseModel):
    item_id: int
    score: float


class RankResponse(BaseModel):
    user_id: int
    items: list[ScoredItemOut]
    model: str
    version: Optional[str]
    unknown_user: bool
    unknown_items: int
    request_id: str


class EventRequest(BaseModel):
    user_id: int
    item_id: int
    rating: Optional[float] = Field(default=None, description="A rating at or above data.click_threshold is a click.")
    clicked: Optional[bool] = Field(default=None, description="Overrides the rating's click.")
    timestamp: Optional[float] = Field(default=None, description="Event time, Unix seconds; default: now.")


class EventResponse(BaseModel):
    user_id: int
    clicked: bool
    history: list[int]
    aggregates: dict[str, Optional[float]]


@dataclass
class ServiceCounters:
    """This replica's counts since it started (``GET /v1/metrics``)."""

    requests: int = 0
    unknown_users: int = 0
    unknown_items: int = 0
    events: int = 0


api = FastAPI(title="mlsys ranking", version="1")


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
@serve.ingress(api)
class RankingService:
    def __init__(
        self,
        package_uri: str,
        model_name: str,
        version: Optional[str],
        max_candidates: int,
        store=None,  # Optional[mlsys.features.serving.OnlineStoreSpec]
        logging: Optional[FeatureLoggingConfig] = None,
        log_dir: Optional[str] = None,
    ):
        from ray.serve import metrics

        from mlsys.features.feature_log import FeatureLogger
        from mlsys.registry.package import read_package
        from mlsys.serve.ranker import RankingModel

        features, self.pusher = store.open() if store is not None else (None, None)
        self.model_name = model_name
        self.ranker = RankingModel(read_package(package_uri), engine="onnx", version=version, max_candidates=max_candidates, features=features)
        self.logger = FeatureLogger(logging, log_dir) if logging is not None and logging.enabled and log_dir else None
        self.counters = ServiceCounters()
        self._lock = threading.Lock()
        self._metrics = {
            name: metrics.Counter(f"mlsys_{name}", description=f"mlsys ranking: {name.replace('_', ' ')}", tag_keys=("model",))
            for name in asdict(self.counters)
        }
        for counter in self._metrics.values():
            counter.set_default_tags({"model": model_name})  # a fresh dict each: Serve adds its tags to it

    def _count(self, **increments: int) -> None:
        with self._lock:
            for name, n in increments.items():
                setattr(self.counters, name, getattr(self.counters, name) + n)
        for name, n in increments.items():
            if n:
                self._metrics[name].inc(n)

    @api.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok", "model": self.model_name, "version": self.ranker.version}

    @api.get("/v1/metrics")
    def metrics(self) -> dict:
        """This replica's counters (Prometheus has every replica's as ``ray_mlsys_*``)."""
        with self._lock:
            out = asdict(self.counters)
        out["feature_source"] = "online_store" if self.pusher is not None else "package_tables"
        out["feature_log"] = asdict(self.logger.counters) if self.logger is not None else None
        return out

    @api.post("/v1/rank")
    def rank(self, request: RankRequest) -> RankResponse:
        request_id = request.request_id or uuid.uuid4().hex
        try:
            ranking = self.ranker.rank(request.user_id, request.candidates, request.k, request.context)
        except InvalidRequestError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None
        self._count(requests=1, unknown_users=int(ranking.unknown_user), unknown_items=ranking.unknown_items)
        if self.logger is not None:
            from mlsys.features.feature_log import LoggedRequest

            self.logger.log(LoggedRequest(request_id, self.model_name, self.ranker.version, ranking.features, ranking.scores))
        return RankResponse(
            user_id=request.user_id,
            items=[ScoredItemOut(item_id=i.item_id, score=i.score) for i in ranking.items],
            model=self.model_name,
            version=self.ranker.version,
            unknown_user=ranking.unknown_user,
            unknown_items=ranking.unknown_items,
            request_id=request_id,
        )

    @api.post("/v1/events")
    def events(self, event: EventRequest) -> EventResponse:
        from datetime import datetime, timezone

        from mlsys.features.push import Interaction

        if self.pusher is None:
            raise HTTPException(status_code=409, detail="POST /v1/events updates the online feature store; serve with features=feast")
        if event.rating is None and event.clicked is None:
            raise HTTPException(status_code=422, detail="an event needs `rating` or `clicked`")
        at = datetime.fromtimestamp(event.timestamp, timezone.utc) if event.timestamp is not None else None
        result = self.pusher.push(Interaction(event.user_id, event.item_id, event.rating, event.clicked, at))
        self._count(events=1)
        return EventResponse(user_id=result.user_id, clicked=result.clicked, history=result.history, aggregates=result.aggregates)

    def __del__(self):
        # Serve deletes the replica on shutdown: write what the feature log still holds.
        if getattr(self, "logger", None) is not None:
            self.logger.close(timeout=10)


def build_app(
    cfg: ServeConfig,
    package_uri: str,
    model_name: str,
    version: Optional[str],
    store=None,
    log_dir: Optional[str] = None,
) -> Application:
    """``store``: an :class:`~mlsys.features.serving.OnlineStoreSpec` (features from the online
    store) or None (from the package's tables); ``log_dir``: where the feature log goes."""
    return RankingService.options(num_replicas=cfg.num_replicas, logging_config={"log_level": cfg.log_level}).bind(
        package_uri, model_name, version, cfg.max_candidates, store, cfg.feature_logging, log_dir
    )


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise PortInUseError(host, port) from None


def start(cfg: ServeConfig, package_uri: str, model_name: str, version: Optional[str], store=None, log_dir: Optional[str] = None) -> str:
    """Deploy on the connected Ray cluster; returns the base URL."""
    import logging

    logging.getLogger("ray.serve").setLevel(cfg.log_level)
    serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config={"log_level": cfg.log_level})
    serve.run(build_app(cfg, package_uri, model_name, version, store, log_dir), name=cfg.app_name, route_prefix="/")
    return f"http://{cfg.host}:{cfg.port}"
