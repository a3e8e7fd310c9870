"""Ray Serve edge: the ranking application and its builder.

``build_app(ServeConfig, package_uri, version) -> Application``; the app is a
single deployment today (FastAPI ingress + in-process ONNX Runtime); the split
CPU-embedding / GPU-dense graph binds more deployments into the same builder.
"""

# No `from __future__ import annotations` here: FastAPI reads the request
# models from real annotations on the Serve-wrapped methods.
import socket
from typing import Optional

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from mlsys.errors import InvalidRequestError, PortInUseError
from mlsys.serve.config import ServeConfig


class RankRequest(BaseModel):
    user_id: int = Field(description="The user to rank for; unknown users get default features.")
    candidates: list[int] = Field(min_length=1, description="Candidate item ids.")
    k: Optional[int] = Field(default=None, ge=1, description="Return only the best k.")


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


api = FastAPI(title="mlsys ranking", version="1")


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
@serve.ingress(api)
class RankingService:
    def __init__(self, package_uri: str, model_name: str, version: Optional[str], max_candidates: int):
        from mlsys.registry.package import read_package
        from mlsys.serve.ranker import RankingModel

        self.model_name = model_name
        self.ranker = RankingModel(read_package(package_uri), engine="onnx", version=version, max_candidates=max_candidates)

    @api.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok", "model": self.model_name, "version": self.ranker.version}

    @api.post("/v1/rank")
    def rank(self, request: RankRequest) -> RankResponse:
        try:
            ranking = self.ranker.rank(request.user_id, request.candidates, request.k)
        except InvalidRequestError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None
        return RankResponse(
            user_id=request.user_id,
            items=[ScoredItemOut(item_id=i.item_id, score=i.score) for i in ranking.items],
            model=self.model_name,
            version=self.ranker.version,
            unknown_user=ranking.unknown_user,
            unknown_items=ranking.unknown_items,
        )


def build_app(cfg: ServeConfig, package_uri: str, model_name: str, version: Optional[str]) -> Application:
    return RankingService.options(num_replicas=cfg.num_replicas, logging_config={"log_level": cfg.log_level}).bind(
        package_uri, model_name, version, cfg.max_candidates
    )


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise PortInUseError(host, port) from None


def start(cfg: ServeConfig, package_uri: str, model_name: str, version: Optional[str]) -> str:
    """Deploy on the connected Ray cluster; returns the base URL."""
    import logging

    logging.getLogger("ray.serve").setLevel(cfg.log_level)
    serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config={"log_level": cfg.log_level})
    serve.run(build_app(cfg, package_uri, model_name, version), name=cfg.app_name, route_prefix="/")
    return f"http://{cfg.host}:{cfg.port}"
