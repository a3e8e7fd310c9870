"""mlsys.monitor.report: the monitor's HTML page from a monitor folder written by the real classes (no Ray).

Window reports and quality windows as the monitor writes them, alerts fired and resolved by a real
Monitor tick (alerts.json, alerts.jsonl), a retraining job through the real Retrainer (the Jobs API
stood in for by two functions), online-learning updates as the learner saves them."""

from __future__ import annotations

import html
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from mlsys.monitor.config import MonitorConfig, RetrainConfig
from mlsys.monitor.drift import WindowReport
from mlsys.monitor.learning import LearnerState, Update
from mlsys.monitor.monitor import Monitor, report_path
from mlsys.monitor.quality import QualityWindow
from mlsys.monitor.report import read_folder, render_report, summary, write_report
from mlsys.monitor.retrain import Retrainer

T0 = 1767225600.0  # 2026-01-01 00:00:00 UTC
W = 300.0
EVIL = "<script>alert(1)</script>"
PLOTLY_HEADER = "* plotly.js v"  # the bundle's licence header: once per embedded copy
SUBMISSION = f"mlsys-retrain-ctr-alert-{int(T0 + 1500)}"


def _report(version: str, i: int, rows: int = 1000, *, previous: bool = True) -> WindowReport:
    start = T0 + i * W
    judged = rows >= 200
    skew = {"gender": {"linf": 0.05 + 0.01 * i}, "age": {"js": 0.01, "psi": 0.02 + 0.001 * i}, EVIL: {"linf": 0.01}}
    drift = {"gender": {"linf": 0.3 if i == 3 else 0.02}, "age": {"js": 0.01, "psi": 0.04},
             "score": {"js": 0.02, "psi": 0.5 if i == 3 else 0.03}} if previous else {}
    return WindowReport("ctr", version, start, start + W, requests=rows // 10, rows=rows, judged=judged,
                        skew=skew if judged else {}, drift=drift if judged else {}, baseline=f"ctr v{version} train",
                        previous=start - W if previous else None)


@pytest.fixture(scope="module")
def monitor_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("home") / "monitor"
    windows = [_report("3", 0, previous=False), _report("3", 1), _report("3", 2, rows=50), _report("3", 3),
               _report("4", 2, previous=False), _report("4", 3)]
    for r in windows:
        path = report_path(directory, "ctr", r.version, r.start)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(r.to_json())
    offline = {"3": {"auc": 0.7411, "logloss": 0.45}, "4": {"auc": 0.7522, "logloss": 0.44}}
    quality = [QualityWindow("ctr", "3", T0, T0 + W, 900, 90, 81, 0.7012, 0.31, 1.05, 0.09, offline["3"]),
               QualityWindow("ctr", "3", T0 + W, T0 + 2 * W, 950, 95, 0, None, 0.12, None, 0.0, offline["3"]),
               QualityWindow("ctr", "4", T0 + 2 * W, T0 + 3 * W, 400, 40, 44, 0.7333, 0.30, 0.98, 0.11, offline["4"])]
    for q in quality:
        path = directory / "ctr" / "quality" / q.version / f"{q.start:.0f}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(q.to_dict(), indent=1))

    rules = {"feature_drift": {"metric": "drift.linf.*", "threshold": 0.1, "severity": "warning"},
             "prediction_drift": {"metric": "prediction_drift.psi", "threshold": 0.2, "severity": "critical"}}
    cfg = MonitorConfig(alerts=rules, retrain=RetrainConfig(on_alerts=["feature_drift"]))
    monitor = Monitor(str(directory), "ctr", cfg, notifiers=[])
    fired = monitor.tick(now=T0 + 1500, signals={"drift.linf.gender": 0.3, "prediction_drift.psi": 0.5})
    monitor.tick(now=T0 + 1800, signals={"drift.linf.gender": 0.02, "prediction_drift.psi": 0.6})  # gender resolves

    jobs: dict[str, str] = {}  # the Ray Jobs API's part: what was submitted, and how it ended
    retrainer = Retrainer("ctr", "/shared/mlsys", cfg.retrain, str(directory / "ctr" / "retrain.json"),
                          submit=lambda sid, entrypoint: jobs.__setitem__(sid, entrypoint), status=lambda sid: "SUCCEEDED")
    assert [r.submission_id for r in retrainer.consider(fired.transitions, now=T0 + 1500)] == [SUBMISSION]
    retrainer.consider([], now=T0 + 2400)  # the job ended

    updates = [Update(T0 + 2000, "3", 1200, 960, 240, 130, 0.7012, 0.7234, True, pushed=True, version="5",
                      reason="held-out AUC 0.7234 >= the serving version's 0.7012 - 0"),
               Update(T0 + 2600, "5", 800, 640, 160, 70, 0.7100, 0.6801, False,
                      reason="not pushed: held-out AUC 0.6801 < the serving version's 0.7100 - 0 (monitor.online.max_auc_drop)")]
    state = LearnerState(T0 + 2500, T0 + 2600, [{**asdict(u), "at": round(u.at, 3)} for u in updates])
    (directory / "ctr" / "online.json").write_text(json.dumps(asdict(state), indent=1))
    return directory


