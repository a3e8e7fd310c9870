"""The registered model served by Ray Serve over HTTP: scores equal the offline model's, through
either graph, over /v1/rank and the KServe v2 protocol (driven by the stock tritonclient);
bad input is a 4xx naming the field (and a schemathesis fuzz of both APIs finds no 5xx).

One fused app (the default graph on CPU) and one split app share the module's Serve instance."""

import os
import subprocess
import threading
import time

import numpy as np
import pandas as pd
import pytest
import requests

import mlsys
from mlsys.api import serving as commands
from mlsys.api.config import compose_config
from mlsys.errors import ConfigError
from tests.conftest import MLSYS, REPO, free_port, wait_until


WINDOW_S = 4  # the app's online statistics windows (serve.monitoring.window_s)


@pytest.fixture(scope="module")
def served(trained, serve_port):
    home, overrides, result = trained
    cfg = compose_config([*overrides, f"serve.port={serve_port}", "serve.model=ctr/1", f"serve.monitoring.window_s={WINDOW_S}"])
    url = commands.start_server(cfg)
    yield url, home, result
    from ray import serve

    serve.delete(cfg.serve.app_name)


@pytest.fixture(scope="module")
def split_url(served, trained):
    """The same model as a split graph (ingress -> embedding -> batched dense) beside the fused app."""
    from mlsys.serve import app

    url, home, _ = served
    port = int(url.rsplit(":", 1)[1])
    cfg = compose_config([*trained[1], f"serve.port={port}", "serve.model=ctr/1", "serve.graph=split",
                          "serve.app_name=ranking-split", "serve.route_prefix=/split"])
    model = commands.resolve_model(cfg)
    yield app.start(cfg.serve, model.source, model.name, model.version)
    from ray import serve

    serve.delete(cfg.serve.app_name)


@pytest.fixture(scope="module")
def offline(served):
    _, home, _ = served
    return mlsys.load_model("models:/ctr/1", engine="torch", tracking_uri=f"sqlite:///{home}/mlflow.db")


def _requests(result, n_users=5):
    frame = pd.read_parquet(result.output("transform").eval, columns=["user_id", "item_id"])
    for user, group in list(frame.groupby("user_id"))[:n_users]:
        yield int(user), [int(i) for i in group["item_id"].head(20)]


def test_healthz(served):
    url, _, _ = served
    body = requests.get(f"{url}/healthz", timeout=10).json()
    pid = body.pop("replica_pid")
    assert isinstance(pid, int)
    assert body == {"status": "ok", "model": "ctr", "version": "1", "graph": "fused",  # auto on CPU: fused
                    "candidate": None, "refused": [], "follows": None, "switches": 0}  # ctr/1: pinned, no release


def test_served_scores_equal_offline_model(served):
    url, home, result = served
    offline = mlsys.load_model("models:/ctr/1", engine="torch", tracking_uri=f"sqlite:///{home}/mlflow.db")
    for user, candidates in _requests(result):
        answer = requests.post(f"{url}/v1/rank", json={"user_id": user, "candidates": candidates}, timeout=30).json()
        served_scores = {i["item_id"]: i["score"] for i in answer["items"]}
        expected = offline.rank(user, candidates)
        assert [i.item_id for i in expected.items] == [i["item_id"] for i in answer["items"]]
        np.testing.assert_allclose([served_scores[i.item_id] for i in expected.items], [i.score for i in expected.items], atol=1e-5)
        scores = [i["score"] for i in answer["items"]]
        assert scores == sorted(scores, reverse=True)


def test_top_k_and_unknown_ids(served):
    url, _, _ = served
    answer = requests.post(f"{url}/v1/rank", json={"user_id": 10**9, "candidates": [1, 2, 10**9], "k": 2}, timeout=30)
    assert answer.status_code == 200
    body = answer.json()
    assert len(body["items"]) == 2 and body["unknown_user"] is True and body["unknown_items"] == 1


def test_bad_request_names_the_field(served):
    url, _, _ = served
    answer = requests.post(f"{url}/v1/rank", json={"user_id": 1, "candidates": []}, timeout=30)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "candidates"]


