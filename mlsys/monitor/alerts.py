"""Alert rules over monitored signals, a deduplicating state machine, and its notifiers (plain Python, no Ray).

A signal is a named number the monitor computes (``drift.psi.gender``, ``skew.linf.age``,
``quality.auc``, ``freshness.online_features_hours``). A rule compares a window of a signal's
recent observations with a threshold; each signal a rule matches (``*`` matches within one
dot-separated segment) is its own alert, keyed by (rule name, signal)::

    rules = {"drift_psi": AlertRule(metric="drift.psi.*", threshold=0.25, window="max",
                                    window_s=600, for_s=300, severity="critical")}
    alerts = Alerts.load("home/monitor/alerts.json", rules)  # a fresh state if there is none
    transitions = alerts.observe({"drift.psi.gender": 0.41, "drift.psi.age": 0.02}, now=time.time())
    notify(transitions, [LogNotifier(), WebhookNotifier("http://alertmanager:9000/hook")])
    alerts.save("home/monitor/alerts.json")  # a restarted controller does not notify again

An alert goes inactive -> pending (the condition holds, ``for_s`` not yet elapsed) -> firing
-> resolved (the condition is false again). Only firing and resolved are notified, each once:
a firing alert stays quiet, evaluation after evaluation, until it resolves.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from enum import Enum
from fnmatch import fnmatchcase
from typing import Any, Callable, Optional, Protocol

from mlsys import storage
from mlsys.config import require

log = logging.getLogger(__name__)

OPS: dict[str, Callable[[float, float], bool]] = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
WINDOWS: dict[str, Callable[[list[float]], float]] = {
    "last": lambda values: values[-1], "mean": statistics.fmean, "max": max, "min": min,
}
SEVERITIES = ("info", "warning", "critical")
_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


@dataclass
class AlertRule:
    """``monitor.alerts.stale_features={metric: freshness.online_features_hours, threshold: 6}``:
    alert when ``window`` (last, mean, max, min) of the metric's observations over the last
    ``window_s`` seconds (0: the latest one) is ``op`` the threshold for ``for_s`` seconds."""

    metric: str = ""
    op: str = ">"
    threshold: Optional[float] = None  # required; a default would alert on something nobody chose
    window: str = "last"
    window_s: float = 0.0
    for_s: float = 0.0
    severity: str = "warning"
    description: str = ""

    def __post_init__(self):
        # Hydra builds each value of monitor.alerts alone, without its name: the metric stands in for it.
        self.check(f"monitor.alerts.<the rule on {self.metric or '?'}>")

    def check(self, key: str) -> None:
        """Raise :class:`~mlsys.errors.ConfigError` naming ``key.<field>`` for the first bad field."""
        segments = self.metric.split(".")
        require(bool(self.metric) and all(segments), f"{key}.metric", self.metric,
                "a signal name such as drift.psi.max or skew.linf.* (dot-separated, no empty segment)")
        require(self.op in OPS, f"{key}.op", self.op, f"one of {list(OPS)}")
        require(isinstance(self.threshold, (int, float)) and not math.isnan(self.threshold),
                f"{key}.threshold", self.threshold, "a number (it is required)")
        require(self.window in WINDOWS, f"{key}.window", self.window, f"one of {list(WINDOWS)}")
        require(self.window_s >= 0, f"{key}.window_s", self.window_s, ">= 0 seconds (0: the latest observation)")
        require(self.for_s >= 0, f"{key}.for_s", self.for_s, ">= 0 seconds")
        require(self.severity in SEVERITIES, f"{key}.severity", self.severity, f"one of {list(SEVERITIES)}")

    def matches(self, signal: str) -> bool:
        """``AlertRule(metric="skew.linf.*", threshold=0.1).matches("skew.linf.gender") is True``."""
        pattern, parts = self.metric.split("."), signal.split(".")
        return len(pattern) == len(parts) and all(fnmatchcase(p, q) for p, q in zip(parts, pattern))


class AlertState(str, Enum):
    inactive = "inactive"
    pending = "pending"  # the condition holds, for less than the rule's for_s
    firing = "firing"
    resolved = "resolved"  # fired, and the condition no longer holds


@dataclass(frozen=True)
class Alert:
    """One rule on one signal, as of its last evaluation (what ``mlsys monitor status`` shows)."""

    rule: str
    signal: str
    state: AlertState
    value: float  # the window's value at the last evaluation
    threshold: float
    op: str
    severity: str
    since: float  # when the condition began to hold (pending, firing) or stopped (resolved); epoch seconds
    updated_at: float
    fired_at: Optional[float] = None
    resolved_at: Optional[float] = None
    message: str = ""
    description: str = ""


@dataclass(frozen=True)
class Transition:
    """An alert's change of state at one evaluation; only firing and resolved ones are notified."""

    alert: Alert
    previous: AlertState

    @property
    def notifies(self) -> bool:
        return self.alert.state in (AlertState.firing, AlertState.resolved)

    @property
    def message(self) -> str:
        return self.alert.message


