"""Serving a registered model on Ray Serve, and walking a model back to its data."""

from __future__ import annotations

from typing import Callable

from mlsys.api.config import MlsysConfig


def resolve_model(cfg: MlsysConfig):
    from mlsys.registry import mlflow_store

    return mlflow_store.resolve(mlflow_store.tracking_uri(cfg.home), cfg.serve.model)


def lineage(cfg: MlsysConfig) -> str:
    """``serve.model`` walked back through its pipeline's step runs to the data (``mlsys lineage``)."""
    from mlsys.pipeline.lineage import format_lineage, walk
    from mlsys.registry import mlflow_store

    model = resolve_model(cfg)
    client = mlflow_store.client(mlflow_store.tracking_uri(cfg.home))
    title = f"{model.name} version {model.version} (package {model.source})"
    return format_lineage(title, walk(client, model.run_id))


def start_server(cfg: MlsysConfig, echo: Callable[[str], None] = print) -> str:
    """Serve ``cfg.serve.model`` on Ray Serve; returns its URL (the app keeps running).

    On a cluster whose Serve already runs on ``serve.port`` the app joins its others (at
    ``serve.route_prefix``); see :func:`mlsys.serve.app.start`."""
    from mlsys.serve import app

    model = resolve_model(cfg)
    store, log_dir = online_features(cfg)
    if store is not None:
        check_store_serves_model(cfg, model.source)
    join_cluster_serve(cfg)
    follow = following(cfg)
    url = app.start(served_config(cfg), model.source, model.name, model.version, store, log_dir, follow)
    events = "POST /v1/events, " if store else ""
    graph = cfg.serve.resolved_graph().value
    echo(f"[serve] {model.name} version {model.version} at {url}, graph {graph} (serve.graph={cfg.serve.graph.value}), "
         f"proxy {cfg.serve.proxy.value}")
    if follow is not None:
        echo(f"[serve] follows {follow.name}@{follow.alias} in the registry every {cfg.serve.release.poll_s:g} s "
             f"(alias moves, canary and shadow releases: mlsys release)")
    echo(f"[serve] routes: POST /v1/rank, {events}GET /v1/metrics, GET /healthz; KServe v2: POST "
         f"/v2/models/{model.name}/infer, GET /v2/models/{model.name}, /v2/health/live|ready; docs at {url}/docs")
    return url


def join_cluster_serve(cfg: MlsysConfig) -> None:
    """Connect to ``cfg.cluster`` for an app on ``serve.port``. On the embedded Ray, whose Serve this process
    starts, a port already taken is said before Ray starts; deploying joins or starts Serve
    (:func:`mlsys.serve.app.ensure_serve`)."""
    import ray

    from mlsys.cluster import connect
    from mlsys.errors import require_free_port
    from mlsys.serve import app

    local = cfg.cluster.address == "local"
    starts_ray = local and not ray.is_initialized()
    if starts_ray:
        require_free_port(cfg.serve.host, cfg.serve.port, "serve.port")
    app.choose_proxy(cfg.serve, starts_ray)
    connect(cfg.cluster)
    app.check_proxy(cfg.serve, starts_ray)
    if local and app.running_serve_port() is None:
        require_free_port(cfg.serve.host, cfg.serve.port, "serve.port")


def served_config(cfg: MlsysConfig):
    """``cfg.serve`` with the paths its replicas need resolved against the home (they may run elsewhere)."""
    import dataclasses

    from mlsys.monitor.config import monitor_dir

    monitoring = dataclasses.replace(cfg.serve.monitoring, path=monitor_dir(cfg.serve.monitoring.path, cfg.home.root))
    return dataclasses.replace(cfg.serve, monitoring=monitoring)


def following(cfg: MlsysConfig):
    """The registry alias the app follows (``serve.model=ctr@champion``), or None (a pinned version)."""
    from mlsys.registry import mlflow_store
    from mlsys.serve.app import Follow

    name, _, alias = cfg.serve.model.removeprefix("models:/").partition("@")
    return Follow(mlflow_store.tracking_uri(cfg.home), name, alias) if alias else None


