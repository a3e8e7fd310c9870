"""Service health per window (mlsys.monitor.service): the latency histogram and its quantiles against a
brute-force oracle, replicas' parts merged exactly by the monitor, judged into the window reports and
read by the dashboard (`Home.monitoring`), no Ray."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mlsys.monitor.config import MonitorConfig, OnlineStatisticsConfig
from mlsys.monitor.monitor import Monitor
from mlsys.monitor.online import WindowSketcher, merge_windows, read_windows, sketcher_of, window_start
from mlsys.monitor.service import LATENCY_EDGES_MS, ServiceWindow, latency_quantile
from mlsys.serve.release import VariantWindow
from mlsys.ui.read import Home


def _oracle(latencies: np.ndarray, q: float) -> float:
    """The bucket edge at or above the ceil(q * n)-th smallest latency."""
    kth = np.sort(latencies)[max(1, math.ceil(q * len(latencies))) - 1]
    return next((float(e) for e in LATENCY_EDGES_MS if e >= kth), math.inf)


@pytest.mark.parametrize("seed", range(5))
def test_quantiles_of_merged_windows_are_those_of_every_request_at_once(seed):
    rng = np.random.default_rng(seed)
    latencies = rng.lognormal(mean=3.0, sigma=1.2, size=int(rng.integers(1, 3000)))  # ms, a long tail past 5 s
    parts = [ServiceWindow() for _ in range(3)]
    for i, ms in enumerate(latencies):
        parts[i % 3].answered(float(ms))
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged.requests == len(latencies) == sum(merged.latency)
    for q in (0.5, 0.9, 0.99, 1.0):
        assert latency_quantile(merged.latency, q) == _oracle(latencies, q), q
    release = VariantWindow()  # the release's windows share the buckets and the quantile
    for ms in latencies:
        release.observe(float(ms))
    assert release.latency == merged.latency and release.quantile_ms(0.99) == _oracle(latencies, 0.99)


def test_errors_client_errors_and_the_error_rate():
    w = ServiceWindow()
    for ms in (4.0, 4.0, 12.0):
        w.answered(ms)
    for status in (500, 503, 422, 404):
        w.failed(status)
    w.events += 2
    assert w.summary() == {"requests": 3, "errors": 2, "client_errors": 2, "events": 2, "error_rate": 2 / 7,
                           "p50_ms": 5.0, "p99_ms": 15.0}
    assert ServiceWindow.from_dict(w.to_dict()) == w and ServiceWindow.from_dict(None) == ServiceWindow()
    only_errors = ServiceWindow(errors=1)
    assert only_errors.summary()["p50_ms"] is None and only_errors.summary()["error_rate"] == 1.0
    with pytest.raises(ValueError, match="latency histogram has 21 buckets, not 3"):
        ServiceWindow.from_dict({**w.to_dict(), "latency": [1, 2, 3]})


def test_replicas_service_health_merges_exactly_into_the_monitors_windows_and_reports(tmp_path):
    """Two replicas record requests, errors and events; one sketches none of its requests (sample_rate 0):
    its window still carries its service health. A part that comes late merges in and counts once."""
    cfg = OnlineStatisticsConfig(window_s=60, flush_seconds=0.05, rows_per_request=0)
    t = 1_000_030.0
    start = window_start(t, 60)
    one = WindowSketcher(cfg, str(tmp_path), "ctr", replica="a", clock=lambda: t)
    two = WindowSketcher(OnlineStatisticsConfig(window_s=60, flush_seconds=0.05, sample_rate=0.0), str(tmp_path), "ctr",
                         replica="b", clock=lambda: t)
    assert sketcher_of("ctr") is two  # the latest of this process: what its serving metrics record into
    rng = np.random.default_rng(0)
    latencies = {"a": rng.uniform(1, 40, 120), "b": rng.uniform(30, 900, 80)}
    frame = pd.DataFrame({"user_id": [1, 2], "item_id": [3, 4], "gender": ["F", "M"]})
    for ms in latencies["a"]:
        one.served("1", latency_ms=float(ms))
    for i in range(30):
        one.observe(f"r{i}", "1", lambda: frame, np.array([0.2, 0.3]))
    one.served("1", status=500)
    one.served("1", status=422)
    one.served("1", events=3)
    one.served("2", latency_ms=2.0)  # a canary's version: its own window
    one.served("1", latency_ms=7.0, at=t + 60)  # the next window: not ended, not merged
    for ms in latencies["b"]:
        two.served("1", latency_ms=float(ms))
    one.flush(), two.close()
    assert sketcher_of("ctr") is None

    windows = {w.version: w for w in merge_windows(tmp_path, "ctr", grace_s=0, now=start + 61)}
    assert set(windows) == {"1", "2"}
    health = windows["1"].service
    everything = np.concatenate([latencies["a"], latencies["b"]])
    assert (health.requests, health.errors, health.client_errors, health.events) == (200, 1, 1, 3)
    assert windows["1"].requests == 30 and windows["1"].replicas == ["a", "b"]  # sketched: the replica that sampled
    assert latency_quantile(health.latency, 0.99) == _oracle(everything, 0.99)
    assert latency_quantile(health.latency, 0.5) == _oracle(everything, 0.5)
    assert windows["2"].service.requests == 1 and windows["2"].rows == 0

    late = WindowSketcher(cfg, str(tmp_path), "ctr", replica="c", clock=lambda: t)
    late.served("1", status=503)
    late.close()
    [grown] = merge_windows(tmp_path, "ctr", grace_s=0, now=start + 61)
    assert (grown.service.requests, grown.service.errors) == (200, 2)
    assert {w.version: w.service for w in read_windows(tmp_path, "ctr") if w.start == start}["1"] == grown.service
    one.close()


def test_the_monitor_reports_and_the_dashboard_reads_service_health_per_version(tmp_path):
    cfg = OnlineStatisticsConfig(window_s=60, flush_seconds=0.05)
    sketcher = WindowSketcher(cfg, str(tmp_path), "ctr", replica="a", clock=lambda: 10_000.0)
    for start, (fast, slow, errors) in ((0.0, (90, 10, 0)), (60.0, (40, 60, 25))):
        for _ in range(fast):
            sketcher.served("4", latency_ms=3.0, at=start + 1)
        for _ in range(slow):
            sketcher.served("4", latency_ms=400.0, at=start + 1)
        for _ in range(errors):
            sketcher.served("4", status=500, at=start + 1)
    sketcher.close()
    tick = Monitor(str(tmp_path), "ctr", MonitorConfig(grace_s=0, min_rows=1)).tick(now=10_000.0)
    assert [r.start for r in tick.reports] == [0.0, 60.0] and not any(r.judged for r in tick.reports)  # no rows sketched
    signals = tick.reports[1].signals()
    assert signals["service.requests"] == 100 and signals["service.error_rate"] == 0.2
    assert (signals["service.p50_ms"], signals["service.p99_ms"]) == (500.0, 500.0)

    m = Home(tracking_uri="", root=str(tmp_path), monitor_dir=str(tmp_path)).monitoring("ctr")
    assert [(w["version"], w["start"]) for w in m["windows"]] == [("4", 0.0), ("4", 60.0)]
    assert m["windows"][0]["service"] == {"requests": 100, "errors": 0, "client_errors": 0, "events": 0, "error_rate": 0.0,
                                          "p50_ms": 3.0, "p99_ms": 500.0}
    assert m["windows"][1]["service"]["error_rate"] == 0.2 and m["windows"][1]["service"]["p50_ms"] == 500.0


def test_a_window_report_from_before_service_health_reads_without_it(tmp_path):
    from mlsys.monitor.drift import WindowReport

    old = WindowReport("ctr", "1", 0.0, 60.0, 5, 50, True)
    d = old.to_dict()
    del d["service"]
    assert WindowReport.from_dict(d).service == {} and "service.requests" not in WindowReport.from_dict(d).signals()
