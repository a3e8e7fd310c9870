"""Freshness signals: each known age becomes a signal, an unknown one none; the shipped rules fire on
a stale online store and on a monitor that sees no window; the api gathers them from the home."""

import json
import os
import time

from mlsys.monitor.alerts import AlertState
from mlsys.monitor.freshness import freshness_signals, last_window_end
from mlsys.monitor.labels import Label, LabelLog


def test_known_ages_only():
    assert freshness_signals(1_000.0, materialized_at=400.0, last_window_end=990.0, model_created_at=0.0, last_label_at=2_000.0) == {
        "freshness.materialized_s": 600.0, "freshness.window_s": 10.0, "freshness.model_s": 1_000.0, "freshness.labels_s": 0.0}
    assert freshness_signals(1_000.0) == {}


def test_the_newest_window_by_start(tmp_path):
    for version, start in (("1", 600), ("2", 1200), ("1", 300)):
        path = tmp_path / "windows" / version / f"{start}.report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"start": start, "end": start + 300}))
    assert last_window_end(tmp_path) == 1500.0 and last_window_end(tmp_path / "none") is None


def test_the_shipped_rules_fire_on_stale_features_and_a_blind_monitor(tmp_path):
    from mlsys.api import monitor as api_monitor
    from mlsys.api.config import compose_config
    from mlsys.features.store import store_paths

    cfg = compose_config([f"home.root={tmp_path}", "features=feast", "monitor.quality.enabled=false"])
    watermark = store_paths(cfg.features, cfg.home.root).watermark
    os.makedirs(os.path.dirname(watermark), exist_ok=True)
    open(watermark, "w").write("{}")
    day_ago = time.time() - 2 * 86400
    os.utime(watermark, (day_ago, day_ago))
    LabelLog(str(tmp_path / "monitor"), "ctr").append(Label(1, 2, 1, time.time()))
    now = time.time()
    signals = api_monitor.freshness(cfg, "ctr", now)
    assert signals["freshness.materialized_s"] > 86400 and signals["freshness.labels_s"] < 60
    assert "freshness.window_s" not in signals and "freshness.model_s" not in signals  # no window, no registered model
    monitor = api_monitor.monitor_for(cfg)
    monitor.notifiers = []
    monitor.tick(now=now, signals={**signals, "freshness.window_s": 7200.0})
    firing = {a.rule for a in monitor.alerts.alerts(AlertState.firing)}
    assert firing == {"stale_online_features", "monitoring_blind"}, firing