def _duration(seconds: float) -> str:
    """``_duration(90) == "90s"``, ``_duration(600) == "10m"``, ``_duration(5400) == "1.5h"``."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    value, unit = (seconds / 60, "m") if seconds < 5400 else (seconds / 3600, "h")
    return f"{value:.1f}".removesuffix(".0") + unit


def _message(rule: AlertRule, a: Alert) -> str:
    """``FIRING critical drift_psi: drift.psi.gender = 0.41 > 0.25 for 5m (window max over 10m)``."""
    head = f"{a.state.value.upper()} {a.severity} {a.rule}: {a.signal} = {a.value:.4g}"
    window = f" (window {rule.window} over {_duration(rule.window_s)})" if rule.window_s > 0 else ""
    if a.state is AlertState.resolved:
        fired = a.fired_at if a.fired_at is not None else a.since
        return f"{head}, no longer {a.op} {a.threshold:g}{window}; it fired for {_duration(a.updated_at - fired)}"
    if a.state is AlertState.inactive:
        return f"{head}, no longer {a.op} {a.threshold:g}{window}; cleared before firing"
    held = _duration(a.updated_at - a.since)
    needs = f" of the {_duration(rule.for_s)} needed to fire" if a.state is AlertState.pending else ""
    return f"{head} {a.op} {a.threshold:g} for {held}{needs}{window}"


class Alerts:
    """Rules and their alerts' state: ``observe`` records signals and returns what changed."""

    def __init__(self, rules: Mapping[str, AlertRule], key: str = "monitor.alerts"):
        for name, rule in rules.items():
            rule.check(f"{key}.{name}")
        self.rules = dict(rules)
        self._alerts: dict[tuple[str, str], Alert] = {}
        self._history: dict[str, list[tuple[float, float]]] = {}  # signal -> [(time, value)], oldest first
        # Observations older than the longest window are dropped (each signal keeps its latest).
        self._keep_s = max((r.window_s for r in self.rules.values()), default=0.0)

    def alerts(self, *states: AlertState) -> list[Alert]:
        """Every alert (or those in ``states``), by rule and signal."""
        return [a for _, a in sorted(self._alerts.items()) if not states or a.state in states]

    def observe(self, signals: Mapping[str, float], now: Optional[float] = None) -> list[Transition]:
        """Record ``signals`` observed at ``now`` (epoch seconds), evaluate every rule, return the changes."""
        now = time.time() if now is None else now
        for signal, value in signals.items():
            if not math.isnan(value) and any(r.matches(signal) for r in self.rules.values()):
                self._history.setdefault(signal, []).append((now, float(value)))
        for signal, history in self._history.items():
            self._history[signal] = [o for o in history[:-1] if o[0] >= now - self._keep_s] + history[-1:]
        transitions = []
        for name, rule in self.rules.items():
            for signal in [s for s in self._history if rule.matches(s)]:
                transition = self._evaluate(name, rule, signal, now)
                if transition is not None:
                    transitions.append(transition)
        return transitions

    def _window(self, rule: AlertRule, signal: str, now: float) -> Optional[float]:
        history = self._history[signal]
        if rule.window_s <= 0:
            return history[-1][1]
        values = [v for t, v in history if t >= now - rule.window_s]
        return WINDOWS[rule.window](values) if values else None

    def _evaluate(self, name: str, rule: AlertRule, signal: str, now: float) -> Optional[Transition]:
        value = self._window(rule, signal, now)
        if value is None:  # no observation in the window: nothing to decide on, the state stands
            return None
        assert rule.threshold is not None  # AlertRule.check ran in __init__
        holds = OPS[rule.op](value, rule.threshold)
        old = self._alerts.get((name, signal))
        previous = old.state if old else AlertState.inactive
        state: AlertState
        if old is not None and previous in (AlertState.pending, AlertState.firing):
            if holds:
                since, fired_at, state = old.since, old.fired_at, previous
            elif previous is AlertState.firing:
                since, fired_at, state = now, old.fired_at, AlertState.resolved
            else:  # cleared before for_s: nothing to remember
                del self._alerts[(name, signal)]
                cleared = replace(old, state=AlertState.inactive, value=value, updated_at=now)
                return Transition(replace(cleared, message=_message(rule, cleared)), previous)
        elif holds:  # inactive or resolved: it starts over
            since, fired_at, state = now, None, AlertState.pending
        else:  # inactive or resolved, and it stays so
            return None
        if state is AlertState.pending and now - since >= rule.for_s:
            state, fired_at = AlertState.firing, now
        alert = Alert(
            rule=name, signal=signal, state=state, value=value, threshold=rule.threshold, op=rule.op,
            severity=rule.severity, since=since, updated_at=now, fired_at=fired_at,
            resolved_at=now if state is AlertState.resolved else None, description=rule.description,
        )
        self._alerts[(name, signal)] = replace(alert, message=_message(rule, alert))
        # A firing alert re-evaluated as firing is no transition: that is the deduplication.
        return Transition(self._alerts[(name, signal)], previous) if state is not previous else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state: the alerts and the observations the windows still need."""
        return {
            "version": 1,
            "alerts": [{**asdict(a), "state": a.state.value} for a in self.alerts()],
            "history": {s: [list(o) for o in h] for s, h in sorted(self._history.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], rules: Mapping[str, AlertRule], key: str = "monitor.alerts") -> "Alerts":
        """The state ``to_dict`` wrote, under (possibly changed) ``rules``: alerts of removed rules are dropped."""
        alerts = cls(rules, key)
        names = {f.name for f in fields(Alert)}
        for raw in data.get("alerts", []):
            if raw["rule"] in alerts.rules:
                a = Alert(**{k: v for k, v in raw.items() if k in names and k != "state"}, state=AlertState(raw["state"]))
                alerts._alerts[(a.rule, a.signal)] = a
        for signal, history in data.get("history", {}).items():
            if any(r.matches(signal) for r in alerts.rules.values()):
                alerts._history[signal] = [(float(t), float(v)) for t, v in history]
        return alerts

    def save(self, uri: str) -> None:
        """Write the state atomically (a reader, or a restarted controller, never sees half a file)."""
        storage.write_json(uri, self.to_dict())

    @classmethod
    def load(cls, uri: str, rules: Mapping[str, AlertRule], key: str = "monitor.alerts") -> "Alerts":
        """The state saved at ``uri``, or a fresh one when there is none yet."""
        return cls.from_dict(storage.read_json(uri), rules, key) if storage.exists(uri) else cls(rules, key)


class Notifier(Protocol):
    def send(self, transition: Transition) -> None:
        """Deliver one firing or resolved transition; must not raise for a delivery failure."""


class LogNotifier:
    """One log line per transition: firing at the rule's severity (critical logs as ERROR), resolved at INFO."""

    def __init__(self, logger: logging.Logger = log):
        self.logger = logger

    def send(self, transition: Transition) -> None:
        a = transition.alert
        level = _LOG_LEVEL[a.severity] if a.state is AlertState.firing else logging.INFO
        self.logger.log(level, "%s", a.message)


