"""Continuous training's trigger, plain Python: when to submit the retraining job, and what came of it.

:class:`Retrainer` decides on each tick: an alert named in ``monitor.retrain.on_alerts`` that
started firing (outside the cooldown), or a scheduled minute of ``monitor.retrain.schedule``
that passed, submits one job through ``submit(submission_id, entrypoint)`` (the Ray Jobs API in
the shell). The submission id is derived from what triggered it (the alert's firing time, the
scheduled minute), and the state is saved after every decision, so a monitor restarted between
the submission and the save submits the same id again, which the Jobs API refuses as a
duplicate: one trigger, one job. ``status(submission_id)`` follows each job to its end.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional

from mlsys import storage
from mlsys.monitor.alerts import AlertState, Transition
from mlsys.monitor.config import RetrainConfig
from mlsys.monitor.schedule import Cron

FINISHED = ("SUCCEEDED", "FAILED", "STOPPED")
# A submission the Jobs API refused (its agent not up yet: "No available agent to submit job, please try
# again later"; the head restarting) is retried every tick for this long, then given up and said.
SUBMIT_RETRY_S = 900.0


@dataclass
class Retrain:
    """One triggered retraining job."""

    submission_id: str
    reason: str  # "alert feature_drift: FIRING ..." or "schedule 0 3 * * *"
    at: float
    entrypoint: str
    status: str = "UNSUBMITTED"  # then the Jobs API's: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    finished_at: Optional[float] = None
    error: str = ""  # the last submission error (retried every tick for SUBMIT_RETRY_S)


@dataclass
class RetrainState:
    last_alert_retrain: float = 0.0  # when the last alert-triggered retrain was submitted (the cooldown)
    schedule_checked: float = 0.0  # scheduled minutes up to here were considered
    history: list[Retrain] = field(default_factory=list)


def entrypoint(model: str, home: str, cfg: RetrainConfig, program: tuple[str, ...] = ("mlsys",)) -> str:
    """``mlsys run`` of the retraining pipeline: the same home and model, a warm start from the champion,
    on the cluster the job runs on (``cluster.address=auto``: the Jobs API's driver joins it)."""
    args = [*program, "run", f"home.root={home}", f"registry.model_name={model}", "cluster.address=auto"]
    if cfg.warm_start:
        args.append(f"train.warm_start=models:/{model}@champion")
    return shlex.join([*args, *cfg.overrides])


class Retrainer:
    def __init__(self, model: str, home: str, cfg: RetrainConfig, state_uri: str,
                 submit: Callable[[str, str], None], status: Callable[[str], str], program: tuple[str, ...] = ("mlsys",)):
        self.model, self.home, self.cfg, self.state_uri, self.program = model, home, cfg, state_uri, program
        self._submit, self._status = submit, status
        self.cron = Cron(cfg.schedule) if cfg.schedule else None
        self.state = self._load()

    def _load(self) -> RetrainState:
        if not storage.exists(self.state_uri):
            return RetrainState()
        d = json.loads(storage.read_text(self.state_uri))
        return RetrainState(d["last_alert_retrain"], d["schedule_checked"], [Retrain(**r) for r in d["history"]])

    def save(self) -> None:
        storage.write_text(self.state_uri, json.dumps(asdict(self.state), indent=1))

    def consider(self, transitions: Iterable[Transition], now: Optional[float] = None) -> list[Retrain]:
        """Submit what ``transitions`` (this tick's) and the schedule call for; follow running jobs."""
        now = time.time() if now is None else now
        self._follow(now)  # first: a job submitted below gets one try this pass
        started: list[Retrain] = []
        for t in transitions:
            a = t.alert
            if a.state is AlertState.firing and t.previous is not AlertState.firing and a.rule in self.cfg.on_alerts:
                if now - self.state.last_alert_retrain < self.cfg.cooldown_s and self.state.last_alert_retrain:
                    print(f"[monitor] {a.rule} fired; no retrain: the last one was {now - self.state.last_alert_retrain:.0f}s ago "
                          f"(monitor.retrain.cooldown_s={self.cfg.cooldown_s:g})")
                    continue
                started.append(self._start(f"alert-{int(a.fired_at or now)}", f"alert {a.rule}: {a.message}", now))
                self.state.last_alert_retrain = now
        if self.cron is not None:
            if not self.state.schedule_checked:
                self.state.schedule_checked = now  # the first start: from now on, not every minute of the past day
            elif self.cron.due(self.state.schedule_checked, now):
                started.append(self._start(f"schedule-{int(now // 60 * 60)}", f"schedule {self.cfg.schedule}", now))
            self.state.schedule_checked = now
        self.save()
        return started

    def _start(self, trigger: str, reason: str, now: float) -> Retrain:
        job = Retrain(f"mlsys-retrain-{self.model}-{trigger}", reason, now, entrypoint(self.model, self.home, self.cfg, self.program))
        if any(r.submission_id == job.submission_id for r in self.state.history):
            return job
        self.state.history.append(job)
        self._try_submit(job, now)
        return job

    def _try_submit(self, job: Retrain, now: float) -> None:
        try:
            self._submit(job.submission_id, job.entrypoint)
        except Exception as e:  # noqa: BLE001 - the Jobs API's errors are plain RuntimeErrors
            if "already exists" not in str(e):  # else: submitted before a restart, the same job
                job.error = str(e).strip()
                if now - job.at >= SUBMIT_RETRY_S:
                    job.status, job.finished_at = "FAILED to submit", now
                    print(f"[monitor] gave up submitting the retraining job of {self.model} after {now - job.at:.0f}s: {job.error}")
                else:
                    print(f"[monitor] could not submit the retraining job of {self.model} (retried next pass): {job.error}")
                return
        job.status, job.error = "PENDING", ""
        print(f"[monitor] retraining {self.model} ({job.reason}): Ray job {job.submission_id}")

    def _follow(self, now: float) -> None:
        for job in self.state.history:
            if job.status in FINISHED or job.finished_at is not None:
                continue
            if job.status == "UNSUBMITTED":
                self._try_submit(job, now)
                continue
            try:
                status = self._status(job.submission_id)  # a JobStatus enum, or its name
                job.status = str(getattr(status, "value", status))
            except Exception as e:  # noqa: BLE001 - the Jobs API unreachable for a while: try next tick
                print(f"[monitor] status of Ray job {job.submission_id}: {e}")
                continue
            if job.status in FINISHED:
                job.finished_at = now
                print(f"[monitor] retraining job {job.submission_id} {job.status.lower()}")
