"""The dashboard (``mlsys ui``): a JSON API over :mod:`mlsys.ui.read` under ``/api``, described at
``/openapi.json``, and pages under ``/`` that draw it (every asset ships in ``mlsys/ui/static``: plotly
from the installed plotly package, nothing from the network).

Reading needs no token (unless ``ui.private_reads``). Every route that changes something is a POST
under ``/api/actions`` and needs ``Authorization: Bearer <ui.token>``: launch a run (a Ray job, as
``ray job submit`` does), push or roll back the serving alias (``mlsys model push|rollback``), start,
promote or roll back a release (``mlsys release``) — the same functions the CLI calls::

    app = build_app(cfg, token)        # FastAPI
    uvicorn.run(app, host=cfg.ui.host, port=cfg.ui.port)

On a cluster the same app is a Serve application (:func:`serve_app`, ``ui.mode``): its pages address
everything relative to where they are served, so it works at ``ui.route_prefix`` as at ``/``.
"""

from __future__ import annotations

import hmac
import html
import os
import secrets
import shlex
import sys
from pathlib import Path
from typing import Optional
from urllib.parse import unquote

from fastapi import Request  # at the top: FastAPI reads the route's annotation from this module's names

from mlsys import storage
from mlsys.errors import MlsysError, require_free_port
from mlsys.ui.read import Home, NotFound

STATIC = Path(__file__).with_name("static")
READ_COOKIE = "mlsys_ui_token"  # app.js sets it (this session, SameSite=Strict) so that links the browser follows itself can read


