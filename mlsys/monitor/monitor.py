"""One model's monitor, plain Python (the controller on Ray is a thin shell around it).

Each :meth:`Monitor.tick` merges the window parts serving replicas wrote
(:func:`~mlsys.monitor.online.merge_windows`), judges every new window
(:func:`~mlsys.monitor.drift.judge`: skew against the serving version's training
statistics, drift against its previous window), feeds the windows' signals to
the alert rules in the order the windows ended, notifies what started or
stopped firing, and saves the alerts' state. A restarted monitor loads that
state: a firing alert is not notified twice::

    monitor = Monitor("/h/monitor", "ctr", cfg.monitor, baseline_of=training_statistics)
    tick = monitor.tick()
    tick.reports, tick.transitions
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from mlsys import storage
from mlsys.data.statistics import DatasetStatistics
from mlsys.monitor.alerts import Alerts, LogNotifier, Notifier, Transition, WebhookNotifier, notify
from mlsys.monitor.config import MonitorConfig
from mlsys.monitor.drift import WindowReport, judge
from mlsys.monitor.online import merge_windows, previous_window, window_path
from mlsys.monitor.quality import online_quality


@dataclass
class Tick:
    """What one tick did: the windows it judged and the alerts that changed state."""

    reports: list[WindowReport] = field(default_factory=list)
    quality: list = field(default_factory=list)  # QualityWindow: online quality measured this tick
    transitions: list[Transition] = field(default_factory=list)
    update: object = None  # an online-learning Update (mlsys.monitor.learning), when one ran after this tick


def notifiers_of(cfg: MonitorConfig, labels: Optional[dict] = None) -> list[Notifier]:
    """The log, and the webhook when ``monitor.webhook.url`` is set."""
    out: list[Notifier] = [LogNotifier()]
    if cfg.webhook.url:
        out.append(WebhookNotifier(cfg.webhook.url, timeout_s=cfg.webhook.timeout_s, retries=cfg.webhook.retries, labels=labels or {}))
    return out


def report_path(directory, model: str, version: str, start: float) -> Path:
    path = window_path(directory, model, version, start)
    return path.with_name(f"{path.stem}.report.json")


class Monitor:
    """``baseline_of(version)``: the training statistics of a model version (None: no skew for it)."""

    def __init__(self, directory: str, model: str, cfg: MonitorConfig,
                 baseline_of: Callable[[str], Optional[DatasetStatistics]] = lambda version: None,
                 notifiers: Optional[list[Notifier]] = None,
                 quality_source: Optional[Callable[[], tuple]] = None, offline_of: Callable[[str], dict] = lambda version: {}):
        """``quality_source()``: (the feature log, the labels) as frames, for online quality; ``offline_of(version)``:
        its offline evaluation metrics (``{"auc": ...}``)."""
        self.directory, self.model, self.cfg = directory, model, cfg
        self.state_uri = str(Path(directory) / model / "alerts.json")
        self.alerts = Alerts.load(self.state_uri, cfg.alerts)
        self.notifiers = notifiers if notifiers is not None else notifiers_of(cfg, {"model": model})
        self._baseline_of = baseline_of
        self._baselines: dict[str, Optional[DatasetStatistics]] = {}
        self._quality_source, self._offline_of = quality_source, offline_of
        self.quality_uri = str(Path(directory) / model / "quality.json")
        self.events_uri = str(Path(directory) / model / "alerts.jsonl")

    def baseline(self, version: str) -> Optional[DatasetStatistics]:
        if version not in self._baselines:
            self._baselines[version] = self._baseline_of(version)
        return self._baselines[version]

    def tick(self, now: Optional[float] = None, signals: Optional[dict[str, float]] = None) -> Tick:
        """Merge, judge, alert. ``signals``: others observed now (freshness, online quality)."""
        now = time.time() if now is None else now
        tick = Tick()
        for window in merge_windows(self.directory, self.model, self.cfg.grace_s, now):
            report = judge(window, self.baseline(window.version), previous_window(self.directory, self.model, window), self.cfg)
            storage.write_text(str(report_path(self.directory, self.model, window.version, window.start)), report.to_json())
            tick.reports.append(report)
            tick.transitions += self.alerts.observe(report.signals(), now=report.end)
        for window in self._quality(now):
            storage.write_text(str(Path(self.directory) / self.model / "quality" / window.version / f"{window.start:.0f}.json"),
                               json.dumps(window.to_dict(), indent=1))
            tick.quality.append(window)
            tick.transitions += self.alerts.observe(window.signals(), now=window.end + self.cfg.quality.attribution_s)
        if signals:
            tick.transitions += self.alerts.observe(signals, now=now)
        notify(tick.transitions, self.notifiers)
        self._record(tick.transitions)
        self.alerts.save(self.state_uri)
        return tick

    def _record(self, transitions: list[Transition]) -> None:
        """Append what fired and resolved to ``<model>/alerts.jsonl`` (the report's history; alerts.json
        holds only each alert's last state)."""
        lines = [json.dumps({**asdict(t.alert), "state": t.alert.state.value, "previous": t.previous.value})
                 for t in transitions if t.notifies]
        if lines:
            path = Path(self.events_uri)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write("\n".join(lines) + "\n")

    def _quality(self, now: float) -> list:
        """The online quality of every window whose labels came in since the last tick."""
        q = self.cfg.quality
        if not q.enabled or self._quality_source is None:
            return []
        done = json.loads(storage.read_text(self.quality_uri))["until"] if storage.exists(self.quality_uri) else -math.inf
        log, labels = self._quality_source()
        if labels is None:  # no label has ever come in (no events, no label file): nothing to measure yet
            return []
        windows = online_quality(log, labels, q.window_s, q.attribution_s, now, self._offline_of, since=done)
        if windows:
            storage.write_text(self.quality_uri, json.dumps({"until": max(w.end for w in windows)}))
        return windows
