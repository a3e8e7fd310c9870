"""The dashboard's JSON API on a real (SQLite) MLflow store, without a cluster: reads need no token,
every action is refused without the bearer token, bad requests and missing things are clear 4xx."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from mlsys.api.config import compose_config
from mlsys.ui.app import build_app, token_of
from tests.studies import make_study

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOKEN = "s3cret-token"
ACTIONS = [("/api/actions/run", {"overrides": ["train.max_epochs=1"]}), ("/api/actions/models/ui/rollback", {}),
           ("/api/actions/models/ui/push", {"version": "2"}), ("/api/actions/releases/ui/start", {"version": "2", "percent": 20}),
           ("/api/actions/releases/ui/promote", {}), ("/api/actions/releases/ui/rollback", {})]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home whose registry has a model ``ui`` with versions 1 and 2, champion on 1 (a real MLflow store)."""
    from mlsys.registry import mlflow_store

    tmp_path = tmp_path_factory.mktemp("ui-home")
    cfg = compose_config([f"home.root={tmp_path}", f"ui.token={TOKEN}", "registry.model_name=ui"])
    c = mlflow_store.client(mlflow_store.tracking_uri(cfg.home))
    c.create_registered_model("ui")
    for _ in range(2):
        c.create_model_version("ui", source=str(tmp_path / "package"))
    c.set_registered_model_alias("ui", "champion", "1")
    return cfg


@pytest.fixture(scope="module")
def client(home):
    return TestClient(build_app(home, TOKEN))


def test_reads_answer_without_a_token(client, home):
    assert client.get("/api/runs").json() == []
    assert client.get("/api/home").json()["model"] == "ui"
    models = client.get("/api/models/ui").json()
    assert [v["version"] for v in models["versions"]] == ["2", "1"] and models["release"]["champion"] == "1"
    assert models["versions"][1]["aliases"] == ["champion"]
    monitoring = client.get("/api/monitoring/ui").json()
    assert monitoring["summary"]["windows"] == 0 and monitoring["alerts"] == []
    schema = client.get("/openapi.json").json()
    assert {"/api/runs", "/api/runs/{run_id}", "/api/diff", "/api/models/{name}/{version}/lineage", "/api/monitoring/{name}",
            "/api/actions/releases/{name}/start"} <= set(schema["paths"])
    page = client.get("/")
    assert page.status_code == 200 and '<base href="/">' in page.text
    assert 'src="static/app.js"' in page.text and 'src="static/plotly.min.js"' in page.text  # relative to the base
    assert client.get("/static/plotly.min.js").status_code == 200  # shipped with the plotly package: no network
    assert client.get("/static/..%2F..%2Fapp.py").status_code == 404