def token_of(cfg) -> str:
    """``ui.token``, else the home's ``ui/token`` (made at the first start, mode 0600)."""
    if cfg.ui.token:
        return cfg.ui.token
    if storage.is_remote(cfg.home.root):
        from mlsys.errors import ConfigError

        raise ConfigError(f"ui.token is empty and the home {cfg.home.root} is not a local path, where the dashboard keeps the "
                          f"token it makes (mode 0600): set ui.token (e.g. ui.token=${{oc.env:MLSYS_UI_TOKEN}} from a secret)")
    path = Path(storage.absolute(cfg.home.root)) / "ui" / "token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def build_app(cfg, token: str, jobs=None):
    """The FastAPI app over ``cfg``'s home. ``jobs``: a Ray ``JobSubmissionClient`` (default: the
    connected cluster's, made at the first launch)."""
    from fastapi import APIRouter, Body, Cookie, Depends, FastAPI, Header, HTTPException, Query
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse

    home = Home.of(cfg)
    app = FastAPI(title="mlsys dashboard", version="1", description="Runs, lineage, data, features, models, releases and monitoring of one mlsys home.")
    state = {"jobs": jobs}

    @app.exception_handler(NotFound)
    async def _not_found(request, e: NotFound):
        return JSONResponse({"detail": str(e)}, status_code=404)

    @app.exception_handler(MlsysError)
    async def _refused(request, e: MlsysError):  # a refused action (no such version, a release in progress): said, not raised
        return JSONResponse({"detail": str(e)}, status_code=409)

    def authorized(authorization: Optional[str] = Header(default=None)) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(401, "this action changes something: send Authorization: Bearer <ui.token> "
                                     "(the token `mlsys ui` printed at its start, or ui.token in config)",
                                headers={"WWW-Authenticate": "Bearer"})

    def read_authorized(authorization: Optional[str] = Header(default=None),
                        cookie: Optional[str] = Cookie(default=None, alias=READ_COOKIE)) -> None:
        """The header, or the page's cookie: a report link carries no header. Actions take only the header
        (a cookie goes with every request the browser makes, so it never authorizes a change)."""
        if cookie and hmac.compare_digest(unquote(cookie).encode(), token.encode()):
            return
        try:
            authorized(authorization)
        except HTTPException as e:
            raise HTTPException(401, "reads are private here (ui.private_reads): enter the token (the one `mlsys ui` "
                                     "printed at its start, or ui.token in config) in the page's Token field", headers=e.headers) from None

    # The reads under /api; with ui.private_reads they need the token too (the pages themselves load, then ask for it).
    reads = APIRouter(prefix="/api", tags=["read"], dependencies=[Depends(read_authorized)] if cfg.ui.private_reads else [])

    # -- reads ------------------------------------------------------------------------------

    @reads.get("/home", summary="the home, its model and links out")
    def get_home() -> dict:
        return {"root": home.root, "tracking_uri": home.tracking_uri, "model": home.model,
                "links": {k: v for k, v in (("mlflow", cfg.ui.mlflow_url), ("ray", cfg.ui.ray_dashboard_url),
                                             ("optuna", cfg.ui.optuna_dashboard_url)) if v}}

    @reads.get("/runs", summary="the newest pipeline runs")
    def get_runs(limit: int = Query(default=cfg.ui.runs, ge=1, le=5000)) -> list[dict]:
        return home.runs(limit)

    @reads.get("/runs/{run_id}", summary="one run: its steps and resolved config")
    def get_run(run_id: str) -> dict:
        return home.run(run_id)

    @reads.get("/diff", summary="two runs' config and metrics side by side")
    def get_diff(a: str, b: str) -> dict:
        return home.diff(a, b)

    @reads.get("/runs/{run_id}/data", summary="a run's statistics per split, anomalies, quarantined rows")
    def get_data(run_id: str) -> dict:
        return home.data(run_id)

    @reads.get("/spans", summary="a feature's statistics across every statistics run")
    def get_spans(feature: str, split: str = "train") -> list[dict]:
        return home.spans(feature, split)

    @reads.get("/models/{name}", summary="versions, metrics, blessing, pushes, the release in progress")
    def get_models(name: str) -> dict:
        return home.models(name)

    @reads.get("/models/{name}/{version}/lineage", summary="a version back through its steps to the data")
    def get_lineage(name: str, version: str) -> dict:
        return home.lineage(name, version)

    @reads.get("/models/{name}/{version}/evaluation", summary="the gate's view: slices, blessing, pre-release estimate")
    def get_evaluation(name: str, version: str) -> dict:
        return home.evaluation(name, version)

    @reads.get("/studies", summary="the tune step's Optuna studies")
    def get_studies() -> list[dict]:
        return home.studies()

    @reads.get("/studies/{name}", summary="one study's trials")
    def get_study(name: str) -> dict:
        return home.study(name)

    @reads.get("/downstream", summary="every model version trained on an artifact")
    def get_downstream(uri: str) -> list[dict]:
        return home.downstream(uri)

    @reads.get("/features", summary="feature stores: views, service, freshness, online rows, log and event rates")
    def get_features() -> dict:
        return home.features()

    @reads.get("/monitoring/{name}", summary="drift, skew, service latency and errors, online quality, alerts, retrains")
    def get_monitoring(name: str) -> dict:
        return home.monitoring(name)

    @reads.get("/artifact", summary="an HTML report under the home (data report, evaluation report)")
    def get_artifact(uri: str):
        path = Path(uri.removeprefix("file://")).resolve()
        if not path.is_relative_to(Path(home.root).resolve()) or path.suffix != ".html" or not path.is_file():
            raise NotFound(f"{uri} is not an HTML report under the home {home.root}")
        return FileResponse(path, media_type="text/html")

    @reads.get("/jobs/{submission_id}", summary="a launched run's status and the tail of its log")
    def get_job(submission_id: str, tail: int = Query(default=20000, ge=0)) -> dict:
        client = _jobs()
        try:
            status = client.get_job_status(submission_id)
        except Exception as e:  # noqa: BLE001 - the Jobs API says what it does not know
            raise NotFound(f"no job {submission_id!r}: {e}") from None
        return {"submission_id": submission_id, "status": str(getattr(status, "value", status)),
                "log": client.get_job_logs(submission_id)[-tail:] if tail else ""}

    # -- actions ----------------------------------------------------------------------------

    def _jobs():
        if state["jobs"] is None:
            from ray.job_submission import JobSubmissionClient

            from mlsys.api.monitor import dashboard_url
            from mlsys.cluster import connect

            connect(cfg.cluster)
            state["jobs"] = JobSubmissionClient(dashboard_url())
        return state["jobs"]

    @app.post("/api/actions/run", tags=["actions"], dependencies=[Depends(authorized)],
              summary="launch `mlsys run <overrides>` on this home as a Ray job")
    def launch(overrides: list[str] = Body(default=[], embed=True)) -> dict:
        from mlsys.api.config import compose_config

        bad = [o for o in overrides if "=" not in o or o.startswith("-")]
        if bad:
            raise HTTPException(422, f"overrides are Hydra key=value pairs (e.g. train.num_workers=2); not: {bad}")
        compose_config([f"home.root={home.root}", *overrides])  # a wrong key is refused here, named, not in the job
        # The job's driver joins the cluster it was submitted to (cluster.address=auto), and runs this Python's mlsys.
        entrypoint = shlex.join([sys.executable, "-m", "mlsys.cli.main", "run", f"home.root={home.root}", "cluster.address=auto", *overrides])
        return {"submission_id": _jobs().submit_job(entrypoint=entrypoint), "entrypoint": entrypoint}

    def _cfg_for(name: str):
        import dataclasses

        return dataclasses.replace(cfg, registry=dataclasses.replace(cfg.registry, model_name=name))

    @app.post("/api/actions/models/{name}/rollback", tags=["actions"], dependencies=[Depends(authorized)],
              summary="move the serving alias back to the previous champion (mlsys model rollback)")
    def model_rollback(name: str, to: Optional[str] = Body(default=None, embed=True)) -> dict:
        from mlsys.api import models

        return {"message": models.rollback(_cfg_for(name), name, to)}

    @app.post("/api/actions/models/{name}/push", tags=["actions"], dependencies=[Depends(authorized)],
              summary="push a version after infra validation (mlsys model push)")
    def model_push(name: str, version: str = Body(embed=True)) -> dict:
        from mlsys.api import models

        return {"message": models.push(_cfg_for(name), name, version)}

    @app.post("/api/actions/releases/{name}/start", tags=["actions"], dependencies=[Depends(authorized)],
              summary="a canary or shadow release of a version (mlsys release canary)")
    def release_start(name: str, version: str = Body(embed=True), mode: str = Body(default="canary", embed=True),
                      percent: float = Body(default=10.0, embed=True)) -> dict:
        from mlsys.api import releases

        if mode not in ("canary", "shadow"):
            raise HTTPException(422, f"mode must be canary or shadow, not {mode!r}")
        return {"message": releases.start(_cfg_for(name), name, version, mode, percent)}

    @app.post("/api/actions/releases/{name}/promote", tags=["actions"], dependencies=[Depends(authorized)],
              summary="promote the release in progress (mlsys release promote)")
    def release_promote(name: str) -> dict:
        from mlsys.api import releases

        return {"message": releases.promote(_cfg_for(name), name)}

    @app.post("/api/actions/releases/{name}/rollback", tags=["actions"], dependencies=[Depends(authorized)],
              summary="roll back the release in progress (mlsys release rollback)")
    def release_rollback(name: str) -> dict:
        from mlsys.api import releases

        return {"message": releases.rollback(_cfg_for(name), name)}

    app.include_router(reads)

    # -- pages --------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def index(request: Request):
        # Every path in the pages is relative to this base: / here, ui.route_prefix behind a Serve proxy.
        base = html.escape(request.scope.get("root_path", "").rstrip("/") + "/", quote=True)
        return HTMLResponse((STATIC / "index.html").read_text().replace("<head>", f'<head>\n<base href="{base}">', 1))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        path = _plotly_js() if name == "plotly.min.js" else STATIC / name
        if path.parent not in (STATIC, _plotly_js().parent) or not path.is_file():
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    return app