@pytest.fixture(scope="module")
def page(monitor_dir, tmp_path_factory) -> str:
    out = write_report(monitor_dir / "ctr", tmp_path_factory.mktemp("out") / "report.html", now=T0 + 3600)
    return out.read_text()


def test_summary_counts_what_the_folder_holds(monitor_dir):
    assert summary(monitor_dir / "ctr") == {
        "windows": 6, "judged": 5, "versions": ["3", "4"], "quality_windows": 3, "fired": 2, "resolved": 1,
        "firing": 1, "retrains": 1, "online_updates": 2, "pushed": 1, "unreadable": []}


def test_page_is_self_contained(page):
    from plotly.offline import get_plotlyjs

    assert page.count(PLOTLY_HEADER) == 1 and page.count(get_plotlyjs()) == 1  # plotly.js inline, once
    assert "<script src" not in page
    assert "cdn.plot.ly" not in page.replace(get_plotlyjs(), "")  # the bundle names it only for geo maps' topojson
    assert page.count('class="plotly-graph-div"') == 8  # drift linf/psi, skew linf/psi, scores, quality, alerts, online


def test_header(page, monitor_dir):
    assert "<h1>Monitor report: ctr</h1>" in page
    assert html.escape(str(monitor_dir / "ctr")) in page
    assert "2026-01-01 01:00:00 UTC" in page  # generated at `now`
    assert ("6 windows (5 judged), 3 quality windows, 1 alert(s) firing now (2 fired, 1 resolved), 1 retrain(s), "
            "2 online update(s) (1 pushed)") in page


def test_drift_section(page):
    # per version: windows, judged, not judged; the furthest features of its last judged window
    assert "<td>3</td><td>4</td><td>3</td><td>1</td><td>2026-01-01 00:00:00</td><td>2026-01-01 00:20:00</td>" in page
    assert "<td>4</td><td>2</td><td>2</td><td>0</td>" in page
    assert "drift linf 0.300 (gender), drift psi 0.040 (age), skew linf 0.080 (gender), skew psi 0.023 (age)" in page
    assert '"name":"gender v3"' in page and '"name":"age v4"' in page  # one line per feature and version
    assert "prediction drift: the scores' PSI against the previous window" in page  # a chart's title
    assert '"name":"v3"' in page  # the scores' own chart, per version
    assert "score v3" not in page  # the scores are not a feature


def test_text_is_escaped(page, monitor_dir):
    assert EVIL not in page
    assert "&lt;script&gt;alert(1)&lt;" in page  # a feature named so, shown as text in the charts' legends
    titled = render_report(read_folder(monitor_dir / "ctr"), title=EVIL)
    assert EVIL not in titled and f"<h1>{html.escape(EVIL)}</h1>" in titled


