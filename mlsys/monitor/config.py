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
    # Candidate rows sketched per request, drawn at random (0: all): every share is kept, at a
    # fraction of the cost (the rows' conversion to Arrow is most of it).
    rows_per_request: int = 10
    # Requests waiting to be sketched; beyond this, requests are skipped (and counted).
    queue_size: int = 10000
    # Sketch what is queued after this long, or at this many rows (one table per batch of requests).
    flush_seconds: float = 1.0
    batch_rows: int = 20000
    # Where replicas write their window parts and the merged windows go; empty: `<home>/monitor`.
    path: str = ""
    # Record the labels of POST /v1/events under `<path>/<model>/labels/` (online quality, online learning).
    labels: bool = True

    def __post_init__(self):
        require(self.window_s >= 1 and float(self.window_s).is_integer(), "serve.monitoring.window_s", self.window_s,
                "a whole number of seconds >= 1")
        require(0.0 <= self.sample_rate <= 1.0, "serve.monitoring.sample_rate", self.sample_rate, "between 0 and 1")
        require(self.rows_per_request >= 0, "serve.monitoring.rows_per_request", self.rows_per_request, ">= 0 (0: all)")
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
    # Labels: a Parquet, CSV or JSON Lines file or folder with user_id, item_id, timestamp (epoch s),
    # label (1 = click) and optionally request_id; empty: those POST /v1/events recorded
    # (`<serve.monitoring.path>/<model>/labels/`). No label yet: quality is not measured.
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
class OnlineLearningConfig:
    """``monitor.online``: ``monitor.online.enabled=true monitor.online.every_s=600 monitor.online.min_rows=5000``."""

    enabled: bool = False
    every_s: float = 600.0  # an update at least this often while new labelled rows come in...
    min_rows: int = 5000  # ...or as soon as this many newly labelled rows are in
    min_new_rows: int = 200  # fewer new rows than this: no update, whatever the time (the gate would judge noise)
    max_rows: int = 200_000  # train on at most the newest this many rows
    holdout: float = 0.2  # the newest share of the new requests, held out for the gate
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 512
    max_auc_drop: float = 0.0  # the gate: held-out AUC >= the serving version's - this
    seed: int = 0
    alias: str = ""  # the alias updates are pushed to; empty: registry.alias
    infra_validation: bool = False  # also the sandbox app of the push (evaluate.infra); the gate already scores the new ONNX

    def __post_init__(self):
        require(self.every_s > 0, "monitor.online.every_s", self.every_s, "> 0 seconds")
        require(self.min_rows >= 1, "monitor.online.min_rows", self.min_rows, ">= 1")
        require(1 <= self.min_new_rows <= self.min_rows, "monitor.online.min_new_rows", self.min_new_rows,
                f"between 1 and monitor.online.min_rows ({self.min_rows})")
        require(self.max_rows >= self.min_rows, "monitor.online.max_rows", self.max_rows, f">= monitor.online.min_rows ({self.min_rows})")
        require(0 < self.holdout < 1, "monitor.online.holdout", self.holdout, "between 0 and 1 (exclusive)")
        require(self.epochs >= 1, "monitor.online.epochs", self.epochs, ">= 1")
        require(self.lr > 0, "monitor.online.lr", self.lr, "> 0")
        require(self.batch_size >= 1, "monitor.online.batch_size", self.batch_size, ">= 1")
        require(self.max_auc_drop >= 0, "monitor.online.max_auc_drop", self.max_auc_drop, ">= 0")


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
    online: OnlineLearningConfig = field(default_factory=OnlineLearningConfig)

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
