"""Ray Serve edge: the inference graph and its builder (docs/serving.md, "The graph").

``build_app(ServeConfig, package_uri, model_name, version, store, log_dir) -> Application``
binds one model version's deployments, which always move together:

- split: ``Ingress.bind(Embedding.bind(), Dense.bind())``. The ingress (FastAPI) checks the
  request, fetches features (the online store or the package's tables) and encodes them
  with the package's preprocessor; the embedding deployment (CPU replicas holding the table)
  looks them up; the dense deployment scores them, requests batched by ``@serve.batch``,
  ONNX Runtime on a GPU where given. The dense deployment refuses rows embedded by another
  package (:class:`mlsys.serve.graph.DenseStage`).
- fused: ``Ingress.bind()``: the same code in one replica (the fused ONNX graph); the requests that
  reach it in one turn of its event loop are scored in one call (:mod:`mlsys.serve.coalesce`).

Routes: ``POST /v1/rank``, ``POST /v1/events`` (online store only), ``GET /healthz``,
``GET /v1/metrics`` and the KServe v2 protocol (:mod:`mlsys.serve.v2`). Each replica
logs what it scored (:mod:`mlsys.features.feature_log`) and exports its metrics
(:mod:`mlsys.serve.metrics`).
"""

# No `from __future__ import annotations` here: FastAPI reads the request
# models from real annotations on the Serve-wrapped methods.
import asyncio
import gc
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Optional, Union

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from mlsys.errors import ConfigError, InvalidRequestError, VersionMismatchError
from mlsys.features.feature_log import FeatureLoggingConfig
from mlsys.serve.config import Graph, Proxy, ServeConfig

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
    timestamp: Optional[float] = Field(default=None, ge=0, le=4102444800, allow_inf_nan=False, description="Event time, Unix seconds up to 2100-01-01; default: now.")
    request_id: Optional[str] = Field(default=None, max_length=128, description=(
        "The /v1/rank answer this event is about (its request_id): the label joins exactly that impression; "
        "without it, the latest impression of the same user and item."))


class EventResponse(BaseModel):
    user_id: int
    clicked: bool
    labelled: bool = Field(description="Recorded as a label for online quality and online learning (serve.monitoring).")
    history: Optional[list[int]] = Field(default=None, description="The user's behaviour sequence now (features=feast).")
    aggregates: Optional[dict[str, Optional[float]]] = Field(default=None, description="The user's aggregates now (features=feast).")


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
    # FastAPI's own encoder: a validation error's `input` may be bytes (a body that is not JSON), which json.dumps refuses.
    return JSONResponse({"detail": jsonable_encoder(message)}, status_code=status)


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


class Guard:
    """The app's outer layer (plain ASGI: Starlette's ``BaseHTTPMiddleware`` cost ~0.25 ms a request,
    measured, in task groups and memory streams). Refuses an oversized body from its Content-Length
    before reading it; answers a bug of ours as a JSON 500 (logged with its traceback); counts every
    4xx/5xx answer with the metrics of the variant that answered (the handler leaves them in the
    request's ``state``), else the replica's (one Ingress per replica process: :data:`mlsys.serve.metrics.REPLICA`)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from mlsys.serve.metrics import REPLICA

        path, limit = scope["path"], REPLICA.max_body_bytes
        length = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > limit):
            response = _error(path, 413, f"the request body has {length} bytes, above serve.max_body_bytes={limit}")
            await response(scope, receive, send)
            return self._counted(scope, path, response.status_code)
        scope["state"] = dict(scope.get("state") or {})  # this request's own: the handler writes its metrics there
        status: list = []

        async def sent(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sent)
        except Exception as e:  # a bug of ours: still a JSON answer, logged with its traceback, and counted
            import logging

            logging.getLogger("ray.serve").exception("unhandled error on %s", path)
            if status:  # the answer had begun: nothing more can be sent on it
                raise
            response = _error(path, 500, f"internal error ({type(e).__name__}); see the replica's log")
            await response(scope, receive, send)
            status.append(response.status_code)
        if status:  # (none where the client went away before an answer began)
            self._counted(scope, path, status[0])

    @staticmethod
    def _counted(scope, path: str, status: int) -> None:
        from mlsys.serve.metrics import REPLICA

        metrics = (scope.get("state") or {}).get("metrics") or REPLICA.metrics  # the variant that answered, where one did
        if status >= 400 and metrics is not None:
            metrics.count("errors", route=_route(path), status=str(status))


api.add_middleware(Guard)


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


def _per_version(keys: list, batch: list, score) -> list:
    """A batch scored one version at a time (``score(key_index, items) -> results``): a version that
    fails answers its own requests with its exception (returned, raised by each caller), never the
    other version's requests in the same batch."""
    out: list = [None] * len(batch)
    for key in dict.fromkeys(keys):
        at = [i for i, k in enumerate(keys) if k == key]
        try:
            for i, result in zip(at, score(at[0], [batch[i] for i in at])):
                out[i] = result
        except Exception as e:  # noqa: BLE001 - handed back to exactly the requests of this version
            for i in at:
                out[i] = e
    return out