@pytest.mark.parametrize("path,body", ACTIONS)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer"])
def test_every_action_is_refused_without_the_token(client, path, body, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    r = client.post(path, json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert "Bearer" in r.json()["detail"] and r.headers["WWW-Authenticate"] == "Bearer"


def test_a_release_started_and_rolled_back_with_the_token_moves_the_registry(client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = client.post("/api/actions/releases/ui/start", json={"version": "2", "percent": 20}, headers=auth)
    assert r.status_code == 200, r.text
    assert "canary release on 20% of users" in r.json()["message"]
    release = client.get("/api/models/ui").json()["release"]
    assert release["candidate"] == "2" and release["mode"] == "canary" and release["percent"] == 20
    again = client.post("/api/actions/releases/ui/start", json={"version": "1"}, headers=auth)
    assert again.status_code == 409 and "already serves as 'champion'" in again.json()["detail"]  # said, not a 500
    r = client.post("/api/actions/releases/ui/rollback", json={}, headers=auth)
    assert r.status_code == 200 and "rolled back" in r.json()["message"], r.text
    assert client.get("/api/models/ui").json()["release"]["candidate"] is None


def test_tuning_studies_and_their_trials(client, home):
    assert client.get("/api/studies").json() == []
    make_study(home.home.root, "tune-ui")
    [summary] = client.get("/api/studies").json()
    assert summary["name"] == "tune-ui" and summary["trials"] == 4 and summary["direction"] == "maximize"
    assert set(summary["best_params"]) == {"train.learning_rate", "model.embed_dim"}
    study = client.get("/api/studies/tune-ui").json()
    assert [t["number"] for t in study["trials"]] == [0, 1, 2, 3] and all(t["state"] == "complete" for t in study["trials"])
    assert list(study["trials"][0]["intermediate"]) == ["1", "2"]
    assert client.get("/api/studies/nope").status_code == 404


def test_bad_requests_and_missing_things_are_clear(client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/runs/nope").status_code == 404 and "no run 'nope'" in client.get("/api/runs/nope").json()["detail"]
    assert client.get("/api/models/nope").status_code == 404
    assert client.get("/api/models/ui/9/lineage").status_code == 404
    assert client.get("/api/models/ui/9/evaluation").status_code == 404
    r = client.post("/api/actions/run", json={"overrides": ["--cfg"]}, headers=auth)
    assert r.status_code == 422 and "key=value" in r.json()["detail"]
    r = client.post("/api/actions/run", json={"overrides": ["train.no_such_key=1"]}, headers=auth)
    assert r.status_code == 409 and "no_such_key" in r.json()["detail"]  # refused before any job is submitted
    r = client.post("/api/actions/releases/ui/start", json={"version": "2", "mode": "blue"}, headers=auth)
    assert r.status_code == 422 and "canary or shadow" in r.json()["detail"]
    assert client.get("/api/artifact", params={"uri": "/etc/passwd"}).status_code == 404


def test_an_empty_token_is_made_once_and_kept_private(tmp_path):
    cfg = compose_config([f"home.root={tmp_path}"])
    first = token_of(cfg)
    path = tmp_path / "ui" / "token"
    assert len(first) >= 24 and token_of(cfg) == first and oct(path.stat().st_mode & 0o777) == "0o600"
    r = TestClient(build_app(cfg, first)).post("/api/actions/releases/ctr/rollback", json={}, headers={"Authorization": f"Bearer {first}"})
    assert r.status_code != 401  # the made token is the one the app accepts
    assert json.loads(json.dumps(r.json()))["detail"]


def test_a_home_on_object_storage_needs_a_given_token():
    from mlsys.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ui\.token is empty and the home s3://bucket/mlsys is not a local path"):
        token_of(compose_config(["home.root=s3://bucket/mlsys"]))
    assert token_of(compose_config(["home.root=s3://bucket/mlsys", "ui.token=given"])) == "given"


@pytest.mark.parametrize("override,key", [("ui.port=0", "ui.port"), ("ui.runs=0", "ui.runs"), ("ui.route_prefix=/", "ui.route_prefix"),
                                          ("ui.route_prefix=ui", "ui.route_prefix"), ("ui.mode=cluster", "ui.mode")])
def test_bad_ui_config_names_its_key(override, key):
    from mlsys.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose_config([override])


def test_behind_a_route_prefix_every_path_of_the_pages_is_under_it(home):
    """Behind a Serve proxy at ``ui.route_prefix`` the ASGI root_path is the prefix: the page's base is it,
    and no page or script addresses anything from the server's root."""
    from mlsys.ui.app import STATIC

    page = TestClient(build_app(home, TOKEN), root_path="/ui").get("/")
    assert page.status_code == 200 and '<base href="/ui/">' in page.text
    sources = page.text.replace('<base href="/ui/">', "") + (STATIC / "app.js").read_text()
    import re

    assert not re.findall(r"""(?:href|src)="/|fetch\("/|["`]/(?:api|static|docs)\b""", sources)


def test_private_reads_need_the_token_and_the_page_still_loads(home):
    import dataclasses

    cfg = dataclasses.replace(home, ui=dataclasses.replace(home.ui, private_reads=True))
    private = TestClient(build_app(cfg, TOKEN))
    for path in ("/api/home", "/api/runs", "/api/models/ui", "/api/monitoring/ui", "/api/features"):
        r = private.get(path)
        assert r.status_code == 401 and "ui.private_reads" in r.json()["detail"], (path, r.text)
        assert private.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200, path
    assert private.get("/").status_code == 200 and private.get("/static/app.js").status_code == 200
    assert private.get("/api/home", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = private.post("/api/actions/releases/ui/rollback", json={})
    assert r.status_code == 401 and "changes something" in r.json()["detail"]  # actions: still their own refusal


def test_private_reads_take_the_pages_cookie_so_report_links_open_but_actions_do_not(home):
    """A report link is followed by the browser itself, without the page's Authorization header."""
    import dataclasses
    from pathlib import Path

    from mlsys.ui.app import READ_COOKIE

    report = Path(home.home.root) / "reports" / "data.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("<html><body>the data report</body></html>")
    cfg = dataclasses.replace(home, ui=dataclasses.replace(home.ui, private_reads=True))
    link = {"url": "/api/artifact", "params": {"uri": str(report)}}
    assert TestClient(build_app(cfg, TOKEN)).get(**link).status_code == 401
    wrong = TestClient(build_app(cfg, TOKEN), cookies={READ_COOKIE: "wrong"})
    assert wrong.get(**link).status_code == 401
    given = TestClient(build_app(cfg, TOKEN), cookies={READ_COOKIE: TOKEN})
    r = given.get(**link)
    assert r.status_code == 200 and "the data report" in r.text
    assert given.get("/api/home").status_code == 200
    r = given.post("/api/actions/releases/ui/rollback", json={})
    assert r.status_code == 401 and "changes something" in r.json()["detail"]


def test_a_serve_config_builds_the_dashboard_app_and_refuses_bad_args(tmp_path):
    """``import_path: mlsys.ui.app:app_builder`` in a Serve config or a RayService: Hydra overrides in ``args``."""
    from ray.serve import Application

    from mlsys.errors import ConfigError
    from mlsys.ui.app import app_builder

    assert isinstance(app_builder({"overrides": [f"home.root={tmp_path}"]}), Application)
    with pytest.raises(ConfigError, match="list of key=value strings"):
        app_builder({"overrides": "home.root=/x"})
    with pytest.raises(ConfigError, match=r"ui\.route_prefix"):
        app_builder({"overrides": ["ui.route_prefix=/"]})