def test_quality_section(page):
    assert '"name":"v3 online AUC"' in page and '"name":"v4 offline AUC"' in page
    assert ("<td>4</td><td>2026-01-01 00:10:00</td><td>400</td><td>40</td><td>44</td><td>0.1100</td><td>0.7333</td>"
            "<td>0.7522</td>") in page
    assert "<td>950</td><td>95</td><td>0</td><td>0.0000</td><td>-</td><td>0.7411</td>" in page  # one class: no AUC


def test_alerts_section(page):
    assert "Now: <b>1 firing</b>, 0 pending, 1 resolved" in page
    assert page.index('<td class="resolved">resolved</td><td>feature_drift</td><td>drift.linf.gender</td>') < \
        page.index('<td class="firing">firing</td><td>feature_drift</td>')  # newest first
    assert '<td class="firing">firing</td><td>prediction_drift</td><td>prediction_drift.psi</td><td>0.5000</td><td>&gt; 0.2</td>' in page
    assert "FIRING critical prediction_drift: prediction_drift.psi = 0.6" in page  # firing now, as of the last evaluation


def test_retrain_section(page):
    assert f"<td>{SUBMISSION}</td><td>2026-01-01 00:25:00</td>" in page
    assert "1 retraining job(s): 1 SUCCEEDED" in page
    assert "<td>SUCCEEDED</td><td>2026-01-01 00:40:00</td><td>900s</td>" in page


def test_online_section(page):
    assert "2 update(s), 1 pushed" in page
    assert "<td>3</td><td>5</td><td>1,200</td><td>960</td><td>240</td><td>0.7012</td><td>0.7234</td><td>yes</td>" in page
    assert "<td>5</td><td>-</td><td>800</td><td>640</td><td>160</td><td>0.7100</td><td>0.6801</td><td>no</td>" in page
    assert '"name":"candidate"' in page and '"name":"serving version (base)"' in page


def test_empty_folder_says_nothing_yet(tmp_path):
    page = render_report(read_folder(tmp_path / "monitor" / "ctr"), now=T0)  # not even the folder exists
    for sentence in ("No window reports yet", "No online quality yet", "No alerts.json: the monitor has not evaluated a rule yet",
                     "No alert fired yet", "No retraining triggered yet",
                     "No online learning updates: monitor.online.enabled is false"):
        assert sentence in page
    assert "unreadable" not in page.split("</style>")[1]
    assert page.count('class="plotly-graph-div"') == 0


def test_online_learning_on_without_updates(tmp_path):
    root = tmp_path / "ctr"
    root.mkdir()
    (root / "online.json").write_text(json.dumps(asdict(LearnerState(T0, T0, []))))
    assert "has made no update yet (rows logged after 2026-01-01 00:00:00" in render_report(read_folder(root))


def test_corrupt_files_are_named_and_the_rest_drawn(monitor_dir, tmp_path):
    root = tmp_path / "ctr"
    shutil.copytree(monitor_dir / "ctr", root)
    (root / "alerts.json").write_text('{"version": 1, "alerts": [')  # cut off mid-write
    with (root / "alerts.jsonl").open("a") as f:
        f.write('{"rule": "feature_drift", "sig')  # a torn last line
    (root / "windows" / "4" / f"{T0 + 3 * W:.0f}.report.json").write_text("not json")
    assert summary(root)["unreadable"] == ["alerts.json", "alerts.jsonl line 4", "windows/4/1767226500.report.json"]
    page = render_report(read_folder(root), now=T0)
    assert "unreadable: <b>alerts.json</b> (JSONDecodeError" in page
    assert "unreadable: <b>alerts.jsonl line 4</b>" in page
    assert "unreadable: <b>windows/4/1767226500.report.json</b>" in page
    assert "3 unreadable file(s)" in page
    assert "Now: <b>" not in page and "No alerts.json" not in page  # the current state is unknown, not empty
    assert '<td class="firing">firing</td><td>prediction_drift</td>' in page  # the events still drawn
    assert f"<td>{SUBMISSION}</td>" in page and "2 update(s), 1 pushed" in page and '"name":"gender v3"' in page
    assert "<td>4</td><td>1</td><td>1</td><td>0</td>" in page  # v4 without its unreadable window
