"""Alert rules and their state machine (no Ray): for_s, deduplication, windows, glob rules, a restart,
and the webhook against a real local HTTP server."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading

import pytest

from mlsys.errors import ConfigError
from mlsys.monitor.alerts import (
    Alert, AlertRule, Alerts, AlertState, LogNotifier, Transition, WebhookNotifier, notify,
)
from tests.webhook_server import WebhookServer

FIRING, RESOLVED, PENDING = AlertState.firing, AlertState.resolved, AlertState.pending


def _states(transitions: list[Transition]) -> list[tuple[str, str, AlertState]]:
    return [(t.alert.rule, t.alert.signal, t.alert.state) for t in transitions]


class _Recorder:
    """A notifier that keeps what it was sent (a real Notifier: the protocol is one method)."""

    def __init__(self):
        self.sent: list[Transition] = []

    def send(self, transition: Transition) -> None:
        self.sent.append(transition)


# -- the state machine --------------------------------------------------------------------------------


def test_pending_until_for_s_then_firing_once_then_resolved_once():
    alerts = Alerts({"drift_psi": AlertRule(metric="drift.psi.max", threshold=0.25, for_s=300, severity="critical")})
    recorder = _Recorder()
    seen = []
    for now, value in [(0, 0.1), (60, 0.4), (200, 0.5), (359, 0.5), (360, 0.41), (420, 0.6), (900, 0.3),
                       (1000, 0.1), (1100, 0.05)]:
        transitions = alerts.observe({"drift.psi.max": value}, now=now)
        notify(transitions, [recorder])
        seen += [(now, t.alert.state) for t in transitions]
    # pending at 60; firing 300s later (360), not at 359; quiet while firing; resolved once at 1000
    assert seen == [(60, PENDING), (360, FIRING), (1000, RESOLVED)]
    assert [t.alert.state for t in recorder.sent] == [FIRING, RESOLVED]  # pending is not notified
    fired, resolved = (t.alert for t in recorder.sent)
    assert (fired.since, fired.fired_at, fired.value) == (60, 360, 0.41)
    assert fired.message == "FIRING critical drift_psi: drift.psi.max = 0.41 > 0.25 for 5m"
    assert (resolved.fired_at, resolved.resolved_at) == (360, 1000)
    assert resolved.message == "RESOLVED critical drift_psi: drift.psi.max = 0.1, no longer > 0.25; it fired for 10.7m"
    assert alerts.alerts(FIRING) == [] and [a.state for a in alerts.alerts()] == [RESOLVED]


def test_a_condition_cleared_before_for_s_never_fires():
    alerts = Alerts({"auc_low": AlertRule(metric="quality.auc", op="<", threshold=0.7, for_s=600)})
    assert _states(alerts.observe({"quality.auc": 0.65}, now=0)) == [("auc_low", "quality.auc", PENDING)]
    cleared = alerts.observe({"quality.auc": 0.72}, now=300)
    assert _states(cleared) == [("auc_low", "quality.auc", AlertState.inactive)] and not cleared[0].notifies
    assert "cleared before firing" in cleared[0].message
    assert _states(alerts.observe({"quality.auc": 0.65}, now=700)) == [("auc_low", "quality.auc", PENDING)]
    assert alerts.alerts(PENDING)[0].since == 700  # a new pending period, not the old one
    assert alerts.observe({"quality.auc": 0.65}, now=1299) == []


def test_a_firing_alert_notifies_once_over_many_evaluations_and_fires_again_after_resolving():
    alerts = Alerts({"stale": AlertRule(metric="freshness.online_features_hours", threshold=6, severity="critical")})
    recorder = _Recorder()
    for hour in range(48):  # stale for a day, fresh for a day
        notify(alerts.observe({"freshness.online_features_hours": 7 + hour if hour < 24 else 0.5}, now=hour * 3600),
               [recorder])
    assert [(t.alert.state, t.alert.updated_at) for t in recorder.sent] == [(FIRING, 0), (RESOLVED, 24 * 3600)]
    notify(alerts.observe({"freshness.online_features_hours": 9}, now=48 * 3600), [recorder])
    assert [t.alert.state for t in recorder.sent] == [FIRING, RESOLVED, FIRING]
    assert recorder.sent[-1].alert.fired_at == 48 * 3600 and recorder.sent[-1].alert.resolved_at is None


def test_a_rule_without_observations_is_neither_firing_nor_resolved():
    alerts = Alerts({"auc_low": AlertRule(metric="quality.auc", op="<", threshold=0.7)})
    assert alerts.observe({"drift.psi.max": 3.0}, now=0) == [] and alerts.alerts() == []
    assert alerts.to_dict()["history"] == {}  # signals no rule watches are not kept


@pytest.mark.parametrize("window,expected_fires", [("mean", [False, False, True]), ("max", [False, True, True]),
                                                   ("min", [False, False, False]), ("last", [False, True, False])])
def test_windows_aggregate_the_observations_of_the_last_window_s(window, expected_fires):
    alerts = Alerts({"skew": AlertRule(metric="skew.linf.age", threshold=0.25, window=window, window_s=100)})
    fires = []
    for now, value in [(0, 0.1), (50, 0.3), (120, 0.25)]:  # at 120 the observation at 0 has left the window
        alerts.observe({"skew.linf.age": value}, now=now)
        fires.append(bool(alerts.alerts(FIRING)))
    # windows [0.1], [0.1, 0.3], [0.3, 0.25]: mean 0.1, 0.2, 0.275; max 0.1, 0.3, 0.3; min 0.1, 0.1, 0.25
    assert fires == expected_fires


def test_window_message_and_bounded_history():
    alerts = Alerts({"psi": AlertRule(metric="drift.psi.gender", threshold=0.25, window="max", window_s=600,
                                      for_s=300, severity="critical")})
    alerts.observe({"drift.psi.gender": 0.41}, now=0)
    [fired] = alerts.observe({"drift.psi.gender": 0.2}, now=300)
    assert fired.message == "FIRING critical psi: drift.psi.gender = 0.41 > 0.25 for 5m (window max over 10m)"
    for now in range(400, 5000, 100):
        alerts.observe({"drift.psi.gender": 0.1}, now=now)
    history = alerts.to_dict()["history"]["drift.psi.gender"]
    assert len(history) == 7 and history[0][0] == 4900 - 600  # only what the 600s window needs


def test_a_glob_rule_is_one_alert_per_matching_signal():
    alerts = Alerts({"skew": AlertRule(metric="skew.linf.*", threshold=0.1)})
    signals = {"skew.linf.gender": 0.3, "skew.linf.age": 0.05, "skew.linf.occupation": 0.2,
               "skew.js.gender": 0.9, "skew.linf.a.b": 0.9}  # another measure, and another depth: no match
    assert sorted(_states(alerts.observe(signals, now=0))) == [
        ("skew", "skew.linf.gender", FIRING), ("skew", "skew.linf.occupation", FIRING)]
    transitions = alerts.observe({"skew.linf.gender": 0.01, "skew.linf.occupation": 0.2, "skew.linf.age": 0.5}, now=60)
    assert sorted(_states(transitions)) == [("skew", "skew.linf.age", FIRING), ("skew", "skew.linf.gender", RESOLVED)]


def test_a_restart_from_the_saved_state_does_not_notify_again(tmp_path):
    rules = {"psi": AlertRule(metric="drift.psi.*", threshold=0.25, for_s=120),
             "auc": AlertRule(metric="quality.auc", op="<", threshold=0.7, window="mean", window_s=1000)}
    path = str(tmp_path / "monitor" / "alerts.json")
    first, recorder = Alerts.load(path, rules), _Recorder()
    notify(first.observe({"drift.psi.gender": 0.4, "drift.psi.age": 0.3, "quality.auc": 0.6}, now=0), [recorder])
    notify(first.observe({"drift.psi.gender": 0.4, "drift.psi.age": 0.1, "quality.auc": 0.65}, now=100), [recorder])
    first.save(path)  # gender pending since 0, age cleared, auc firing (its window's mean is 0.625)
    assert json.loads((tmp_path / "monitor" / "alerts.json").read_text()) == first.to_dict()

    restarted = Alerts.load(path, rules)
    assert restarted.to_dict() == first.to_dict()
    notify(restarted.observe({"drift.psi.gender": 0.4, "quality.auc": 0.79}, now=130), [recorder])  # pending since 0
    notify(restarted.observe({"drift.psi.gender": 0.4, "quality.auc": 0.8}, now=200), [recorder])
    assert [(t.alert.rule, t.alert.signal, t.alert.state) for t in recorder.sent] == [
        ("auc", "quality.auc", FIRING),  # at 0, before the restart
        ("psi", "drift.psi.gender", FIRING),  # at 130: 120s after the pending began before the restart
        ("auc", "quality.auc", RESOLVED),  # at 200: the window's mean (0.6, 0.65, 0.79, 0.8) is back above 0.7
    ]
    restarted.save(path)
    again = Alerts.load(path, rules)
    assert again.observe({"drift.psi.gender": 0.5}, now=300) == []  # still firing: not notified a second time
    # a removed rule's alerts are dropped on load
    assert {a.rule for a in Alerts.load(path, {"psi": rules["psi"]}).alerts()} == {"psi"}


def test_log_notifier_logs_one_line_per_transition_at_the_severity(caplog):
    alerts = Alerts({"stale": AlertRule(metric="freshness.online_features_hours", threshold=6, severity="critical")})
    with caplog.at_level(logging.INFO, logger="mlsys.monitor.alerts"):
        for now, hours in [(0, 8), (60, 9), (120, 1)]:
            notify(alerts.observe({"freshness.online_features_hours": hours}, now=now), [LogNotifier()])
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "FIRING critical stale: freshness.online_features_hours = 8 > 6 for 0s"),
        (logging.INFO, "RESOLVED critical stale: freshness.online_features_hours = 1, no longer > 6; it fired for 2m"),
    ]


def test_a_failing_notifier_does_not_stop_the_others(caplog):
    class Broken:
        def send(self, transition):
            raise RuntimeError("bug")

    recorder = _Recorder()
    alerts = Alerts({"auc": AlertRule(metric="quality.auc", op="<", threshold=0.7)})
    notify(alerts.observe({"quality.auc": 0.5}, now=0), [Broken(), recorder])
    assert len(recorder.sent) == 1 and "alert notifier" in caplog.text


# -- the webhook, against a real HTTP server ------------------------------------------------------


def test_webhook_posts_one_json_document_per_firing_and_resolved_transition():
    alerts = Alerts({"psi": AlertRule(metric="drift.psi.*", threshold=0.25, for_s=60, severity="critical",
                                      description="feature drift since training")})
    with WebhookServer() as hook:
        webhook = WebhookNotifier(hook.url, labels={"app": "ranker"})
        for now, value in [(0, 0.4), (30, 0.4), (60, 0.41), (90, 0.5), (120, 0.1)]:
            notify(alerts.observe({"drift.psi.gender": value}, now=now), [webhook])
    assert [b["status"] for b in hook.bodies] == ["firing", "resolved"]
    firing, resolved = hook.bodies
    assert firing == {
        "status": "firing", "alert": "psi", "signal": "drift.psi.gender", "value": 0.41, "threshold": 0.25,
        "op": ">", "severity": "critical", "description": "feature drift since training",
        "message": "FIRING critical psi: drift.psi.gender = 0.41 > 0.25 for 60s",
        "at": "1970-01-01T00:01:00+00:00", "since": "1970-01-01T00:00:00+00:00",
        "fired_at": "1970-01-01T00:01:00+00:00", "labels": {"app": "ranker"},
    }
    assert (resolved["value"], resolved["at"], resolved["fired_at"]) == (0.1, "1970-01-01T00:02:00+00:00", firing["at"])


def test_webhook_retries_a_500_and_delivers():
    alerts = Alerts({"auc": AlertRule(metric="quality.auc", op="<", threshold=0.7)})
    with WebhookServer(statuses=[500, 500]) as hook:
        notify(alerts.observe({"quality.auc": 0.5}, now=0), [WebhookNotifier(hook.url, retries=3, backoff_s=0.01)])
    assert [b["status"] for b in hook.bodies] == ["firing"] and hook.statuses == []


def test_webhook_gives_up_on_a_4xx_and_logs_it(caplog):
    alerts = Alerts({"auc": AlertRule(metric="quality.auc", op="<", threshold=0.7)})
    with WebhookServer(statuses=[400, 500]) as hook:
        notify(alerts.observe({"quality.auc": 0.5}, now=0), [WebhookNotifier(hook.url, backoff_s=0.01)])
    assert hook.bodies == [] and hook.statuses == [500]  # one attempt: a 400 is not retried
    assert "HTTP 400" in caplog.text and "FIRING warning auc" in caplog.text


def test_a_dead_webhook_does_not_raise_and_the_alert_stays_in_the_state(caplog):
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    alerts = Alerts({"auc": AlertRule(metric="quality.auc", op="<", threshold=0.7)})
    webhook = WebhookNotifier(f"http://127.0.0.1:{port}/hook", timeout_s=1, retries=2, backoff_s=0.01)
    notify(alerts.observe({"quality.auc": 0.5}, now=0), [webhook])
    assert "failed after 3 attempt(s)" in caplog.text
    assert [a.state for a in alerts.alerts()] == [FIRING]


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad,key", [
    ({"op": "!="}, "monitor.alerts.psi.op"),
    ({"window": "p99"}, "monitor.alerts.psi.window"),
    ({"for_s": -1}, "monitor.alerts.psi.for_s"),
    ({"window_s": -5}, "monitor.alerts.psi.window_s"),
    ({"severity": "page"}, "monitor.alerts.psi.severity"),
    ({"threshold": None}, "monitor.alerts.psi.threshold"),
    ({"metric": "drift..psi"}, "monitor.alerts.psi.metric"),
])
def test_a_bad_rule_names_its_key(bad, key):
    fields = {"metric": "drift.psi.*", "threshold": 0.25, **bad}
    unnamed = key.replace("psi", f"<the rule on {fields['metric']}>", 1)
    with pytest.raises(ConfigError, match=re.escape(unnamed)):
        AlertRule(**fields)  # built alone (as Hydra does), the rule does not know its name
    rule = AlertRule(metric="drift.psi.*", threshold=0.25)
    for name, value in bad.items():
        setattr(rule, name, value)
    with pytest.raises(ConfigError, match=re.escape(key)):
        Alerts({"psi": rule})  # under its name, the full key
    with pytest.raises(ConfigError, match="^Bad configuration: " + re.escape(key.replace("monitor", "watch"))):
        rule.check(key.rsplit(".", 1)[0].replace("monitor", "watch"))


def test_a_webhook_url_must_be_http():
    with pytest.raises(ConfigError, match=r"monitor\.webhook\.url"):
        WebhookNotifier("hooks.internal/mlsys")


def test_alert_state_is_json_plain():
    alerts = Alerts({"stale": AlertRule(metric="freshness.online_features_hours", threshold=6)})
    alerts.observe({"freshness.online_features_hours": float("inf")}, now=0)  # never materialized
    data = json.loads(json.dumps(alerts.to_dict()))
    [alert] = Alerts.from_dict(data, alerts.rules).alerts()
    assert isinstance(alert, Alert) and alert.state is FIRING and alert.value == float("inf")