APP_NAME = "mlsys-ui"  # the dashboard's Serve application (ui.mode=serve)


def serve_app(cfg):
    """The dashboard as a Serve application: one replica of :func:`build_app`'s app, built in the
    replica over ``cfg``'s home (made absolute here: the replica may run in another directory or on
    another node, which must see the same home) with its token (``ui.token`` or ``<home>/ui/token``).
    It reads little and waits on files, so it asks for no CPU of its own."""
    import dataclasses

    from ray import serve

    cfg = dataclasses.replace(cfg, home=dataclasses.replace(cfg.home, root=storage.absolute(cfg.home.root)))

    @serve.deployment(name="Dashboard", num_replicas=1, ray_actor_options={"num_cpus": 0})
    @serve.ingress()
    class Dashboard:
        def __init__(self, cfg):
            self.cfg = cfg

        def __serve_build_asgi_app__(self):
            return build_app(self.cfg, token_of(self.cfg))

    return Dashboard.bind(cfg)


def app_builder(args: dict):
    """For a Serve config file or a RayService: ``import_path: mlsys.ui.app:app_builder`` with
    ``args: {overrides: ["home.root=/shared/mlsys", ...]}`` (Hydra overrides, as on the command line)."""
    from mlsys.api.config import compose_config

    overrides = args.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        from mlsys.errors import ConfigError

        raise ConfigError(f"the dashboard's Serve args take overrides: a list of key=value strings, not {overrides!r}")
    return serve_app(compose_config(overrides))


