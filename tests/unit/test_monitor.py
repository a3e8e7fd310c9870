"""The monitor's tick (mlsys.monitor.monitor), no Ray: replicas' windows -> skew/drift signals -> an alert
that fires once, reaches a real local webhook, survives a restart without firing again, and resolves."""

from __future__ import annotations


import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlsys.data.statistics import compute_table, infer_kinds
from mlsys.monitor.alerts import AlertRule, AlertState
from mlsys.monitor.config import MonitorConfig, OnlineStatisticsConfig, WebhookConfig
from mlsys.monitor.monitor import Monitor, report_path
from mlsys.monitor.online import WindowSketcher
from tests.webhook_server import WebhookServer


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def webhook():
    with WebhookServer() as hook:
        yield hook.url, hook.bodies


def _frame(rng, n: int, female: float) -> pd.DataFrame:
    return pd.DataFrame({"user_id": rng.integers(1, 900, n), "gender": np.where(rng.random(n) < female, "F", "M"),
                         "age": rng.normal(33, 11, n)})


def _traffic(sketcher: WindowSketcher, clock: Clock, start: float, female: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(100):
        frame = _frame(rng, 20, female)
        clock.t = start + i * 0.5
        sketcher.observe(f"{seed}-{i}", "1", lambda f=frame: f, rng.beta(2, 5, len(frame)))
    sketcher.flush()


def test_a_planted_shift_fires_one_alert_within_one_window_and_it_resolves(tmp_path, webhook):
    url, received = webhook
    rng = np.random.default_rng(0)
    training = pa.Table.from_pandas(_frame(rng, 20000, 0.3), preserve_index=False)
    baseline = compute_table(training, infer_kinds(training.schema, categorical=("user_id",)), name="train")
    rules = {"gender_drift": AlertRule(metric="drift.linf.*", threshold=0.1, severity="critical"),
             "gender_skew": AlertRule(metric="skew.linf.gender", threshold=0.1, for_s=60)}
    cfg = MonitorConfig(grace_s=5, alerts=rules, webhook=WebhookConfig(url=url, retries=0))
    clock = Clock(0.0)
    sketcher = WindowSketcher(OnlineStatisticsConfig(window_s=60, flush_seconds=0.05), str(tmp_path), "ctr", replica="r", clock=clock)
    monitor = Monitor(str(tmp_path), "ctr", cfg, baseline_of=lambda version: baseline)

    _traffic(sketcher, clock, 0, 0.3, seed=1)
    _traffic(sketcher, clock, 60, 0.3, seed=2)
    tick = monitor.tick(now=125)
    assert [r.start for r in tick.reports] == [0, 60] and tick.transitions == [] and received == []
    assert report_path(tmp_path, "ctr", "1", 60).exists()

    _traffic(sketcher, clock, 120, 0.5, seed=3)  # the share of F moves by 20 points
    tick = monitor.tick(now=185)
    [fired] = [t for t in tick.transitions if t.notifies]
    assert fired.alert.rule == "gender_drift" and fired.alert.signal == "drift.linf.gender" and fired.alert.state is AlertState.firing
    assert [b["status"] for b in received] == ["firing"] and received[0]["severity"] == "critical"
    assert "drift.linf.gender" in received[0]["message"]
    skew = [a for a in monitor.alerts.alerts() if a.rule == "gender_skew"]
    assert [a.state for a in skew] == [AlertState.pending]  # for_s=60: not yet

    restarted = Monitor(str(tmp_path), "ctr", cfg, baseline_of=lambda version: baseline)
    _traffic(sketcher, clock, 180, 0.5, seed=4)  # shifted still: drift against the previous window is gone
    tick = restarted.tick(now=245)
    statuses = [(t.alert.rule, t.alert.state.value) for t in tick.transitions if t.notifies]
    assert statuses == [("gender_drift", "resolved"), ("gender_skew", "firing")]
    _traffic(sketcher, clock, 240, 0.5, seed=5)
    assert [t for t in restarted.tick(now=305).transitions if t.notifies] == []  # still skewed: not notified again
    assert [b["status"] for b in received] == ["firing", "resolved", "firing"]
    history = [json.loads(line) for line in (tmp_path / "ctr" / "alerts.jsonl").read_text().splitlines()]
    assert [(h["rule"], h["state"], h["previous"]) for h in history] == [
        ("gender_drift", "firing", "inactive"), ("gender_drift", "resolved", "firing"), ("gender_skew", "firing", "pending")]
    sketcher.close()
