"""Ray Serve edge: the inference graph and its builder (docs/serving.md, "The graph").

``build_app(ServeConfig, package_uri, model_name, version, store, log_dir) -> Application``
binds one model version's deployments, which always move together:

- split: ``Ingress.bind(Embedding.bind(), Dense.bind())``. The ingress (FastAPI) checks the
  request, fetches features (the online store or the package's tables) and encodes them
  with the package's preprocessor; the embedding deployment (CPU replicas holding the table)
  looks them up; the dense deployment scores them, requests batched by ``@serve.batch``,
  ONNX Runtime on a GPU where given. The dense deployment refuses rows embedded by another
  package (:class:`mlsys.serve.graph.DenseStage`).
- fused: ``Ingress.bind()``: the same code in one replica (the fused ONNX graph, batched).

Routes: ``POST /v1/rank``, ``POST /v1/events`` (online store only), ``GET /healthz``,
``GET /v1/metrics`` and the KServe v2 protocol (:mod:`mlsys.serve.v2`). Each replica
logs what it scored (:mod:`mlsys.features.feature_log`) and exports its metrics
(:mod:`mlsys.serve.metrics`).
"""

# No `from __future__ import annotations` here: FastAPI reads the request
# models from real annotations on the Serve-wrapped methods.
import asyncio
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Optional, Union

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from mlsys.errors import InvalidRequestError, PortInUseError, VersionMismatchError
from mlsys.features.feature_log import FeatureLoggingConfig
from mlsys.serve.config import Graph, ServeConfig

INT64 = dict(ge=-(2**63), le=2**63 - 1)
Id = Annotated[int, Field(strict=True, **INT64)]  # an id is a JSON integer: not true, not 2.5, not "7"


class RankRequest(BaseModel):
    user_id: Id = Field(description="The user to rank for; unknown users get default features.")
    candidates: list[Id] = Field(min_length=1, description="Candidate item ids (at most serve.max_candidates).")
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
    user_id: Id
    item_id: Id
    rating: Optional[float] = Field(default=None, allow_inf_nan=False, description="A rating at or above data.click_threshold is a click.")
    clicked: Optional[bool] = Field(default=None, description="Overrides the rating's click.")
    timestamp: Optional[float] = Field(default=None, ge=0, allow_inf_nan=False, description="Event time, Unix seconds; default: now.")


class EventResponse(BaseModel):
    user_id: int
    clicked: bool
    history: list[int]
    aggregates: dict[str, Optional[float]]


class ErrorOut(BaseModel):
    detail: Any = Field(description="What was wrong, naming the field.")


# The KServe v2 protocol's bodies, for the OpenAPI docs (the infer route parses the raw body itself:
# the binary tensor extension puts bytes after the JSON).
class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[dict[str, Any]] = None
    data: Optional[list[Any]] = None


class V2RequestedOutput(BaseModel):
    name: str
    parameters: Optional[dict[str, Any]] = None


class V2InferRequest(BaseModel):
    id: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    inputs: list[V2Tensor]
    outputs: Optional[list[V2RequestedOutput]] = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: Optional[str] = None
    id: Optional[str] = None
    outputs: list[V2Tensor]


class V2ErrorBody(BaseModel):
    error: str


V2_ERRORS = {400: {"model": V2ErrorBody}, 404: {"model": V2ErrorBody}, 413: {"model": V2ErrorBody}}
V1_ERRORS = {400: {"model": ErrorOut}, 413: {"model": ErrorOut}}


@dataclass
class ServiceCounters:
    """This replica's counts since it started (``GET /v1/metrics``)."""

    requests: int = 0
    unknown_users: int = 0
    unknown_items: int = 0
    events: int = 0


api = FastAPI(title="mlsys ranking", version="1", description="Ranking (`/v1`) and the KServe v2 / Open Inference Protocol (`/v2`).")