def test_port_in_use_is_one_clear_line(served, trained):
    url, home, _ = served
    port = url.rsplit(":", 1)[1]
    proc = subprocess.run(
        [MLSYS, "serve", f"home.root={home}", f"serve.port={port}"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"mlsys: error: serve.port={port}: port {port} on 127.0.0.1 is already in use"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_second_app_joins_the_running_serve_and_another_port_is_refused_by_name(served, trained):
    """One Serve has one HTTP port: asked for another, start_server says so (it used to deploy on the
    running port and print a URL nothing answered)."""
    url, _, _ = served
    port = int(url.rsplit(":", 1)[1])
    other = compose_config([*trained[1], f"serve.port={free_port()}", "serve.model=ctr/1", "serve.app_name=elsewhere"])
    with pytest.raises(ConfigError, match=rf"serve\.port={other.serve.port}, but this cluster's Serve already listens on port {port}.*serve\.port={port}"):
        commands.start_server(other)


def test_the_split_graph_scores_as_the_fused_one(served, split_url, offline):
    url, _, result = served
    assert requests.get(f"{split_url}/healthz", timeout=10).json()["graph"] == "split"
    for user, candidates in _requests(result, n_users=3):
        fused = requests.post(f"{url}/v1/rank", json={"user_id": user, "candidates": candidates}, timeout=30).json()
        split = requests.post(f"{split_url}/v1/rank", json={"user_id": user, "candidates": candidates}, timeout=30).json()
        assert [i["item_id"] for i in split["items"]] == [i["item_id"] for i in fused["items"]]
        np.testing.assert_allclose([i["score"] for i in split["items"]], [i["score"] for i in fused["items"]], atol=1e-5)


def _pairs(result, n_users=4):
    users, items = [], []
    for user, candidates in _requests(result, n_users):
        users += [user] * len(candidates)
        items += candidates
    users += [10**9, 10**9]  # an unknown user, one known and one unknown item
    items += [items[0], 10**9]
    return np.array(users, dtype=np.int64), np.array(items, dtype=np.int64)


def _expected(offline, users, items):
    out = np.empty(len(users), dtype=np.float32)
    for user in dict.fromkeys(users.tolist()):
        rows = np.flatnonzero(users == user)
        out[rows] = offline.rank(user, items[rows].tolist()).scores
    return out


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("app", ["fused", "split"])
def test_tritonclient_scores_several_users_candidates_in_one_call(served, split_url, offline, binary, app):
    import tritonclient.http as triton

    url = served[0] if app == "fused" else split_url
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("ctr")
    meta = client.get_model_metadata("ctr")
    assert meta["versions"] == ["1"] and [i["name"] for i in meta["inputs"]][:2] == ["user_id", "item_id"]
    users, items = _pairs(served[2])
    inputs = [triton.InferInput("user_id", [len(users)], "INT64"), triton.InferInput("item_id", [len(items)], "INT64")]
    inputs[0].set_data_from_numpy(users, binary_data=binary)
    inputs[1].set_data_from_numpy(items, binary_data=binary)
    result = client.infer("ctr", inputs, model_version="1", outputs=[triton.InferRequestedOutput("score", binary_data=binary)])
    scores = result.as_numpy("score")
    assert scores.dtype == np.float32 and scores.shape == (len(users),)
    np.testing.assert_allclose(scores, _expected(offline, users, items), atol=1e-5)
    with pytest.raises(triton.InferenceServerException, match="version '2' is not served"):
        client.infer("ctr", inputs, model_version="2")


@pytest.mark.parametrize("route,body,status,field", [
    ("/v1/rank", b'{"user_id": 1, "candidates": [1, 2]', 422, "json"),
    ("/v1/rank", b'{"user_id": "one", "candidates": [1]}', 422, "user_id"),
    ("/v1/rank", b'{"candidates": [1]}', 422, "user_id"),
    ("/v1/rank", b'{"user_id": 1, "candidates": [1, true]}', 422, "candidates"),
    ("/v1/rank", b'{"user_id": 1, "candidates": [1, "2"]}', 422, "candidates"),
    ("/v1/rank", b'{"user_id": 1, "candidates": [1, 2.5]}', 422, "candidates"),
    ("/v1/rank", b'{"user_id": 100000000000000000000000, "candidates": [1]}', 422, "user_id"),
    ("/v1/rank", b'{"user_id": 1, "candidates": [1], "k": 0}', 422, "k"),
    ("/v1/rank", b'{"user_id": 1, "candidates": [1], "context": {"nope": 1}}', 400, "nope"),
    ("/v2/models/ctr/infer", b'{"inputs": [{"name": "user_id", "shape": [1], "datatype": "FP32", "data": [1.0]}]}', 400, "FP32"),
    ("/v2/models/ctr/infer", b'{"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [NaN]}]}', 400, "user_id"),
    ("/v2/models/ctr/infer", b'not json', 400, "JSON"),
    ("/v2/models/nope/infer", b'{}', 404, "nope"),
])
def test_bad_input_is_a_4xx_naming_the_field(served, route, body, status, field):
    url = served[0]
    answer = requests.post(f"{url}{route}", data=body, headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == status, answer.text
    assert field in answer.text
    if route.startswith("/v2"):
        assert set(answer.json()) == {"error"}


def test_a_form_body_is_a_422_not_a_500(served):
    """A body that is not JSON at all (curl -d's form encoding): FastAPI's error holds the raw bytes,
    which the error handler once failed to encode (a 500)."""
    answer = requests.post(f"{served[0]}/v1/rank", data="xx", headers={"content-type": "application/x-www-form-urlencoded"},
                           timeout=30)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["input"] == "xx"


def test_haproxy_on_a_ray_started_without_it_is_one_clear_error(served, trained):
    """serve.proxy=haproxy is taken when Ray starts: the session's Ray has Serve's Python proxy."""
    url, _, _ = served
    cfg = compose_config([*trained[1], f"serve.port={url.rsplit(':', 1)[1]}", "serve.model=ctr/1", "serve.proxy=haproxy"])
    with pytest.raises(ConfigError, match=r"serve\.proxy=haproxy, but this Ray was started without RAY_SERVE_ENABLE_HA_PROXY=1"):
        commands.start_server(cfg)


def test_mlsys_serve_behind_haproxy_scores_as_the_offline_model_and_stops_clean(trained, offline):
    """`mlsys serve serve.proxy=haproxy` on its own embedded Ray: HAProxy in front, the ingress replica answering
    HTTP itself (direct ingress) in Serve's throughput-optimized mode, the same scores over both protocols; Ctrl-C
    leaves no HAProxy behind."""
    import signal

    home, overrides, result = trained
    port = free_port()
    proc = subprocess.Popen([MLSYS, "serve", *overrides, "serve.model=ctr/1", f"serve.port={port}", "serve.proxy=haproxy"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []  # mlsys serve's output as it comes
    reader = threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:] or "no answer"
            try:
                if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # HAProxy may hold a request until the replica is up
                pass
            time.sleep(1)
        haproxy = subprocess.run(["pgrep", "-s", str(proc.pid), "haproxy"], capture_output=True, text=True).stdout.split()
        assert haproxy, "no HAProxy runs in mlsys serve's session"
        for user, candidates in _requests(result, n_users=2):
            answer = requests.post(f"{url}/v1/rank", json={"user_id": user, "candidates": candidates}, timeout=30).json()
            expected = offline.rank(user, candidates)
            assert [i["item_id"] for i in answer["items"]] == [i.item_id for i in expected.items]
            np.testing.assert_allclose([i["score"] for i in answer["items"]], [i.score for i in expected.items], atol=1e-5)
        body = {"inputs": [{"name": "user_id", "datatype": "INT64", "shape": [2], "data": [1, 2]},
                           {"name": "item_id", "datatype": "INT64", "shape": [2], "data": [50, 172]}]}
        out = requests.post(f"{url}/v2/models/ctr/infer", json=body, timeout=30).json()["outputs"][0]
        np.testing.assert_allclose(out["data"], [offline.rank(1, [50]).items[0].score, offline.rank(2, [172]).items[0].score],
                                   atol=1e-5)
        assert requests.post(f"{url}/v1/rank", json={"user_id": 1, "candidates": []}, timeout=30).status_code == 422
        # The address line, printed once serve.run has returned (after /healthz can already answer).
        wait_until(lambda: any("proxy haproxy" in line for line in lines), timeout=60, what="mlsys serve's [serve] line")
        assert any(line.startswith(f"[serve] ctr version 1 at http://127.0.0.1:{port}") for line in lines), "".join(lines)[-3000:]
        # With HAProxy comes Ray Serve's throughput-optimized mode: its controller says so when it starts.
        wait_until(lambda: any("Throughput optimized Ray Serve enabled" in line for line in lines), timeout=30,
                   what="Serve's throughput-optimized mode")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(10)
    time.sleep(2)
    assert not any(subprocess.run(["ps", "-p", pid], capture_output=True).returncode == 0 for pid in haproxy), \
        "HAProxy outlived mlsys serve"


def test_too_many_candidates_and_oversized_bodies_are_refused(served):
    url = served[0]
    answer = requests.post(f"{url}/v1/rank", json={"user_id": 1, "candidates": list(range(1, 1002))}, timeout=30)
    assert answer.status_code == 400 and "limit 1000" in answer.json()["detail"]
    huge = b'{"user_id": 1, "candidates": [' + b"1, " * 2_000_000 + b"1]}"
    answer = requests.post(f"{url}/v1/rank", data=huge, headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 413 and "serve.max_body_bytes" in answer.text


def test_the_openapi_docs_cover_both_protocols(served):
    paths = requests.get(f"{served[0]}/openapi.json", timeout=10).json()["paths"]
    assert {"/v1/rank", "/v2/health/live", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"} <= set(paths)
    assert requests.get(f"{served[0]}/docs", timeout=10).status_code == 200


def test_a_fuzz_of_both_apis_finds_no_server_error(served):
    """schemathesis generates valid and invalid requests for every operation of the live OpenAPI schema:
    never a 5xx, never a response slower than 5 s."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    url = served[0]
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    failures: list[str] = []
    calls = {"n": 0}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=15, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def fuzz(case):
                start = time.perf_counter()
                response = case.call(base_url=url, timeout=10)
                elapsed = time.perf_counter() - start
                calls["n"] += 1
                if response.status_code >= 500 or elapsed > 5:
                    failures.append(f"{case.method} {case.formatted_path} ({mode.value}) -> {response.status_code} "
                                    f"in {elapsed:.1f}s: {response.text[:200]}")

            try:
                fuzz()
            except Unsatisfiable:  # no invalid request exists for an operation without inputs (GET /healthz)
                assert mode is GenerationMode.NEGATIVE
    assert calls["n"] > 100
    assert not failures, "\n".join(failures[:10])


def _fast_rules(tmp_path) -> tuple[str, str]:
    """monitoring/prometheus's rules as shipped, but the client-error alert with `for: 0s` and a 0 threshold
    (the recipe in monitoring/README.md): a test can fire it with a few 422s."""
    rules = (REPO / "monitoring" / "prometheus" / "rules.yml").read_text()
    for old, new in (("mlsys:rank_4xx:ratio_rate5m > 0.05", "mlsys:rank_4xx:ratio_rate5m > 0"), ("for: 15m", "for: 0s")):
        assert rules.count(old) == 1, old
        rules = rules.replace(old, new)
    (tmp_path / "rules.yml").write_text(rules)
    return str(REPO / "monitoring" / "prometheus" / "recording.yml"), str(tmp_path / "rules.yml")


def test_prometheus_reads_the_per_stage_metrics_and_fires_the_shipped_alert_rules(served, split_url, tmp_path):
    """A real prometheus server scrapes this Ray node's metrics endpoint, reads every stage's series back, and
    evaluates monitoring/prometheus's rules: the client-error alert fires on the app's own 422s."""
    import ray

    from tests.prometheus_server import PrometheusServer

    url, _, result = served
    node = ray._private.worker.global_worker.node
    with PrometheusServer.start([f"{node.node_ip_address}:{node.metrics_export_port}"], rule_files=_fast_rules(tmp_path)) as prom:
        for user, candidates in _requests(result, n_users=3):
            for base in (url, split_url):
                assert requests.post(f"{base}/v1/rank", json={"user_id": user, "candidates": candidates}, timeout=30).ok
        latency = 'sum by (stage) (ray_mlsys_stage_latency_ms_count{model="ctr", version="1"})'
        prom.wait_for(latency)
        deadline = time.monotonic() + 60
        while {r["metric"]["stage"] for r in prom.query(latency)} < {"features", "score", "embedding", "dense", "request"}:
            assert time.monotonic() < deadline, prom.query(latency)
            time.sleep(1)
        prom.wait_for('sum(ray_mlsys_requests_total{model="ctr", version="1", route="/v1/rank"})')
        prom.wait_for('sum by (stage) (ray_mlsys_batch_size_count{stage="dense"})')
        assert requests.post(f"{url}/v1/rank", json={"user_id": 1, "candidates": []}, timeout=30).status_code == 422
        prom.wait_for('sum(ray_mlsys_errors_total{route="/v1/rank", status="422"})')
        prom.wait_for('sum(ray_mlsys_candidates_count{model="ctr"})')
        # rate() needs two scrapes of the 422 counter: bad requests keep coming until the alert fires.
        deadline = time.monotonic() + 120
        while not prom.firing("MlsysRankClientErrorRatioHigh"):
            assert time.monotonic() < deadline, (prom.query("mlsys:rank_4xx:ratio_rate5m"), prom.query("ALERTS"))
            requests.post(f"{url}/v1/rank", json={"user_id": 1, "candidates": []}, timeout=30)
            time.sleep(1)
        [alert] = [a for a in prom.firing("MlsysRankClientErrorRatioHigh") if a.get("version") == "1"]
        assert alert["model"] == "ctr" and alert["severity"] == "info"
        assert not prom.firing("MlsysRankErrorRatioHigh") and not prom.firing("MlsysVersionRefused")


def _one_window(url: str, requests_of, answers: list) -> float:
    """Requests from the next window's start to just before its end (their answers appended to
    ``answers``); returns that window's start."""
    start = (time.time() // WINDOW_S + 1) * WINDOW_S
    time.sleep(start - time.time() + 0.2)
    with requests.Session() as session:
        while time.time() < start + WINDOW_S - 0.3:
            user, candidates = requests_of()
            r = session.post(f"{url}/v1/rank", json={"user_id": user, "candidates": candidates}, timeout=30)
            assert r.ok
            answers.append((time.time(), r.json()))
    return start


@pytest.fixture
def webhook():
    from tests.webhook_server import WebhookServer

    with WebhookServer() as hook:
        yield hook


def test_the_monitor_judges_what_serving_scored_and_a_planted_shift_fires_a_drift_alert(served, trained, tmp_path, webhook):
    """Live traffic: serving sketches each window; the monitor merges and judges them (skew against the
    version's training statistics, drift against the previous window); a category's share moved by 20
    points in one window fires the drift alert, which a real local webhook receives."""
    from mlsys.api import monitor as api_monitor

    url, home, result = served
    received = webhook.bodies
    cfg = compose_config([*trained[1], f"serve.monitoring.window_s={WINDOW_S}", "monitor.grace_s=2", "monitor.min_rows=100",
                          f"monitor.webhook.url={webhook.url}", f"monitor.quality.window_s={WINDOW_S}", "monitor.quality.attribution_s=1"])
    controller = api_monitor.Controller(cfg)
    controller.step()  # what earlier tests' traffic left
    users = pd.read_parquet(result.output("transform").users, columns=["user_id", "gender"])
    items = [c for _, c in _requests(result, n_users=1)][0]
    rng = np.random.default_rng(0)
    female, male = users.user_id[users.gender == "F"].tolist(), users.user_id[users.gender == "M"].tolist()
    base_share = len(female) / len(users)

    def mix(share: float):
        return lambda: (int(rng.choice(female if rng.random() < share else male)), items)

    answers: list = []
    normal = [_one_window(url, mix(base_share), answers) for _ in range(2)]
    shifted = _one_window(url, mix(base_share + 0.2), answers)
    # Delayed labels through POST /v1/events, with the answer's request id: a user clicks an item with the
    # probability the model gave it (the model is right). The first window's only: a few hundred events.
    clicks = [{"request_id": body["request_id"], "user_id": body["user_id"], "item_id": item["item_id"], "clicked": True,
               "timestamp": at + 0.1} for at, body in answers if normal[0] <= at < normal[0] + WINDOW_S
              for item in body["items"] if rng.random() < item["score"]]
    with requests.Session() as session:
        events = [session.post(f"{url}/v1/events", json=click, timeout=30) for click in clicks]
    assert all(e.status_code == 200 and e.json()["labelled"] and e.json()["history"] is None for e in events), events[0].text
    time.sleep(max(0.0, shifted + WINDOW_S + 3 - time.time()))  # the grace, the attribution, the feature log's flush
    tick, _ = controller.step()
    reports = {r.start: r for r in tick.reports if r.version == "1"}
    assert set(normal + [shifted]) <= set(reports), (sorted(reports), normal, shifted)
    steady, moved = reports[normal[1]], reports[shifted]
    assert steady.judged and moved.judged and moved.requests > 20
    for start in (normal[1], shifted):  # every answer is in its window's service health, with its latency
        health, sent = reports[start].service, sum(1 for at, _ in answers if start <= at < start + WINDOW_S)
        assert abs(health["requests"] - sent) <= 1 and sum(health["latency"]) == health["requests"] and health["errors"] == 0, (health, sent)
    assert moved.baseline and {"gender", "age", "occupation"} <= set(moved.skew), moved.skew  # against training
    assert steady.drift["gender"]["linf"] < 0.1 < moved.drift["gender"]["linf"], (steady.drift["gender"], moved.drift["gender"])
    # The planted shift is 20 points in expectation; what the two windows really saw is in the answers
    # (sample_rate 1.0: the sketches count every request), so the comparator must find exactly that.
    def female_share(start: float) -> float:
        genders = [user_gender[body["user_id"]] for at, body in answers if start <= at < start + WINDOW_S]
        return genders.count("F") / len(genders)

    user_gender = dict(zip(users.user_id, users.gender))
    seen = abs(female_share(shifted) - female_share(normal[1]))
    assert moved.drift["gender"]["linf"] == pytest.approx(seen, abs=0.03), (moved.drift["gender"], seen)
    fired = [t for t in tick.transitions if t.notifies and t.alert.signal == "drift.linf.gender"]
    assert fired and fired[-1].alert.state.value == "firing" and fired[-1].alert.updated_at == moved.end
    [last] = [b for b in received if b["signal"] == "drift.linf.gender"][-1:]
    assert last["status"] == "firing" and last["alert"] == "feature_drift" and last["labels"] == {"model": "ctr"}
    quality = {w.start: w for w in tick.quality if w.version == "1"}
    assert set(normal + [shifted]) <= set(quality), (sorted(quality), normal)
    first = quality[normal[0]]
    assert abs(first.requests - sum(1 for at, _ in answers if normal[0] <= at < normal[0] + WINDOW_S)) <= 1
    assert first.rows == 20 * first.requests and first.clicks == len(clicks) and 0 < first.clicks < first.rows
    assert first.auc > 0.6 and "auc" in first.offline  # clicks follow the model's ranking; offline: the version's eval_auc
    status = api_monitor.status(cfg)
    assert "feature_drift: drift.linf.gender" in status and "ctr v1" in status, status
    metrics = requests.get(f"{url}/v1/metrics", timeout=10).json()["monitoring"]
    assert metrics["sketched_requests"] > 0 and metrics["errors"] == 0 and metrics["dropped"] == 0


def test_online_learning_on_live_traffic_hot_pushes_a_model_that_ranks_a_newly_clicked_item_higher(served, trained):
    """The streaming loop, closed: an app follows ``ctr@online``; users suddenly click one item (through
    POST /v1/events, by request id); each update warm-starts from what serves, passes the fast gate and is
    pushed, and the app hot-reloads it. Within three updates the app ranks the item higher, and the
    learned model's AUC on the new traffic beats the static model's on the same rows.
    Last in the module: its pushes add versions to the session's registry (under the alias ``online``)."""
    from ray import serve

    from mlsys.api import monitor as api_monitor
    from mlsys.evaluate.metrics import auc
    from mlsys.features.feature_log import join_labels, read_feature_log
    from mlsys.registry import mlflow_store
    from mlsys.registry.package import read_package
    from mlsys.registry.scoring import PackageScorer
    from mlsys.serve import app

    url, home, result = served
    mlflow_store.client(f"sqlite:///{home}/mlflow.db").set_registered_model_alias("ctr", "online", "1")
    cfg = compose_config([*trained[1], f"serve.port={url.rsplit(':', 1)[1]}", "serve.model=ctr@online", "serve.app_name=ranking-online",
                          "serve.route_prefix=/online", "serve.release.poll_s=1", f"serve.monitoring.window_s={WINDOW_S}",
                          "monitor.online.enabled=true", "monitor.online.alias=online", "monitor.online.min_rows=2000",
                          "monitor.online.min_new_rows=1000", "monitor.online.every_s=1", "monitor.online.epochs=3", "monitor.online.lr=0.01",
                          "monitor.quality.attribution_s=1"])
    model = commands.resolve_model(cfg)
    store, log_dir = commands.online_features(cfg)
    online = app.start(commands.served_config(cfg), model.source, model.name, model.version, store, log_dir, commands.following(cfg))
    try:
        users = pd.read_parquet(result.output("transform").users, columns=["user_id"]).user_id.tolist()
        items = next(_requests(result, n_users=1))[1]
        rng = np.random.default_rng(3)

        answers = [requests.post(f"{online}/v1/rank", json={"user_id": u, "candidates": items}, timeout=30).json() for u in users[:30]]
        probe = np.array([[{i["item_id"]: i["score"] for i in a["items"]}[c] for c in items] for a in answers])
        hot = items[int(np.argmin(probe.mean(axis=0)))]  # the item the static model likes least
        controller = api_monitor.Controller(cfg)
        controller.step()  # the learner starts its watermark: it learns from what is served from now on

        def hot_rank(scores) -> float:
            column = scores[:, items.index(hot)]
            return float((scores > column[:, None]).sum(axis=1).mean() + 1)

        def live_round(n: int = 150):
            """``n`` requests (3,000 rows), and their clicks: the hot item at 70%, any other at 2%."""
            answers, clicks = [], []
            with requests.Session() as session:
                while len(answers) < n:
                    body = session.post(f"{online}/v1/rank", json={"user_id": int(rng.choice(users)), "candidates": items}, timeout=30).json()
                    answers.append(body)
                    for item in body["items"]:
                        if rng.random() < (0.7 if item["item_id"] == hot else 0.02):
                            clicks.append({"request_id": body["request_id"], "user_id": body["user_id"], "item_id": item["item_id"],
                                           "clicked": True, "timestamp": time.time()})
                for click in clicks:
                    assert session.post(f"{online}/v1/events", json=click, timeout=30).json()["labelled"]
            scores = np.array([[{i["item_id"]: i["score"] for i in a["items"]}[c] for c in items] for a in answers])
            return answers, clicks, scores

        static_rank, ranks, updates, pushed = hot_rank(probe), [], [], "1"
        answers, clicks, scores = live_round()  # users start clicking the hot item
        for _ in range(3):  # K = 3 updates at most
            time.sleep(3.5)  # the attribution (1 s) and the feature log's flush (2 s)
            update = controller.step()[0].update
            assert update is not None and update.rows >= 1000, update
            updates.append(update)
            if update.pushed:
                pushed = update.version
                wait_until(lambda: requests.get(f"{online}/healthz", timeout=10).json()["version"] == pushed,
                           f"the app to hot-reload version {pushed}", timeout=60)
            answers, clicks, scores = live_round()  # served by the version pushed last: measured, then learned from
            ranks.append(hot_rank(scores))
            if pushed != "1" and ranks[-1] < static_rank - 3:
                break
        assert pushed != "1", [u.reason for u in updates]
        assert {a["version"] for a in answers} == {pushed}
        assert ranks[-1] < static_rank - 3, (static_rank, ranks, [u.line() for u in updates])

        ids = {a["request_id"] for a in answers}
        log = read_feature_log(log_dir)
        rows = join_labels(log[log.request_id.isin(ids)].reset_index(drop=True), pd.DataFrame(clicks).assign(label=1))
        static = PackageScorer(read_package(model.source)).score(rows.drop(columns=["request_id", "logged_at", "model", "model_version",
                                                                                     "position", "score", "label"]))
        y = rows.label.to_numpy()
        assert auc(y, rows.score.to_numpy()) > auc(y, static) + 0.05, (auc(y, rows.score.to_numpy()), auc(y, static))
        status = api_monitor.status(cfg)
        assert "online learning:" in status and "pushed" in status, status
        page = api_monitor.report(cfg).rsplit(" ", 1)[1]  # mlsys monitor report: every section from the same files
        html = open(page).read()
        pushes = sum(u.pushed for u in updates)
        assert f"{len(updates)} update(s), {pushes} pushed" in html and "gender" in html  # the earlier test's windows too
        assert "Online quality against the offline evaluation" in html and "<script src" not in html, page  # opens offline
    finally:
        serve.delete(cfg.serve.app_name)