def _raised(results: list) -> list:
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


@dataclass(frozen=True)
class Follow:
    """The registry entry a running app follows (``serve.model=ctr@champion``): its alias and any
    release of it (docs/releases.md). None for a pinned version or a package path."""

    tracking_uri: str
    name: str
    alias: str


def _freeze_heap() -> None:
    """Keep what a replica holds for good (the loaded versions, the libraries) out of the garbage
    collector's full passes: each walked every object, a ~300 ms pause of the whole replica, which
    the feature log's and statistics' allocations on their threads set off every few seconds."""
    gc.collect()
    gc.freeze()


def _start_task(coro_fn) -> None:
    """Run ``coro_fn()`` on the replica's event loop (Serve runs a constructor inside it), or on a
    thread's own loop where there is none (a replica built outside Serve)."""
    try:
        asyncio.get_running_loop().create_task(coro_fn())
    except RuntimeError:
        threading.Thread(target=lambda: asyncio.run(coro_fn()), daemon=True).start()


@serve.deployment
class Embedding:
    """The sparse half: holds the embedding tables of the versions in service (CPU), encoded inputs
    -> :class:`~mlsys.serve.graph.Embedded` of the package named."""

    def __init__(self, model_name: str, cfg: ServeConfig):
        from mlsys.registry.package import read_package
        from mlsys.serve.graph import EmbeddingStage, StageCache

        from mlsys.serve.metrics import MetricsByVersion

        self.stages = StageCache(lambda uri: EmbeddingStage(read_package(uri)), cfg.release.keep_versions)
        self.metrics_of = MetricsByVersion(model_name)

    def prepare(self, uri: str) -> str:
        """Load a version before it serves (a corrupt package raises here, not on a request)."""
        return self.stages(uri).identity

    def lookup(self, uri: str, version: str, inputs: dict):
        with self.metrics_of(version).timed("embedding"):
            return self.stages(uri)(inputs)


@serve.deployment
class Dense:
    """The dense half: ``dense.onnx`` of the versions in service (a GPU's execution provider where
    given), requests batched (a batch may hold two versions' rows while a release switches: each is
    scored by its own)."""

    def __init__(self, model_name: str, cfg: ServeConfig):
        from mlsys.registry.package import read_package
        from mlsys.serve.graph import DenseStage, StageCache

        from mlsys.serve.metrics import MetricsByVersion

        providers = list(cfg.providers)
        self.stages = StageCache(lambda uri: DenseStage(read_package(uri), providers=providers), cfg.release.keep_versions)
        self.metrics_of = MetricsByVersion(model_name)
        self.batching = cfg.batching.enabled
        _batched(self._score_batch, cfg)

    def prepare(self, uri: str) -> str:
        return self.stages(uri).identity

    async def score(self, uri: str, version: str, embedded):
        if self.batching:
            return await self._score_batch(uri, version, embedded)
        return _raised(self._score([uri], [version], [embedded]))[0]

    @serve.batch
    async def _score_batch(self, uris: list, versions: list, batch: list):
        return self._score(uris, versions, batch)

    def _score(self, uris: list, versions: list, batch: list) -> list:
        """One ONNX Runtime call per version in the batch (a failing one fails its own requests only)."""

        def score(first: int, items: list) -> list:
            metrics = self.metrics_of(versions[first])
            metrics.batch("dense", len(items))
            with metrics.timed("dense"):
                return self.stages(uris[first]).score(items)

        return _per_version(uris, batch, score)