def _iso(t: Optional[float]) -> Optional[str]:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()


def webhook_body(transition: Transition, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The JSON document :class:`WebhookNotifier` posts (non-finite values as strings, e.g. ``"inf"``)."""
    a = transition.alert
    number = a.value if math.isfinite(a.value) else str(a.value)
    return {
        "status": a.state.value, "alert": a.rule, "signal": a.signal, "value": number,
        "threshold": a.threshold, "op": a.op, "severity": a.severity, "message": a.message,
        "description": a.description, "at": _iso(a.updated_at), "since": _iso(a.since),
        "fired_at": _iso(a.fired_at), "labels": dict(labels or {}),
    }


@dataclass
class WebhookNotifier:
    """``WebhookNotifier("http://hooks.internal/mlsys", labels={"app": "ranker"})``: one JSON POST per
    transition. A 5xx, 429 or network error is retried ``retries`` times (backoff doubling from
    ``backoff_s``); then the failure is logged, never raised (the transition stays in the saved state)."""

    url: str
    timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 1.0
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        require(self.url.startswith(("http://", "https://")), "monitor.webhook.url", self.url, "an http:// or https:// URL")
        require(self.timeout_s > 0, "monitor.webhook.timeout_s", self.timeout_s, "> 0")
        require(self.retries >= 0, "monitor.webhook.retries", self.retries, ">= 0")

    def send(self, transition: Transition) -> None:
        body = json.dumps(webhook_body(transition, self.labels)).encode()
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s):
                    return
            except urllib.error.HTTPError as e:
                error = f"HTTP {e.code}"
                if e.code < 500 and e.code != 429:  # the hook refuses this request: resending will not help
                    break
            except (urllib.error.URLError, OSError) as e:  # refused, unreachable, timed out
                error = str(getattr(e, "reason", e))
        log.error("alert webhook %s failed after %d attempt(s) (%s); not delivered: %s",
                  self.url, attempt + 1, error, transition.message)


def notify(transitions: Iterable[Transition], notifiers: Iterable[Notifier]) -> None:
    """Send each firing and resolved transition to every notifier; one failing notifier stops none."""
    notifiers = list(notifiers)
    for transition in (t for t in transitions if t.notifies):
        for notifier in notifiers:
            try:
                notifier.send(transition)
            except Exception:  # a notifier's bug must not stop the monitor's controller
                log.exception("alert notifier %r failed on: %s", notifier, transition.message)
