"""The dashboard as a person uses it: real headless Chromium against `mlsys ui`'s app over the session's
trained home (real pipeline runs, a real registry, the monitor's folder). Each page is opened, clicked
through and saved as a screenshot under ``.artifacts/ui/`` (1280x800)."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import requests

from tests.browser import available, chromium
from tests.conftest import REPO, free_port, wait_until

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOKEN = "ui-test-token"
MODEL = "ui"  # a model of its own for the release clicks: other modules' aliases are left alone
SHOTS = REPO / ".artifacts" / "ui"


@pytest.fixture(scope="module")
def ui(trained):
    import mlsys
    from mlsys.registry.mlflow_store import client, resolve

    assert available(), "Debian's chromium and chromium-driver are missing: `make test-servers` installs them"
    home, overrides, result = trained
    uri = f"sqlite:///{home}/mlflow.db"
    c = client(uri)
    c.create_registered_model(MODEL)
    for _ in range(2):
        c.create_model_version(MODEL, source=resolve(uri, "ctr/1").source)
    c.set_registered_model_alias(MODEL, "champion", "1")
    second = mlsys.run_pipeline([*overrides, "pipeline.until=transform"])  # all cached: a second run to compare
    SHOTS.mkdir(parents=True, exist_ok=True)
    with _dashboard(overrides) as url, chromium() as browser:
        yield url, browser, result, second, uri


@contextlib.contextmanager
def _dashboard(overrides: list[str]):
    """``build_app`` over the home of ``overrides`` in a uvicorn thread on a free port; yields its URL."""
    import uvicorn

    from mlsys.api.config import compose_config
    from mlsys.ui.app import build_app

    port = free_port()
    cfg = compose_config([*overrides, f"ui.port={port}", f"ui.token={TOKEN}"])
    server = uvicorn.Server(uvicorn.Config(build_app(cfg, TOKEN), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(f"{url}/"), "the dashboard to answer", 30)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.ConnectionError:
        return False


def _open(browser, url: str, hash_: str):
    browser.get("about:blank")  # a fresh load even when the page is already open
    browser.get(f"{url}/{hash_}")
    return _ready(browser, hash_)


def _ready(browser, hash_: str, timeout: float = 20):
    """Wait until the page for ``hash_`` has drawn (app.js sets body[data-ready] after each render)."""
    wait_until(lambda: browser.execute_script("return document.body.dataset.ready") == hash_, f"page {hash_}", timeout, 0.05)
    return browser.find_element("tag name", "main")


def _shot(browser, name: str) -> None:
    time.sleep(0.3)  # plotly draws on the next animation frame
    browser.save_screenshot(str(SHOTS / f"{name}.png"))


def _press(browser, element) -> None:
    """Click ``element`` as a person would: scrolled to the middle of the view first. Selenium scrolls a
    target above the view to the very top, under the sticky header, and the header takes the click."""
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def _click(browser, text: str) -> None:
    _press(browser, browser.find_element("link text", text))


def test_from_the_runs_to_a_run_to_its_data(ui):
    url, browser, result, second, _ = ui
    main = _open(browser, url, "#/runs")
    assert main.find_element("tag name", "h1").text.startswith("Pipeline runs")
    names = [a.text for a in main.find_elements("css selector", "tbody a")]
    assert len(names) >= 2, names
    _shot(browser, "runs")
    _press(browser, browser.find_element("css selector", f"a[href='#/runs/{result.run_id}']"))
    main = _ready(browser, f"#/runs/{result.run_id}")
    steps = {row.find_elements("tag name", "td")[0].text: row.find_elements("tag name", "td")[1].text
             for row in main.find_elements("css selector", "section.card tbody tr")[:20] if row.find_elements("tag name", "td")}
    assert {"ingest", "transform", "train", "evaluate", "register"} <= set(steps), steps
    assert steps["train"] in ("ran", "cached")
    assert "eval_auc" in main.text
    _shot(browser, "run")
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    assert browser.execute_script("return window.scrollY") > 0, "the run page fits the window: scroll to top goes unchecked"
    browser.execute_script(f"location.hash = '#/data/{result.run_id}'")
    _ready(browser, f"#/data/{result.run_id}")
    assert browser.execute_script("return window.scrollY") == 0, "a new page opened scrolled down, where the last one was"
    browser.back()
    _ready(browser, f"#/runs/{result.run_id}")
    _click(browser, "data of this run")
    main = _ready(browser, f"#/data/{result.run_id}")
    assert "train:" in main.text and "eval:" in main.text and "Quarantined rows" in main.text
    assert "gender" in main.text and main.find_elements("css selector", ".chart .main-svg"), "the feature chart was not drawn"
    _shot(browser, "data")


def test_with_private_reads_the_token_opens_the_pages_and_the_report_links(ui, trained):
    """``ui.private_reads``: the page asks for the token; typed, it reads, and a report link (which the
    browser follows itself, without the page's header) opens the report, not a 401."""
    from selenium.webdriver.common.keys import Keys

    _, browser, result, _, _ = ui
    with _dashboard([*trained[1], "ui.private_reads=true"]) as url:
        browser.get("about:blank")
        browser.get(f"{url}/#/data/{result.run_id}")
        wait_until(lambda: "ui.private_reads" in browser.find_element("tag name", "main").text, "the page to ask for the token", 20)
        try:
            token = browser.find_element("id", "token")
            token.send_keys(TOKEN, Keys.TAB)  # the change event keeps it and draws the page
            wait_until(lambda: "Quarantined rows" in browser.find_element("tag name", "main").text, "the data page", 20)
            _click(browser, "the data report (HTML)")
            wait_until(lambda: "api/artifact" in browser.current_url, "the report link to be followed", 20)
            assert browser.find_element("tag name", "h1").text.startswith("Data report"), browser.page_source[:500]
        finally:
            browser.get(f"{url}/")
            browser.execute_script("sessionStorage.clear(); document.cookie = 'mlsys_ui_token=; path=/; max-age=0'")


def test_a_run_launched_from_the_page_runs_as_a_ray_job_with_its_log(ui):
    url, browser, result, _, _ = ui
    main = _open(browser, url, "#/runs")
    before = len(main.find_elements("css selector", "tbody a"))
    browser.find_element("id", "token").send_keys(TOKEN, "\t")
    browser.find_element("id", "overrides").send_keys("pipeline.until=statistics")
    _press(browser, browser.find_element("xpath", "//button[text()='Launch run']"))
    wait_until(lambda: "SUCCEEDED" in browser.find_element("tag name", "main").text, "the launched job to succeed", 300, 1)
    log = browser.find_element("css selector", "pre.log").text
    assert "[ingest] cached" in log and "[statistics] cached" in log, log[-2000:]
    assert len(_open(browser, url, "#/runs").find_elements("css selector", "tbody a")) == before + 1
    _shot(browser, "launch")


def test_two_runs_side_by_side(ui):
    url, browser, result, second, _ = ui
    _open(browser, url, "#/runs")
    for run in (result.run_id, second.run_id):
        row = browser.find_element("xpath", f"//a[@href='#/runs/{run}']/ancestor::tr")
        _press(browser, row.find_element("css selector", "input[type=checkbox]"))
    _press(browser, browser.find_element("xpath", "//button[text()='Compare two selected']"))
    ids = sorted([result.run_id, second.run_id])
    wait_until(lambda: browser.execute_script("return document.body.dataset.ready").startswith("#/diff/"), "the diff page", 20, 0.05)
    main = browser.find_element("tag name", "main")
    assert "pipeline.until=transform" in main.text and "Metrics" in main.text
    assert sorted(browser.execute_script("return location.hash").split("/")[2:]) == ids
    _shot(browser, "diff")


def test_from_a_model_to_its_lineage_to_its_data(ui):
    url, browser, result, _, _ = ui
    main = _open(browser, url, "#/models")
    assert main.find_element("tag name", "h1").text == "Model ctr"
    assert "champion" in main.text
    _shot(browser, "models")
    _click(browser, "version 1")
    main = _ready(browser, "#/lineage/ctr/1")
    nodes = [n.find_element("tag name", "strong").text for n in main.find_elements("css selector", ".node")]
    assert nodes[-1] == "ingest" and {"train", "transform", "register"} <= set(nodes), nodes
    assert "reads" in main.text
    assert "What the gate saw" in main.text and "blessed" in main.text and "overall" in main.text
    _shot(browser, "lineage")
    _click(browser, "its data")
    assert "train:" in _ready(browser, f"#/data/{result.run_id}").text


def test_a_canary_is_refused_without_the_token_then_started_and_rolled_back(ui):
    from mlsys.registry import releases

    url, browser, _, _, uri = ui
    main = _open(browser, url, f"#/models/{MODEL}")
    browser.find_element("id", "token").clear()  # no token (another test may have typed it in this tab)
    browser.find_element("id", "token").send_keys("\t")
    assert "No release in progress" in main.text
    version = main.find_element("css selector", "select[aria-label=version]")
    _press(browser, version.find_element("css selector", "option[value='2']"))
    percent = main.find_element("css selector", "input[aria-label='percent of users']")
    percent.clear()
    percent.send_keys("25")
    _press(browser, main.find_element("xpath", "//button[text()='Start release']"))
    error = wait_until(lambda: browser.find_elements("css selector", ".message.error"), "the refusal", 10)
    assert "401" in error[0].text and releases.read(uri, MODEL).candidate is None

    from selenium.webdriver.common.keys import Keys

    token = browser.find_element("id", "token")
    token.send_keys(TOKEN, Keys.TAB)  # kept for the session's actions
    _press(browser, browser.find_element("xpath", "//button[text()='Start release']"))
    wait_until(lambda: "In release: version 2, canary on 25% of users" in browser.find_element("tag name", "main").text, "the release shown", 15)
    current = releases.read(uri, MODEL)
    assert current.candidate == "2" and current.mode == "canary" and current.percent == 25
    _shot(browser, "release")
    _press(browser, browser.find_element("xpath", "//button[text()='Roll back release']"))
    wait_until(lambda: "No release in progress" in browser.find_element("tag name", "main").text, "the rollback shown", 15)
    assert releases.read(uri, MODEL).candidate is None and releases.read(uri, MODEL).champion == "1"


def test_the_monitoring_page_shows_drift_the_alert_it_fired_and_service_latency_and_errors(ui, trained):
    """Two windows of the ``ui`` model written by the replicas' sketcher, the second with a category's
    share moved 20 points, judged by a real monitor tick: the page charts the drift and lists the alert.
    Another replica's service health in the same windows (90 answers each; in the second, 10 of them slow
    and 5 errors) is merged in: the page charts p50, p99 and the error rate and lists them per window."""
    from mlsys.api import monitor as api_monitor
    from mlsys.api.config import compose_config
    from mlsys.monitor.config import monitor_dir
    from mlsys.monitor.online import WindowSketcher
    from tests.windows import sketch_windows

    url, browser, result, _, _ = ui
    cfg = compose_config([*trained[1], "serve.monitoring.window_s=60", "serve.monitoring.rows_per_request=0"])
    now = time.time()
    end = now - cfg.monitor.grace_s
    sketch_windows(cfg, MODEL, "1", result.output("ingest").events, end=end)
    stats = cfg.serve.monitoring
    health = WindowSketcher(stats, monitor_dir(stats.path, cfg.home.root), MODEL, replica="health", clock=lambda: end)
    for w, (slow, errors) in enumerate(((0, 0), (10, 5))):  # the windows sketch_windows wrote
        at = end - (2 - w) * stats.window_s - 1
        for i in range(90):
            health.served("1", latency_ms=400.0 if i < slow else 4.0, at=at)
        for _ in range(errors):
            health.served("1", status=500, at=at)
    health.close()
    tick = api_monitor.monitor_for(cfg, MODEL).tick(now=now)
    assert len(tick.reports) == 2 and any(t.alert.signal == "drift.linf.gender" for t in tick.transitions)
    summary = requests.get(f"{url}/api/monitoring/{MODEL}", timeout=10).json()["summary"]
    main = _open(browser, url, f"#/monitoring/{MODEL}")
    assert main.find_element("tag name", "h1").text == f"Monitoring of {MODEL}"
    assert f"{summary['windows']} windows ({summary['judged']} judged)" in main.text and summary["windows"] == 2
    assert f"{summary['firing']} alert(s) firing" in main.text and summary["firing"] >= 1
    assert main.find_elements("css selector", ".chart .main-svg"), "the drift chart was not drawn"
    firing = [r.text for r in main.find_elements("css selector", "section.card tbody tr") if "drift.linf.gender" in r.text]
    assert firing and "feature_drift" in firing[0] and "firing" in firing[0], firing
    _shot(browser, "monitoring")
    card = main.find_element("css selector", "section[aria-label='service latency and errors']")
    assert len(card.find_elements("css selector", ".chart .main-svg")) >= 2, "the latency and error charts were not drawn"
    titles = {t.text for t in card.find_elements("css selector", ".chart text.ytitle, .chart text.gtitle")}
    assert {"ms", "%", "latency (upper edge of its bucket)"} <= titles, titles  # plotly.js 3 draws no string-shorthand title
    rows = [r.text.split() for r in card.find_elements("css selector", "tbody tr")]
    assert [r[:1] + r[-9:] for r in rows] == [["v1", "90", "5", "0", "5.26%", "5", "ms", "500", "ms", "0"],  # newest first
                                               ["v1", "90", "0", "0", "0.00%", "5", "ms", "5", "ms", "0"]], rows
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", card)
    _shot(browser, "monitoring-service")


def test_the_features_page_shows_a_stores_views_freshness_and_online_rows(ui, trained):
    from tests.stores import small_store

    url, browser, _, _, _ = ui
    small_store(str(trained[0]), "ui_shop")
    main = _open(browser, url, "#/features")
    assert main.find_element("tag name", "h1").text == "Features"
    card = main.find_element("css selector", "section.store[data-project='ui_shop']")
    rows = {r.find_element("tag name", "code").text: r.text for r in card.find_elements("css selector", "tbody tr")[:4]}
    assert list(rows) == ["user_profile", "item_profile", "user_aggregates", "user_sequence"], rows
    assert "gender (string)" in rows["user_profile"] and rows["item_profile"].split()[-1] == "4"  # 4 items online
    assert "user_sequence_push" in rows["user_sequence"]
    assert "feature service ranking: user_profile, item_profile, user_aggregates, user_sequence" in card.text
    assert "sqlite" in card.find_elements("css selector", "tbody")[1].text and "ago)" in card.text  # materialized, with its age
    _shot(browser, "features")


def test_a_tuning_study_and_its_trials(ui, trained):
    from tests.studies import make_study

    url, browser, _, _, _ = ui
    make_study(trained[0], "tune-ui-browser", trials=5)
    _open(browser, url, "#/tuning")
    _click(browser, "tune-ui-browser")
    main = _ready(browser, "#/tuning/tune-ui-browser")
    assert "Trials (5)" in main.text and main.find_elements("css selector", ".chart .parcoords"), "no parallel coordinates"
    _shot(browser, "tuning")


def test_the_pages_are_usable_by_keyboard(ui):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    url, browser, result, _, _ = ui
    _open(browser, url, "#/monitoring")
    # From the page's content (focused after each render) Shift+Tab walks back up to the sections: as many
    # presses whatever the page holds (forward, each chart's plotly buttons are tab stops, a dozen per chart).
    for _ in range(12):
        ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
        if browser.execute_script("return document.activeElement.getAttribute('href')") == "#/runs":
            break
    else:
        pytest.fail("Shift+Tab never reached the Runs link")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    _ready(browser, "#/runs")
    for _ in range(60):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if (browser.execute_script("return document.activeElement.getAttribute('href')") or "").startswith("#/runs/"):
            break
    else:
        pytest.fail("Tab never reached a run's link")
    target = browser.execute_script("return document.activeElement.getAttribute('href')")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    assert "Steps" in _ready(browser, target).text


def test_on_a_cluster_the_dashboard_is_a_serve_app_at_its_route_prefix(ui, trained, serve_port):
    """``ui.mode=serve`` (what `mlsys ui` does on a cluster) deploys the same app on the cluster's Serve,
    beside the ranking apps, at ``ui.route_prefix``: in Chromium its pages load their scripts and data
    under the prefix and click through; its API and schema answer there; an action is refused without
    the token and reaches the registry with it (a promote with no release in progress: a clear 409)."""
    from ray import serve

    from mlsys.api.config import compose_config
    from mlsys.ui.app import APP_NAME, deploy

    _, browser, result, _, _ = ui
    home, overrides, _ = trained
    cfg = compose_config([*overrides, "ui.mode=serve", f"serve.port={serve_port}", f"ui.token={TOKEN}", "ui.route_prefix=/dash"])
    said = []
    base = deploy(cfg, echo=said.append)
    try:
        assert base == f"http://127.0.0.1:{serve_port}/dash/" and f"Serve application {APP_NAME}" in said[0], said
        assert requests.get(f"{base}api/home", timeout=10).json()["root"] == str(home)
        assert "/api/runs" in requests.get(f"{base}openapi.json", timeout=10).json()["paths"]
        assert requests.get(f"{base}docs", timeout=10).ok
        action = f"{base}api/actions/releases/{MODEL}/promote"
        assert requests.post(action, json={}, timeout=10).status_code == 401
        r = requests.post(action, json={}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert r.status_code == 409 and "has no version in release" in r.json()["detail"], r.text
        main = _open(browser, base.rstrip("/"), "#/runs")
        assert browser.execute_script("return typeof Plotly") == "object" and main.find_element("tag name", "h1").text.startswith("Pipeline runs")
        _press(browser, browser.find_element("css selector", f"a[href='#/runs/{result.run_id}']"))
        main = _ready(browser, f"#/runs/{result.run_id}")
        assert browser.current_url.startswith(base) and "ingest" in main.text
        _shot(browser, "serve-app")
    finally:
        serve.delete(APP_NAME)