@serve.deployment
class ReleaseController:
    """The release's one judge: every ingress replica sends it its windows of each variant's traffic;
    at the end of each ``serve.release.policy.window_s`` it merges them, asks the policy
    (:class:`~mlsys.serve.release.ReleasePolicy`) and writes the outcome to the registry, which every
    replica follows. Its state is the registry's: a restarted controller reads the count of healthy
    windows back from the release's window tag."""

    def __init__(self, follow: Follow, cfg: ServeConfig):
        self.follow, self.policy = follow, cfg.release.policy
        self.release = None  # (candidate, started_at) of the window being filled
        self._reset()

    def _reset(self) -> None:
        from mlsys.serve.release import ShadowWindow, VariantWindow

        self.champion, self.candidate, self.shadow = VariantWindow(), VariantWindow(), ShadowWindow()
        self.window_started = time.monotonic()

    def observe(self, candidate: str, started_at: float, mode: str, windows: dict) -> Optional[dict]:
        """One replica's windows since its last report; returns the decision when this report closed a window."""
        from mlsys.serve.release import ShadowWindow, VariantWindow

        if self.release != (candidate, started_at):
            self.release = (candidate, started_at)
            self._reset()
        self.champion = self.champion.merge(VariantWindow.from_dict(windows["champion"]))
        self.candidate = self.candidate.merge(VariantWindow.from_dict(windows["candidate"]))
        shadow = windows.get("shadow")
        if shadow:
            self.shadow = self.shadow.merge(ShadowWindow.from_dict(shadow))
        if time.monotonic() - self.window_started < self.policy.window_s:
            return None
        return self._decide(candidate, mode)

    def refused(self, candidate: str, reason: str) -> None:
        """An ingress replica could not load the candidate: the release is rolled back (the champion never stopped)."""
        from mlsys.registry import releases

        releases.rollback(self.follow.tracking_uri, self.follow.name, f"automatic: the package was refused ({reason})",
                          self.follow.alias, candidate)

    def _decide(self, candidate: str, mode: str) -> dict:
        from mlsys.registry import releases
        from mlsys.serve.release import Action, score_psi

        shadowing = mode == "shadow"
        champion, challenger = (self.shadow.champion, self.shadow.candidate) if shadowing else (self.champion, self.candidate)
        current = releases.read(self.follow.tracking_uri, self.follow.name, self.follow.alias)
        healthy = int((current.window or {}).get("healthy", 0)) if current.candidate == candidate else 0
        decision, healthy = self.policy.decide(champion, challenger, healthy)
        window = {"at": round(time.time(), 3), "window_s": self.policy.window_s, "healthy": healthy,
                  "decision": decision.action.value, "reason": decision.reason,
                  "champion": champion.summary(), "candidate": challenger.summary(),
                  "score_psi": round(score_psi(champion.scores, challenger.scores), 4)
                  if sum(champion.scores) and sum(challenger.scores) else None}
        if shadowing:
            window["shadow"] = {"requests": self.shadow.requests, "top_k_overlap": round(self.shadow.overlap, 4)}
        releases.record_window(self.follow.tracking_uri, self.follow.name, candidate, window)
        if decision.action is Action.promote:
            releases.promote(self.follow.tracking_uri, self.follow.name, f"automatic: {decision.reason}", self.follow.alias, candidate)
        elif decision.action is Action.rollback:
            releases.rollback(self.follow.tracking_uri, self.follow.name, f"automatic: {decision.reason}", self.follow.alias, candidate)
        import logging

        logging.getLogger("ray.serve").warning("release of %s version %s: %s (%s)", self.follow.name, candidate,
                                               decision.action.value, decision.reason)
        self._reset()
        return window


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
        follow: Optional[Follow] = None,
        controller=None,  # DeploymentHandle of ReleaseController (with follow)
    ):
        import os

        from mlsys.features.feature_log import FeatureLogger
        from mlsys.serve.metrics import REPLICA

        self.features, self.pusher = store.open() if store is not None else (None, None)
        self.model_name, self.cfg, self.follow = model_name, cfg, follow
        self.graph = Graph.split if dense is not None else Graph.fused
        self.embedding, self.dense, self.controller = embedding, dense, controller
        logging = cfg.feature_logging
        self.logger = FeatureLogger(logging, log_dir) if logging is not None and logging.enabled and log_dir else None
        self.sketcher = None  # online statistics (serve.monitoring), once the first version loaded
        self.counters = ServiceCounters()
        self._lock = threading.Lock()
        self.pid = os.getpid()
        self.loaded: dict = {}  # version -> ServedVersion: a switch back to a version is instant
        from mlsys.serve.metrics import MetricsByVersion

        self.metrics_of = MetricsByVersion(model_name)
        self.refused: dict = {}  # version -> why (a corrupt or unreadable package): not retried
        self.release = None  # the registry's Release this routing was built from (followed apps)
        self.switches = 0
        from mlsys.serve.release import Routing

        self.routing = Routing(self._load(package_uri, None if version is None else str(version)))
        self.metrics = self._metrics(self.routing.champion, "champion")
        self.metrics.serving(True)
        REPLICA.max_body_bytes, REPLICA.metrics = cfg.max_body_bytes, self.metrics
        monitoring = cfg.monitoring
        self.labels = None  # the label log of POST /v1/events (online quality, online learning)
        if monitoring.enabled and monitoring.path:
            from mlsys.monitor.labels import LabelLog
            from mlsys.monitor.online import WindowSketcher

            self.sketcher = WindowSketcher(monitoring, monitoring.path, model_name, kinds_of=self._training_kinds)
            self.labels = LabelLog(monitoring.path, model_name) if monitoring.labels else None
        self._new_windows()
        from mlsys.serve.coalesce import Coalescer

        self.coalescer = Coalescer(self._fused, cfg.batching.max_batch_size)  # serve.batching, the fused graph's
        if follow is not None:
            _start_task(self._follow)

    # -- versions: loading, following the registry -----------------------------------------

    def _load(self, uri: str, version: str):
        """A version's parts, built once (a checksum or read failure raises)."""
        from mlsys.serve.graph import ServedVersion

        if version not in self.loaded:
            self.loaded[version] = ServedVersion.load(uri, version, self.cfg.max_candidates, self.features,
                                                      self.cfg.user_cache_size, user_side=self.graph is Graph.fused)
            _freeze_heap()
        return self.loaded[version]

    async def _prepare(self, uri: str, version: str):
        served = await asyncio.to_thread(self._load, uri, version)
        if self.graph is Graph.split:  # the halves load before the version serves a request
            await self.embedding.prepare.remote(uri)
            await self.dense.prepare.remote(uri)
        return served

    def _training_kinds(self, version: str):
        served = self.loaded.get(version)
        return served.kinds if served is not None else None

    def _metrics(self, served, variant: str):
        return self.metrics_of(served.version, variant)

    async def _follow(self) -> None:
        """Every ``serve.release.poll_s``: read the registry, switch when it changed, report windows."""
        import logging

        log = logging.getLogger("ray.serve")
        while True:
            try:
                await self._sync()
            except Exception:  # the registry unreachable for a while: keep serving what serves, say so
                log.exception("reading the registry for %s@%s failed; serving version %s", self.follow.name,
                              self.follow.alias, self.routing.champion.version)
            await asyncio.sleep(self.cfg.release.poll_s)

    async def _sync(self) -> None:
        from mlsys.registry import releases
        from mlsys.serve.release import Mode, Routing

        release = await asyncio.to_thread(releases.read, self.follow.tracking_uri, self.follow.name, self.follow.alias)
        await self._report(release)
        if self.release is not None and release.key() == self.release.key():
            return
        champion = await self._version(release.champion)
        if champion is None:  # refused: the old champion keeps serving (and no release on top of a refused one)
            return
        candidate = await self._version(release.candidate) if release.candidate else None
        if release.candidate and candidate is None and self.controller is not None:  # a release that cannot load ends
            await self.controller.refused.remote(release.candidate, self.refused[release.candidate]["reason"])
        mode = Mode(release.mode) if candidate is not None and release.mode in ("canary", "shadow") else None
        old = self.routing
        self.routing = Routing(champion, candidate if mode else None, mode, release.percent, release.salt)  # one assignment: the switch
        self.release = release
        if (old.champion.version, getattr(old.candidate, "version", None)) != (champion.version, getattr(self.routing.candidate, "version", None)):
            self.switches += 1
            self._gauges(old, False)
            self._gauges(self.routing, True)
            self.metrics = self._metrics(champion, "champion")
            from mlsys.serve.metrics import REPLICA

            REPLICA.metrics = self.metrics
        import logging

        logging.getLogger("ray.serve").info("serving %s version %s%s", self.model_name, champion.version,
                                            f", version {candidate.version} in {mode.value} release ({release.percent:g}%)" if mode else "")

    def _gauges(self, routing, on: bool) -> None:
        self._metrics(routing.champion, "champion").serving(on)
        if routing.candidate is not None:
            self._metrics(routing.candidate, self._variant_name(routing)).serving(on)

    @staticmethod
    def _variant_name(routing) -> str:
        return "shadow" if routing.mode is not None and routing.mode.value == "shadow" else "candidate"

    async def _version(self, number: str):
        """The registry's version ``number`` loaded, or None if its package is refused (said once, kept)."""
        from mlsys.registry import releases
        from mlsys.serve.metrics import ServingMetrics

        if number in self.loaded:
            return self.loaded[number]
        if number in self.refused:
            return None
        try:
            resolved = await asyncio.to_thread(releases.version, self.follow.tracking_uri, self.follow.name, number)
            return await self._prepare(resolved.source, number)
        except Exception as e:
            import logging

            reason = f"{type(e).__name__}: {e}"
            self.refused[number] = {"version": number, "reason": reason, "at": time.time()}
            self.loaded.pop(number, None)
            ServingMetrics.refused(self.model_name, number, type(e).__name__)
            logging.getLogger("ray.serve").error("refused %s version %s (%s); version %s keeps serving",
                                                 self.model_name, number, reason, self.routing.champion.version)
            return None

    def _new_windows(self) -> None:
        from mlsys.serve.release import ShadowWindow, VariantWindow

        self.windows = {"champion": VariantWindow(), "candidate": VariantWindow()}
        self.shadow_window = ShadowWindow()

    async def _report(self, release) -> None:
        """Send this replica's windows of the release in progress to the controller, and start new ones."""
        routing = self.routing
        windows, shadow = self.windows, self.shadow_window
        self._new_windows()
        if self.controller is None or routing.candidate is None or self.release is None or release.candidate != routing.candidate.version:
            return
        if not (windows["champion"].requests or windows["candidate"].requests or shadow.requests):
            return  # no traffic: nothing to judge (an idle release is not a healthy one)
        report = {name: w.to_dict() for name, w in windows.items()}
        report["shadow"] = shadow.to_dict()
        await self.controller.observe.remote(release.candidate, release.started_at, release.mode, report)

    # -- scoring: the graph ---------------------------------------------------------------

    async def _score(self, served, parts: list, users: Optional[list] = None, variant: str = "champion") -> list:
        """Scores of encoded requests (``[inputs, ...]``, of ``users``) through ``served``'s graph."""
        if served.user_side is not None and users is not None:  # each user's side once (or from the cache)
            return [self._score_user_side(served, variant, user, inputs) for user, inputs in zip(users, parts)]
        if self.graph is Graph.split:  # one embedding call and one dense call for all parts
            from mlsys.serve.graph import concat_rows, split_rows

            tensors, sizes = concat_rows(parts)
            embedded = self.embedding.lookup.remote(served.uri, served.version, tensors)
            return split_rows(_raised([await self.dense.score.remote(served.uri, served.version, embedded)])[0], sizes)
        if self.cfg.batching.enabled:  # scored with the other requests of this turn of the event loop
            return await self.coalescer.submit([(served, variant)] * len(parts), parts)
        return _raised(self._fused([(served, variant)] * len(parts), parts))

    def _score_user_side(self, served, variant: str, user_id: int, inputs: dict):
        from mlsys.models import MODEL_INPUTS

        stats = served.user_side.cache.stats
        hits, misses = stats.hits, stats.misses
        with self._metrics(served, variant).timed("score"):
            scores = served.user_side.score(*(inputs[k] for k in MODEL_INPUTS), user_id=user_id if self.cfg.user_cache_size else None)
        self._count("", cache_hits=stats.hits - hits, cache_misses=stats.misses - misses)
        return scores

    def _fused(self, variants: list, batch: list) -> list:
        """``variants``: (ServedVersion, variant name) per request; one ONNX Runtime call per version in the
        batch, a failing version's exception handed to its own requests only."""

        def score(first: int, items: list) -> list:
            served, variant = variants[first]
            metrics = self._metrics(served, variant)
            metrics.batch("score", len(items))
            with metrics.timed("score"):
                return served.fused.score(items)

        return _per_version([s.version for s, _ in variants], batch, score)

    async def _scored(self, routing, served, variant: str, parts: list, users: list) -> list:
        """``_score`` counted in the release's window of ``variant`` (errors of the model, not of the request)."""
        start = time.perf_counter()
        try:
            scores = await self._score(served, parts, users, variant)
        except (InvalidRequestError, VersionMismatchError):
            raise
        except Exception:
            if routing.candidate is not None:
                self.windows[variant].observe((time.perf_counter() - start) * 1000.0, error=True)
            raise
        if routing.candidate is not None:
            self.windows[variant].observe((time.perf_counter() - start) * 1000.0, np.concatenate(scores) if scores else None)
        return scores

    async def _shadow(self, shadow, user_id: int, candidates, context, champion_scores, champion_ms: float) -> None:
        """Score the same request with the shadow version (its answer is recorded, never returned)."""
        start = time.perf_counter()
        try:
            encoded = shadow.ranker.encode(user_id, candidates, context)
            scores = (await self._score(shadow, [encoded.inputs], [user_id], "shadow"))[0]
        except Exception:
            self.shadow_window.candidate.observe((time.perf_counter() - start) * 1000.0, error=True)
            self._metrics(shadow, "shadow").count("errors", route="shadow", status="500")
            return
        ms = (time.perf_counter() - start) * 1000.0
        self.shadow_window.observe(champion_scores, scores, self.cfg.release.shadow_top_k, champion_ms, ms)
        metrics = self._metrics(shadow, "shadow")
        metrics.count("requests", route="shadow")
        metrics.latency("request", ms)
        metrics.scores(scores)

    def _count(self, route: str, metrics=None, **increments: int) -> None:
        with self._lock:
            for name, n in increments.items():
                if hasattr(self.counters, name):
                    setattr(self.counters, name, getattr(self.counters, name) + n)
        for name, n in increments.items():
            (metrics or self.metrics).count(name, n, route=route)  # errors are counted by the middleware

    # -- routes ------------------------------------------------------------------------------

    def _release_view(self) -> dict:
        routing = self.routing
        candidate = None
        if routing.candidate is not None:
            candidate = {"version": routing.candidate.version, "mode": routing.mode.value, "percent": routing.percent}
        return {"candidate": candidate, "refused": list(self.refused.values()),
                "follows": f"{self.follow.name}@{self.follow.alias}" if self.follow else None}

    @api.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok", "model": self.model_name, "version": self.routing.champion.version, "graph": self.graph.value,
                **self._release_view(), "replica_pid": self.pid, "switches": self.switches}

    @api.get("/v1/metrics")
    def metrics_v1(self) -> dict:
        """This replica's counters (Prometheus has every replica's as ``ray_mlsys_*``)."""
        with self._lock:
            out = asdict(self.counters)
        out["feature_source"] = "online_store" if self.pusher is not None else "package_tables"
        out["feature_log"] = asdict(self.logger.counters) if self.logger is not None else None
        out["monitoring"] = asdict(self.sketcher.counters) if self.sketcher is not None else None
        out["graph"] = self.graph.value
        out["gc_frozen_objects"] = gc.get_freeze_count()
        cache = self.routing.champion.user_side.cache if self.routing.champion.user_side is not None else None
        out["user_cache"] = {**asdict(cache.stats), "users": len(cache)} if cache is not None else None
        return out

    @api.post("/v1/rank", responses=V1_ERRORS)
    async def rank(self, request: RankRequest, http: Request) -> RankResponse:
        start = time.perf_counter()
        request_id = request.request_id or uuid.uuid4().hex
        routing = self.routing  # read once: this request is scored by one version whatever switches meanwhile
        served, shadow, variant = routing.route(request.user_id)
        metrics = self._metrics(served, variant)
        http.state.metrics = metrics
        try:
            with metrics.timed("features"):
                encoded = served.ranker.encode(request.user_id, request.candidates, request.context)
            scores = (await self._scored(routing, served, variant, [encoded.inputs], [request.user_id]))[0]
        except VersionMismatchError as e:
            raise HTTPException(status_code=503, detail=str(e)) from None
        ranking = served.ranker.ranking(encoded, scores, request.k)
        self._count("/v1/rank", metrics, requests=1, unknown_users=int(ranking.unknown_user), unknown_items=ranking.unknown_items)
        metrics.rows(len(request.candidates))
        metrics.scores(scores)
        if self.logger is not None:
            from mlsys.features.feature_log import LoggedRequest

            # The feature rows are built by the logger's thread (and only for a sampled request).
            self.logger.log(LoggedRequest(request_id, self.model_name, served.version, lambda: ranking.columns, ranking.scores))
        if self.sketcher is not None:  # sketched on the sketcher's thread, like the feature log's rows
            self.sketcher.observe(request_id, served.version, lambda: ranking.columns, ranking.scores)
        elapsed = (time.perf_counter() - start) * 1000.0
        metrics.latency("request", elapsed)
        if shadow is not None:
            asyncio.get_running_loop().create_task(
                self._shadow(shadow, request.user_id, request.candidates, request.context, scores, elapsed))
        return RankResponse(
            user_id=request.user_id,
            items=[ScoredItemOut(item_id=i.item_id, score=i.score) for i in ranking.items],
            model=self.model_name,
            version=served.version,
            unknown_user=ranking.unknown_user,
            unknown_items=ranking.unknown_items,
            request_id=request_id,
        )

    @api.post("/v1/events", responses={409: {"model": ErrorOut}, 503: {"model": ErrorOut}})
    def events(self, event: EventRequest) -> EventResponse:
        """A user's interaction: a label for online quality (serve.monitoring) and, with features=feast,
        an update of the user's online features (behaviour sequence, aggregates)."""
        from datetime import datetime, timezone

        if self.pusher is None and self.labels is None:
            raise HTTPException(status_code=409, detail=(
                "POST /v1/events records labels (serve.monitoring.enabled with serve.monitoring.labels) and updates the "
                "online feature store (features=feast); this app does neither"))
        if event.rating is None and event.clicked is None:
            raise HTTPException(status_code=422, detail="an event needs `rating` or `clicked`")
        threshold = self.routing.champion.ranker.package.preprocessor.schema.click_threshold
        clicked = bool(event.clicked) if event.clicked is not None else event.rating >= threshold
        at = event.timestamp if event.timestamp is not None else time.time()
        if self.labels is not None:
            from mlsys.monitor.labels import Label

            try:  # written and flushed before the answer: an accepted label is not lost
                self.labels.append(Label(int(event.user_id), int(event.item_id), int(clicked), float(at), event.request_id))
            except OSError as e:
                raise HTTPException(status_code=503, detail=f"the label could not be written ({e}); send the event again") from None
        history = aggregates = None
        if self.pusher is not None:
            from mlsys.features.push import Interaction

            result = self.pusher.push(Interaction(event.user_id, event.item_id, event.rating, event.clicked,
                                                  datetime.fromtimestamp(at, timezone.utc)))
            for served in list(self.loaded.values()):  # the history changed: drop the user's cached side now
                if served.user_side is not None:
                    served.user_side.cache.invalidate(event.user_id)
            history, aggregates = result.history, result.aggregates
        self._count("/v1/events", events=1)
        return EventResponse(user_id=int(event.user_id), clicked=clicked, labelled=self.labels is not None,
                             history=history, aggregates=aggregates)

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

    def _model(self, routing, name: str, version: Optional[str]):
        """The variant a versioned v2 route names (None: route by user), or a 404."""
        if name != self.model_name:
            raise HTTPException(status_code=404, detail=f"model {name!r} is not served here; this server serves {self.model_name!r}")
        if version is None:
            return None
        for served in routing.variants():
            if served.version == version:
                return served
        raise HTTPException(status_code=404, detail=f"model {name!r} version {version!r} is not served here; it serves version(s) "
                                                    f"{', '.join(repr(s.version) for s in routing.variants())}")

    @api.get("/v2/models/{name}", responses=V2_ERRORS)
    @api.get("/v2/models/{name}/versions/{version}", responses=V2_ERRORS)
    def v2_metadata(self, name: str, version: Optional[str] = None) -> dict:
        from mlsys.serve.v2 import model_metadata

        routing = self.routing
        self._model(routing, name, version)
        return {**model_metadata(self.model_name, [s.version for s in routing.variants()], routing.champion.signature),
                "serving": routing.champion.version, **self._release_view()}

    @api.get("/v2/models/{name}/ready", responses=V2_ERRORS)
    @api.get("/v2/models/{name}/versions/{version}/ready", responses=V2_ERRORS)
    def v2_model_ready(self, name: str, version: Optional[str] = None) -> dict:
        self._model(self.routing, name, version)
        return {"name": self.model_name, "ready": True}

    @api.post("/v2/models/{name}/infer", response_model=V2InferResponse, responses=V2_ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": V2InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}})
    @api.post("/v2/models/{name}/versions/{version}/infer", response_model=V2InferResponse, responses=V2_ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": V2InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}})
    async def v2_infer(self, name: str, request: Request, version: Optional[str] = None):
        from mlsys.serve.v2 import HEADER, ITEM, USER, infer_response, parse_infer, row_groups, scatter

        start = time.perf_counter()
        routing = self.routing
        pinned = self._model(routing, name, version)
        try:
            parsed = parse_infer(await request.body(), request.headers.get(HEADER), routing.champion.signature, self.cfg.max_rows)
            groups = row_groups(parsed, routing.champion.ranker.package.preprocessor.schema)
            # Each user's rows go to the variant the user is routed to (a pinned /versions/{v} route: that one).
            routes = [(pinned, None, "champion" if pinned is routing.champion else "candidate") if pinned is not None
                      else routing.route(g.user_id) for g in groups]
            per_group, encoded = [None] * len(groups), [None] * len(groups)
            for served in dict.fromkeys(r[0] for r in routes):
                at = [i for i, r in enumerate(routes) if r[0] is served]
                variant = routes[at[0]][2]
                with self._metrics(served, variant).timed("features"):
                    for i in at:
                        encoded[i] = served.ranker.encode(groups[i].user_id, parsed.inputs[ITEM][groups[i].rows], groups[i].context)
                scores = await self._scored(routing, served, variant, [encoded[i].inputs for i in at], [groups[i].user_id for i in at])
                for i, s in zip(at, scores):
                    per_group[i] = s
        except VersionMismatchError as e:
            raise HTTPException(status_code=503, detail=str(e)) from None
        scores = scatter(groups, per_group, len(parsed.inputs[USER]))
        metrics = self._metrics(routes[0][0], routes[0][2]) if routes else self.metrics
        request.state.metrics = metrics
        self._count("/v2/infer", metrics, requests=1, unknown_users=sum(int(e.unknown_user) for e in encoded),
                    unknown_items=sum(e.unknown_items for e in encoded))
        metrics.rows(len(scores))
        # The versions that scored (one, unless a canary split this call's users: then "1,2").
        scored_by = ",".join(dict.fromkeys(r[0].version for r in routes)) or routing.champion.version
        content, header_length = infer_response(self.model_name, scored_by, parsed, scores)
        metrics.latency("request", (time.perf_counter() - start) * 1000.0)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream", headers={HEADER: str(header_length)})

    def __del__(self):
        # Serve deletes the replica on shutdown: write what the feature log still holds.
        if getattr(self, "logger", None) is not None:
            self.logger.close(timeout=10)
        if getattr(self, "sketcher", None) is not None:  # and the online statistics' open windows
            self.sketcher.close(timeout=10)


def build_app(
    cfg: ServeConfig,
    package_uri: str,
    model_name: str,
    version: Optional[str],
    store=None,
    log_dir: Optional[str] = None,
    follow: Optional[Follow] = None,
) -> Application:
    """``store``: an :class:`~mlsys.features.serving.OnlineStoreSpec` (features from the online
    store) or None (from the package's tables); ``log_dir``: where the feature log goes;
    ``follow``: the registry alias the app follows (hot reload, canary and shadow releases), or
    None to serve ``package_uri`` only. The graph is ``cfg.resolved_graph()`` (``serve.graph``)."""
    logging = {"logging_config": {"log_level": cfg.log_level}}
    ingress = Ingress.options(**cfg.ingress.options(), **logging)
    controller = ReleaseController.options(num_replicas=1, ray_actor_options={"num_cpus": 0}, **logging).bind(follow, cfg) \
        if follow is not None else None
    if cfg.resolved_graph() is Graph.fused:
        return ingress.bind(package_uri, model_name, version, cfg, store, log_dir, None, None, follow, controller)
    embedding = Embedding.options(**cfg.embedding.options(), **logging).bind(model_name, cfg)
    dense = Dense.options(**cfg.dense.options(), **logging).bind(model_name, cfg)
    return ingress.bind(package_uri, model_name, version, cfg, store, log_dir, embedding, dense, follow, controller)


def running_serve_port() -> Optional[int]:
    """The HTTP port of the Serve running on the connected cluster, None when none runs.

    Asked of Serve's controller: a process keeps a client of the Serve it last used, with the HTTP
    options it started with, and a Ray worker may hold one of a Serve since shut down and started
    again elsewhere (CI saw a sandbox poll a port long gone). So forget that client, find the
    controller again and take the port it has."""
    import ray
    from ray.serve.context import _disconnect, _get_global_client

    _disconnect()
    client = _get_global_client(raise_if_no_controller_running=False)
    return None if client is None else ray.get(client._controller.get_http_config.remote()).port


def shutdown_serve(timeout_s: float = 30.0) -> None:
    """``serve.shutdown()`` without Ray's ``Task ServeController.graceful_shutdown failed. There are infinite
    retries remaining ... killed by ray.kill`` warning: Serve's controller, created with infinite task retries,
    kills itself at the end of ``graceful_shutdown``, so the call it was answering fails and Ray announces a retry
    (the push step's sandbox printed it into every first ``make demo``). Asked once, with no retry, the call just
    ends with the controller; then, as ``serve.shutdown()`` does, this process forgets its client."""
    import ray
    from ray.serve.context import _disconnect, _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return
    client.shutdown_cached_handles()
    try:
        ray.get(client._controller.graceful_shutdown.options(max_task_retries=0).remote(), timeout=timeout_s)
    except ray.exceptions.RayActorError:
        pass  # the controller is gone: how graceful_shutdown ends
    except ray.exceptions.GetTimeoutError:
        print(f"[serve] Serve's controller did not shut down within {timeout_s:g} s; see its log "
              f"(controller_*.log under the Ray session's logs/serve/)")
    _disconnect()


HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
# What Ray Serve's high-throughput mode pairs with HAProxy: user code on the replica's own event loop (a thread hop
# less per request), gRPC between deployments, request-path logs buffered and kept out of stderr (they stay in the
# replicas' Serve log files). docs/serving.md, "The proxy".
THROUGHPUT_ENV = "RAY_SERVE_THROUGHPUT_OPTIMIZED"


def choose_proxy(cfg: ServeConfig, starts_ray: bool) -> None:
    """``serve.proxy=haproxy`` before connecting: Ray Serve reads ``RAY_SERVE_ENABLE_HA_PROXY`` (and
    ``RAY_SERVE_THROUGHPUT_OPTIMIZED``) in its controller and replicas, which take their environment from the Ray
    that started them, so for the embedded Ray this process is about to start (``starts_ray``) they are set here
    (``RAY_SERVE_THROUGHPUT_OPTIMIZED=0`` already in the environment is kept); a Ray already running has made its
    choice (:func:`check_proxy`)."""
    import os

    if cfg.proxy is Proxy.haproxy and starts_ray:
        os.environ[HAPROXY_ENV] = "1"
        os.environ.setdefault(THROUGHPUT_ENV, "1")


def check_proxy(cfg: ServeConfig, started_ray: bool) -> None:
    """``serve.proxy=haproxy`` on a connected Ray started without HAProxy is a ConfigError that says how to start it.
    A Ray this process just started with it (``started_ray``, :func:`choose_proxy`) is not asked again."""
    if cfg.proxy is not Proxy.haproxy or started_ray:
        return
    import ray

    @ray.remote(num_cpus=0)
    def haproxy_enabled() -> bool:
        import os

        return os.environ.get(HAPROXY_ENV) == "1"

    if not ray.get(haproxy_enabled.remote()):
        raise ConfigError(f"serve.proxy=haproxy, but this Ray was started without {HAPROXY_ENV}=1 (Serve's proxy is chosen "
                          f"when Ray starts): start every node with {HAPROXY_ENV}=1 (`{HAPROXY_ENV}=1 ray start ...`), "
                          f"stop the Ray this process started first, or pass serve.proxy=ray")


def ensure_serve(cfg: ServeConfig) -> None:
    """Serve listening on ``cfg.port`` on the connected cluster: one running there is joined (apps deploy
    beside its others), none is started, one on another port is a ConfigError naming ``serve.port``."""
    import logging

    logging.getLogger("ray.serve").setLevel(cfg.log_level)
    running = running_serve_port()
    if running is None:
        serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config={"log_level": cfg.log_level})
    elif running != cfg.port:
        raise ConfigError(f"serve.port={cfg.port}, but this cluster's Serve already listens on port {running} (one Serve "
                          f"has one HTTP port): pass serve.port={running} to deploy beside its apps, or run `serve shutdown` first")


def start(cfg: ServeConfig, package_uri: str, model_name: str, version: Optional[str], store=None, log_dir: Optional[str] = None,
          follow: Optional[Follow] = None) -> str:
    """Deploy on the connected Ray cluster; returns the base URL.

    One Serve has one HTTP port: a Serve already running on ``cfg.port`` takes the app beside its
    others (at ``cfg.route_prefix``; an app of the same ``cfg.app_name`` is replaced); one running on
    another port is a ConfigError naming ``serve.port``, not a URL that nothing answers (:func:`ensure_serve`)."""
    ensure_serve(cfg)
    serve.run(build_app(cfg, package_uri, model_name, version, store, log_dir, follow), name=cfg.app_name, route_prefix=cfg.route_prefix)
    return f"http://{cfg.host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"