def deploy(cfg, echo=print) -> str:
    """``mlsys ui`` on a cluster (``ui.mode``): deploy :func:`serve_app` on the cluster's Serve, on
    ``serve.port`` at ``ui.route_prefix`` (beside the ranking apps), and return its URL."""
    from ray import serve

    from mlsys.api.serving import join_cluster_serve
    from mlsys.serve.app import ensure_serve

    join_cluster_serve(cfg)
    ensure_serve(cfg.serve)
    serve.run(serve_app(cfg), name=APP_NAME, route_prefix=cfg.ui.route_prefix)
    url = f"http://{cfg.serve.host}:{cfg.serve.port}{cfg.ui.route_prefix}/"
    echo(f"[ui] the dashboard of {storage.absolute(cfg.home.root)} at {url} (Serve application {APP_NAME}; API: "
         f"{cfg.ui.route_prefix}/docs, {cfg.ui.route_prefix}/openapi.json)")
    echo(_token_line(cfg))
    return url


def _token_line(cfg) -> str:
    return f"[ui] actions{' and reads' if cfg.ui.private_reads else ''} need the bearer token: {'ui.token' if cfg.ui.token else token_of(cfg)}"


def on_serve(cfg) -> bool:
    """Whether ``mlsys ui`` runs as a Serve application (``ui.mode``; auto: on a cluster)."""
    from mlsys.config import UiMode

    return cfg.ui.mode == UiMode.serve or (cfg.ui.mode == UiMode.auto and cfg.cluster.address != "local")


def serve_forever(cfg, echo=print) -> None:
    """``mlsys ui`` in this process (``ui.mode=process``): the dashboard on ``ui.host:ui.port`` until Ctrl-C."""
    import uvicorn

    require_free_port(cfg.ui.host, cfg.ui.port, "ui.port")
    token = token_of(cfg)
    app = build_app(cfg, token)
    echo(f"[ui] the dashboard of {storage.absolute(cfg.home.root)} at http://{cfg.ui.host}:{cfg.ui.port}/ (API: /docs, /openapi.json)")
    echo(_token_line(cfg))
    uvicorn.run(app, host=cfg.ui.host, port=cfg.ui.port, log_level="warning")
