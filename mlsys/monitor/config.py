"""Typed configuration of monitoring: what serving replicas sketch (``serve.monitoring``) and how the
windows they write are compared (``monitor``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mlsys import storage
from mlsys.config import require
from mlsys.monitor.alerts import AlertRule


def monitor_dir(path: str, home_root: str) -> str:
    """``serve.monitoring.path``, or ``<home>/monitor``, as an absolute path (replicas run elsewhere)."""
    return storage.absolute(path) if path else storage.join(storage.absolute(home_root), "monitor")


@dataclass
class OnlineStatisticsConfig:
    """``serve.monitoring``: each ingress replica sketches the raw feature rows it scored and the
    scores, per window, with the statistics step's accumulators, off the request's path
    (``serve.monitoring.window_s=60 serve.monitoring.sample_rate=0.5``)."""

    enabled: bool = True
    # Windows are aligned to the clock (multiples of window_s since the epoch), the same in every replica.
    window_s: float = 300.0
    # Fraction of requests sketched, by a hash of the request id (1.0: all).
    sample_rate: float = 1.0
    # Requests waiting to be sketched; beyond this, requests are skipped (and counted).
    queue_size: int = 10000
    # Sketch what is queued after this long, or at this many rows (one table per batch of requests).
    flush_seconds: float = 1.0
    batch_rows: int = 20000
    # Where replicas write their window parts and the merged windows go; empty: `<home>/monitor`.
    path: str = ""

    def __post_init__(self):
        require(self.window_s >= 1 and float(self.window_s).is_integer(), "serve.monitoring.window_s", self.window_s,
                "a whole number of seconds >= 1")
        require(0.0 <= self.sample_rate <= 1.0, "serve.monitoring.sample_rate", self.sample_rate, "between 0 and 1")
        require(self.queue_size >= 1, "serve.monitoring.queue_size", self.queue_size, ">= 1")
        require(self.flush_seconds > 0, "serve.monitoring.flush_seconds", self.flush_seconds, "> 0")
        require(self.batch_rows >= 1, "serve.monitoring.batch_rows", self.batch_rows, ">= 1")


@dataclass
class WebhookConfig:
    """``monitor.webhook.url=http://alerts.internal/hook``: each firing and resolved alert as one JSON POST."""

    url: str = ""
    timeout_s: float = 5.0
    retries: int = 3


@dataclass
class QualityConfig:
    """``monitor.quality``: online AUC, logloss, calibration and CTR per version, from delayed labels
    joined with the feature log (``serve.feature_logging`` must be on)."""

    enabled: bool = True
    # Labels: a Parquet or CSV file or folder with user_id, item_id, timestamp (epoch s), label
    # (1 = click) and optionally request_id; empty: none (quality is not measured).
    labels: str = ""
    window_s: float = 300.0  # windows of when the impressions were served, aligned to the clock
    attribution_s: float = 3600.0  # a click counts for an impression served at most this long before it

    def __post_init__(self):
        require(self.window_s >= 1, "monitor.quality.window_s", self.window_s, ">= 1 second")
        require(self.attribution_s >= 0, "monitor.quality.attribution_s", self.attribution_s, ">= 0 seconds")


@dataclass
class RetrainConfig:
    """``monitor.retrain``: continuous training. A firing alert named in ``on_alerts``, or the cron
    ``schedule``, submits the retraining pipeline as a Ray job (warm start from the champion; the
    gate, infra validation and the push decide whether it serves)."""

    on_alerts: list[str] = field(default_factory=list)  # alert rule names whose firing triggers a retrain
    schedule: str = ""  # cron, UTC ("0 3 * * *": daily at 03:00); empty: none
    overrides: list[str] = field(default_factory=list)  # the retraining run's own Hydra overrides
    cooldown_s: float = 3600.0  # at most one alert-triggered retrain in this long
    address: str = ""  # the Ray Jobs API (dashboard) address; empty: the cluster the monitor runs on
    warm_start: bool = True  # train.warm_start=models:/<model>@champion

    def __post_init__(self):
        require(self.cooldown_s >= 0, "monitor.retrain.cooldown_s", self.cooldown_s, ">= 0 seconds")
        if self.schedule:
            from mlsys.monitor.schedule import Cron

            Cron(self.schedule)


@dataclass
class MonitorConfig:
    """``monitor``: how merged windows become signals (skew against the serving version's training
    statistics, drift against the previous window, prediction drift of the scores) and which
    signals alert (``monitor.alerts``, rules by name: configs/monitor/default.yaml)."""

    # A window is merged once it ended this long ago (replicas flush their parts every flush_seconds).
    grace_s: float = 10.0
    # How often the monitor merges, judges and evaluates the rules.
    interval_s: float = 30.0
    # Features never compared (ids and times move by design).
    ignore: list[str] = field(default_factory=lambda: ["timestamp", "user_id", "item_id", "request_id"])
    # A window with fewer rows than this is kept but not judged (its distances are noise).
    min_rows: int = 200
    # name -> AlertRule fields. Plain dicts for Hydra: OmegaConf refuses a new entry of a dict of
    # dataclasses from the command line (`+monitor.alerts.low_auc={metric: quality.auc, ...}`);
    # they become AlertRules here, and a bad one is named by its key.
    alerts: dict[str, Any] = field(default_factory=dict)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)

    def __post_init__(self):
        self.alerts = {name: _rule(name, rule) for name, rule in self.alerts.items()}
        unknown = [name for name in self.retrain.on_alerts if name not in self.alerts]
        require(not unknown, "monitor.retrain.on_alerts", self.retrain.on_alerts, f"names of rules in monitor.alerts ({sorted(self.alerts)})")
        require(self.grace_s >= 0, "monitor.grace_s", self.grace_s, ">= 0 seconds")
        require(self.interval_s > 0, "monitor.interval_s", self.interval_s, "> 0 seconds")
        require(self.min_rows >= 0, "monitor.min_rows", self.min_rows, ">= 0")


def _rule(name: str, rule) -> AlertRule:
    if isinstance(rule, AlertRule):
        rule.check(f"monitor.alerts.{name}")
        return rule
    key = f"monitor.alerts.{name}"
    require(isinstance(rule, dict), key, rule, "a rule: {metric: ..., op: ..., threshold: ...}")
    fields = {f.name for f in dataclasses.fields(AlertRule)}
    unknown = sorted(set(rule) - fields)
    require(not unknown, f"{key}.{unknown[0] if unknown else ''}", rule.get(unknown[0]) if unknown else None,
            f"one of the rule's fields {sorted(fields)}")
    for number in ("threshold", "window_s", "for_s"):
        if number in rule and rule[number] is not None:
            try:
                rule = {**rule, number: float(rule[number])}
            except (TypeError, ValueError):
                require(False, f"{key}.{number}", rule[number], "a number")
    made = AlertRule.__new__(AlertRule)  # checked once, with its name (AlertRule() would check it unnamed)
    made.__dict__.update({f.name: f.default for f in dataclasses.fields(AlertRule)}, **rule)
    made.check(key)
    return made