def _error(path: str, status: int, message: Any) -> JSONResponse:
    """v2 routes answer ``{"error": ...}`` (the protocol's body), the others ``{"detail": ...}`` (FastAPI's)."""
    if path.startswith("/v2"):
        return JSONResponse({"error": message if isinstance(message, str) else str(message)}, status_code=status)
    return JSONResponse({"detail": message}, status_code=status)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError):
    return _error(request.url.path, 422, exc.errors() if not request.url.path.startswith("/v2") else
                  "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))


@api.exception_handler(InvalidRequestError)
async def _bad_request(request: Request, exc: InvalidRequestError):
    return _error(request.url.path, 400, str(exc))


@api.exception_handler(HTTPException)
async def _http(request: Request, exc: HTTPException):
    return _error(request.url.path, exc.status_code, exc.detail)


@api.middleware("http")
async def _guard(request: Request, call_next):
    """Refuse an oversized body from its Content-Length before reading it; count every 4xx/5xx answer
    (one Ingress per replica process: :data:`mlsys.serve.metrics.REPLICA`)."""
    from mlsys.serve.metrics import REPLICA

    limit = REPLICA.max_body_bytes
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        response = _error(request.url.path, 413, f"the request body has {length} bytes, above serve.max_body_bytes={limit}")
    else:
        try:
            response = await call_next(request)
        except Exception as e:  # a bug of ours: still a JSON answer, logged with its traceback, and counted
            import logging

            logging.getLogger("ray.serve").exception("unhandled error on %s", request.url.path)
            response = _error(request.url.path, 500, f"internal error ({type(e).__name__}); see the replica's log")
    if response.status_code >= 400 and REPLICA.metrics is not None:
        REPLICA.metrics.count("errors", route=_route(request.url.path), status=str(response.status_code))
    return response


def _route(path: str) -> str:
    """A bounded label for a path (model names and versions in /v2 paths are not labels)."""
    if path.startswith("/v2/models/"):
        return "/v2/infer" if path.endswith("/infer") else "/v2/models"
    return path if path in ("/v1/rank", "/v1/events", "/healthz", "/v1/metrics", "/v2") else "other"


def _batched(method, cfg: ServeConfig):
    """The deployment's scoring method with dynamic batching on (serve.batching)."""
    method.set_max_batch_size(cfg.batching.max_batch_size)
    method.set_batch_wait_timeout_s(cfg.batching.wait_s)
    return method


@serve.deployment
class Embedding:
    """The sparse half: holds the embedding table (CPU), encoded inputs -> :class:`~mlsys.serve.graph.Embedded`."""

    def __init__(self, package_uri: str, model_name: str, version: Optional[str]):
        from mlsys.registry.package import read_package
        from mlsys.serve.graph import EmbeddingStage
        from mlsys.serve.metrics import ServingMetrics

        self.stage = EmbeddingStage(read_package(package_uri))
        self.metrics = ServingMetrics(model_name, version)

    def lookup(self, inputs: dict):
        with self.metrics.timed("embedding"):
            return self.stage(inputs)


@serve.deployment
class Dense:
    """The dense half: ``dense.onnx`` (a GPU's execution provider where given), requests batched."""

    def __init__(self, package_uri: str, model_name: str, version: Optional[str], cfg: ServeConfig):
        from mlsys.registry.package import read_package
        from mlsys.serve.graph import DenseStage
        from mlsys.serve.metrics import ServingMetrics

        self.stage = DenseStage(read_package(package_uri), providers=list(cfg.providers))
        self.metrics = ServingMetrics(model_name, version)
        self.batching = cfg.batching.enabled
        _batched(self._score_batch, cfg)

    async def score(self, embedded):
        if self.batching:
            return await self._score_batch(embedded)
        return self._score([embedded])[0]

    @serve.batch
    async def _score_batch(self, batch: list):
        return self._score(batch)

    def _score(self, batch: list) -> list:
        self.metrics.batch("dense", len(batch))
        with self.metrics.timed("dense"):
            return self.stage.score(batch)


@serve.deployment
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        package_uri: str,
        model_name: str,
        version: Optional[str],
        cfg: ServeConfig,
        store=None,  # Optional[mlsys.features.serving.OnlineStoreSpec]
        log_dir: Optional[str] = None,
        embedding=None,  # DeploymentHandle of Embedding (split graph)
        dense=None,  # DeploymentHandle of Dense (split graph)
    ):
        from mlsys.features.feature_log import FeatureLogger
        from mlsys.registry.package import read_package
        from mlsys.serve.graph import FusedStage, package_identity, user_side_scorer
        from mlsys.serve.metrics import ServingMetrics
        from mlsys.serve.ranker import RankingModel
        from mlsys.serve.v2 import Signature

        features, self.pusher = store.open() if store is not None else (None, None)
        self.model_name, self.cfg = model_name, cfg
        package = read_package(package_uri)
        self.ranker = RankingModel(package, engine="onnx", version=version, max_candidates=cfg.max_candidates, features=features)
        self.identity = package_identity(package)
        self.signature = Signature.of(package.preprocessor.schema)
        self.graph = Graph.split if dense is not None else Graph.fused
        self.embedding, self.dense = embedding, dense
        self.fused = FusedStage(self.ranker.scorer)
        self.user_side = user_side_scorer(package, cfg.user_cache_size) if self.graph is Graph.fused else None
        logging = cfg.feature_logging
        self.logger = FeatureLogger(logging, log_dir) if logging is not None and logging.enabled and log_dir else None
        self.counters = ServiceCounters()
        self._lock = threading.Lock()
        self.metrics = ServingMetrics(model_name, version)
        from mlsys.serve.metrics import REPLICA

        REPLICA.max_body_bytes, REPLICA.metrics = cfg.max_body_bytes, self.metrics
        _batched(self._fused_batch, cfg)

    # -- scoring: the graph ---------------------------------------------------------------

    async def _score(self, parts: list, users: Optional[list] = None) -> list:
        """Scores of encoded requests (``[inputs, ...]``, of ``users``) through this version's graph."""
        if self.user_side is not None and users is not None:  # each user's side once (or from the cache)
            return [self._score_user_side(user, inputs) for user, inputs in zip(users, parts)]
        if self.graph is Graph.split:  # one embedding call and one dense call for all parts
            from mlsys.serve.graph import concat_rows, split_rows

            tensors, sizes = concat_rows(parts)
            return split_rows(await self.dense.score.remote(self.embedding.lookup.remote(tensors)), sizes)
        if self.cfg.batching.enabled:  # each part joins the replica's batch queue
            return list(await asyncio.gather(*(self._fused_batch(p) for p in parts)))
        return self._fused(parts)

    def _score_user_side(self, user_id: int, inputs: dict):
        from mlsys.models import MODEL_INPUTS

        stats = self.user_side.cache.stats
        hits, misses = stats.hits, stats.misses
        with self.metrics.timed("score"):
            scores = self.user_side.score(*(inputs[k] for k in MODEL_INPUTS), user_id=user_id if self.cfg.user_cache_size else None)
        self._count("", cache_hits=stats.hits - hits, cache_misses=stats.misses - misses)
        return scores

    @serve.batch
    async def _fused_batch(self, batch: list):
        return self._fused(batch)

    def _fused(self, batch: list) -> list:
        self.metrics.batch("score", len(batch))
        with self.metrics.timed("score"):
            return self.fused.score(batch)

    def _count(self, route: str, **increments: int) -> None:
        with self._lock:
            for name, n in increments.items():
                if hasattr(self.counters, name):
                    setattr(self.counters, name, getattr(self.counters, name) + n)
        for name, n in increments.items():
            self.metrics.count(name, n, route=route)  # errors are counted by the middleware

    # -- routes ------------------------------------------------------------------------------

    @api.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok", "model": self.model_name, "version": self.ranker.version, "graph": self.graph.value}

    @api.get("/v1/metrics")
    def metrics_v1(self) -> dict:
        """This replica's counters (Prometheus has every replica's as ``ray_mlsys_*``)."""
        with self._lock:
            out = asdict(self.counters)
        out["feature_source"] = "online_store" if self.pusher is not None else "package_tables"
        out["feature_log"] = asdict(self.logger.counters) if self.logger is not None else None
        out["graph"] = self.graph.value
        cache = self.user_side.cache if self.user_side is not None else None
        out["user_cache"] = {**asdict(cache.stats), "users": len(cache)} if cache is not None else None
        return out

    @api.post("/v1/rank", responses=V1_ERRORS)
    async def rank(self, request: RankRequest) -> RankResponse:
        start = time.perf_counter()
        request_id = request.request_id or uuid.uuid4().hex
        try:
            with self.metrics.timed("features"):
                encoded = self.ranker.encode(request.user_id, request.candidates, request.context)
            scores = (await self._score([encoded.inputs], [request.user_id]))[0]
        except VersionMismatchError as e:
            raise HTTPException(status_code=503, detail=str(e)) from None
        ranking = self.ranker.ranking(encoded, scores, request.k)
        self._count("/v1/rank", requests=1, unknown_users=int(ranking.unknown_user), unknown_items=ranking.unknown_items)
        self.metrics.rows(len(request.candidates))
        if self.logger is not None:
            from mlsys.features.feature_log import LoggedRequest

            self.logger.log(LoggedRequest(request_id, self.model_name, self.ranker.version, ranking.features, ranking.scores))
        self.metrics.latency("request", (time.perf_counter() - start) * 1000.0)
        return RankResponse(
            user_id=request.user_id,
            items=[ScoredItemOut(item_id=i.item_id, score=i.score) for i in ranking.items],
            model=self.model_name,
            version=self.ranker.version,
            unknown_user=ranking.unknown_user,
            unknown_items=ranking.unknown_items,
            request_id=request_id,
        )

    @api.post("/v1/events", responses={409: {"model": ErrorOut}})
    def events(self, event: EventRequest) -> EventResponse:
        from datetime import datetime, timezone

        from mlsys.features.push import Interaction

        if self.pusher is None:
            raise HTTPException(status_code=409, detail="POST /v1/events updates the online feature store; serve with features=feast")
        if event.rating is None and event.clicked is None:
            raise HTTPException(status_code=422, detail="an event needs `rating` or `clicked`")
        at = datetime.fromtimestamp(event.timestamp, timezone.utc) if event.timestamp is not None else None
        result = self.pusher.push(Interaction(event.user_id, event.item_id, event.rating, event.clicked, at))
        if self.user_side is not None:  # the history changed: drop the user's cached side now
            self.user_side.cache.invalidate(event.user_id)
        self._count("/v1/events", events=1)
        return EventResponse(user_id=result.user_id, clicked=result.clicked, history=result.history, aggregates=result.aggregates)

    # -- the KServe v2 / Open Inference Protocol ----------------------------------------------

    @api.get("/v2")
    def v2_server(self) -> dict:
        from mlsys._version import __version__

        return {"name": "mlsys", "version": __version__, "extensions": ["binary_tensor_data"]}

    @api.get("/v2/health/live")
    def v2_live(self) -> dict:
        return {"live": True}

    @api.get("/v2/health/ready")
    def v2_ready(self) -> dict:
        return {"ready": True}

    def _model(self, name: str, version: Optional[str]) -> None:
        if name != self.model_name:
            raise HTTPException(status_code=404, detail=f"model {name!r} is not served here; this server serves {self.model_name!r}")
        if version is not None and version != str(self.ranker.version):
            raise HTTPException(status_code=404, detail=f"model {name!r} version {version!r} is not served here; it serves version {self.ranker.version!r}")

    @api.get("/v2/models/{name}", responses=V2_ERRORS)
    @api.get("/v2/models/{name}/versions/{version}", responses=V2_ERRORS)
    def v2_metadata(self, name: str, version: Optional[str] = None) -> dict:
        from mlsys.serve.v2 import model_metadata

        self._model(name, version)
        return model_metadata(self.model_name, [str(self.ranker.version)], self.signature)

    @api.get("/v2/models/{name}/ready", responses=V2_ERRORS)
    @api.get("/v2/models/{name}/versions/{version}/ready", responses=V2_ERRORS)
    def v2_model_ready(self, name: str, version: Optional[str] = None) -> dict:
        self._model(name, version)
        return {"name": self.model_name, "ready": True}

    @api.post("/v2/models/{name}/infer", response_model=V2InferResponse, responses=V2_ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": V2InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}})
    @api.post("/v2/models/{name}/versions/{version}/infer", response_model=V2InferResponse, responses=V2_ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": V2InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}})
    async def v2_infer(self, name: str, request: Request, version: Optional[str] = None):
        from mlsys.serve.v2 import HEADER, ITEM, USER, infer_response, parse_infer, row_groups, scatter

        start = time.perf_counter()
        self._model(name, version)
        try:
            parsed = parse_infer(await request.body(), request.headers.get(HEADER), self.signature, self.cfg.max_rows)
            with self.metrics.timed("features"):
                groups = row_groups(parsed, self.ranker.package.preprocessor.schema)
                encoded = [self.ranker.encode(g.user_id, parsed.inputs[ITEM][g.rows], g.context) for g in groups]
            per_group = await self._score([e.inputs for e in encoded], [g.user_id for g in groups])
        except VersionMismatchError as e:
            raise HTTPException(status_code=503, detail=str(e)) from None
        scores = scatter(groups, per_group, len(parsed.inputs[USER]))
        self._count("/v2/infer", requests=1, unknown_users=sum(int(e.unknown_user) for e in encoded),
                    unknown_items=sum(e.unknown_items for e in encoded))
        self.metrics.rows(len(scores))
        content, header_length = infer_response(self.model_name, str(self.ranker.version), parsed, scores)
        self.metrics.latency("request", (time.perf_counter() - start) * 1000.0)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream", headers={HEADER: str(header_length)})

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
    store) or None (from the package's tables); ``log_dir``: where the feature log goes.
    The graph is ``cfg.resolved_graph()`` (``serve.graph``)."""
    logging = {"logging_config": {"log_level": cfg.log_level}}
    ingress = Ingress.options(**cfg.ingress.options(), **logging)
    if cfg.resolved_graph() is Graph.fused:
        return ingress.bind(package_uri, model_name, version, cfg, store, log_dir)
    embedding = Embedding.options(**cfg.embedding.options(), **logging).bind(package_uri, model_name, version)
    dense = Dense.options(**cfg.dense.options(), **logging).bind(package_uri, model_name, version, cfg)
    return ingress.bind(package_uri, model_name, version, cfg, store, log_dir, embedding, dense)


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
    serve.run(build_app(cfg, package_uri, model_name, version, store, log_dir), name=cfg.app_name, route_prefix=cfg.route_prefix)
    return f"http://{cfg.host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"