def online_features(cfg: MlsysConfig):
    """The online store serving reads (None with features=none) and where the feature log goes."""
    from mlsys import storage
    from mlsys.features.feature_log import default_log_dir

    log_dir = cfg.serve.feature_logging.path or default_log_dir(cfg.features.project, cfg.home.root)
    if not cfg.features.enabled:
        return None, log_dir
    from mlsys.features.serving import OnlineStoreSpec, check_online_store

    check_online_store(cfg.features, cfg.home.root)
    home = storage.absolute(cfg.home.root)  # replicas may run in another directory
    return OnlineStoreSpec(cfg.features, home), log_dir  # the store carries its own feature schema


def check_store_serves_model(cfg: MlsysConfig, package_uri: str) -> None:
    """The online store must hold the features the model was trained on (the same declared schema)."""
    from mlsys.errors import ConfigError
    from mlsys.features.store import stored_schema
    from mlsys.registry.package import read_package

    trained = read_package(package_uri).preprocessor.schema
    store = stored_schema(cfg.features, cfg.home.root)
    if (trained.features, trained.sources) != (store.features, store.sources):
        def names(s):
            return sorted(f.name for f in s.features)

        raise ConfigError(
            f"serve.model={cfg.serve.model} was trained on the features {names(trained)} but the feature store "
            f"(features.project={cfg.features.project}) holds {names(store)}: serve it with features=none, or rebuild "
            f"the store from the model's data (`mlsys run features={cfg.features.name.value} data=...`)"
        )


def app_builder(args: dict):
    """The application builder of a Serve config file (``serve deploy``, KubeRay ``RayService``):

        applications:
          - name: ranking
            import_path: mlsys.api.serving:app_builder
            args:
              overrides: ["serve.model=ctr@champion", "home.root=/data/mlsys"]
              release: {version: "2", percent: 10}      # optional: canary, or {version: "2", shadow: true}

    ``overrides`` are Hydra overrides, as on the command line. A ``release`` declares the release
    the file wants: it is written to the registry (the source of truth) unless that version is
    already in release, or its release already ended (promoted or rolled back: applying the file
    again does not restart a release the policy ended; the log says so). Returns the app
    ``mlsys serve`` would deploy (docs/releases.md, "Releases from config")."""
    import logging

    from mlsys.api.config import compose_config
    from mlsys.errors import ConfigError
    from mlsys.serve import app

    unknown = set(args) - {"overrides", "release"}
    if unknown:
        raise ConfigError(f"args of mlsys.api.serving:app_builder: unknown {sorted(unknown)}; expected overrides and release")
    cfg = compose_config(list(args.get("overrides", [])))
    release = args.get("release")
    if release:
        declare_release(cfg, dict(release), logging.getLogger("ray.serve"))
    model = resolve_model(cfg)
    store, log_dir = online_features(cfg)
    if store is not None:
        check_store_serves_model(cfg, model.source)
    return app.build_app(served_config(cfg), model.source, model.name, model.version, store, log_dir, following(cfg))


def declare_release(cfg: MlsysConfig, release: dict, log) -> None:
    """A config file's ``release: {version, percent | shadow}`` made true in the registry (see :func:`app_builder`)."""
    from mlsys.api import releases as api_releases
    from mlsys.errors import ConfigError
    from mlsys.registry import releases

    unknown = set(release) - {"version", "percent", "shadow"}
    if unknown or "version" not in release or ("percent" in release) == bool(release.get("shadow")):
        raise ConfigError(f"release: {release}: expected {{version: N, percent: P}} or {{version: N, shadow: true}}")
    uri, name, alias = api_releases.target(cfg, None)
    number = str(release["version"])
    current = releases.read(uri, name, alias)
    ended = releases.outcome(uri, name, number)
    if current.candidate == number or current.champion == number:
        return
    if ended:
        log.warning("release of %s version %s in the config file: not started again, it was %s (%s)", name, number,
                    ended.get("outcome"), ended.get("reason"))
        return
    mode = "shadow" if release.get("shadow") else "canary"
    log.info("%s", api_releases.start(cfg, name, number, mode, float(release.get("percent", 0))))
