"""Continuous training's trigger (mlsys.monitor.retrain), no Ray: an alert or the schedule submits one
job, the cooldown holds, a restart does not submit twice, and the job is followed to its end."""

from __future__ import annotations

import calendar

from mlsys.monitor.alerts import AlertRule, Alerts
from mlsys.monitor.config import RetrainConfig
from mlsys.monitor.retrain import Retrainer, entrypoint


class Jobs:
    """The Jobs API's contract: a duplicate submission id is refused."""

    def __init__(self):
        self.submitted: dict[str, str] = {}
        self.statuses: dict[str, str] = {}

    def submit(self, submission_id: str, command: str) -> None:
        if submission_id in self.submitted:
            raise RuntimeError(f"Job with submission_id {submission_id} already exists.")
        self.submitted[submission_id] = command
        self.statuses[submission_id] = "RUNNING"

    def status(self, submission_id: str) -> str:
        return self.statuses[submission_id]


def _firing(alerts: Alerts, value: float, now: float):
    return alerts.observe({"drift.linf.gender": value}, now=now)


def test_a_firing_alert_submits_one_warm_started_job_and_the_cooldown_holds(tmp_path):
    jobs = Jobs()
    cfg = RetrainConfig(on_alerts=["feature_drift"], cooldown_s=600, overrides=["data.span=1"])
    alerts = Alerts({"feature_drift": AlertRule(metric="drift.linf.*", threshold=0.1)})
    retrainer = Retrainer("ctr", "/h", cfg, str(tmp_path / "retrain.json"), jobs.submit, jobs.status)
    [job] = retrainer.consider(_firing(alerts, 0.3, 100), now=100)
    assert job.reason.startswith("alert feature_drift: FIRING") and list(jobs.submitted) == [job.submission_id]
    assert jobs.submitted[job.submission_id] == entrypoint("ctr", "/h", cfg) == \
        "mlsys run home.root=/h registry.model_name=ctr cluster.address=auto train.warm_start=models:/ctr@champion data.span=1"
    assert retrainer.consider(_firing(alerts, 0.3, 200), now=200) == []  # still firing: no new trigger
    _firing(alerts, 0.0, 300)  # resolved
    assert retrainer.consider(_firing(alerts, 0.4, 400), now=400) == []  # fired again within the cooldown
    jobs.statuses[job.submission_id] = "SUCCEEDED"
    retrainer.consider([], now=500)
    assert retrainer.state.history[0].status == "SUCCEEDED" and retrainer.state.history[0].finished_at == 500
    _firing(alerts, 0.0, 600)
    assert len(retrainer.consider(_firing(alerts, 0.5, 800), now=800)) == 1  # after the cooldown
    assert len(jobs.submitted) == 2


def test_a_restart_after_submitting_does_not_submit_twice(tmp_path):
    jobs = Jobs()
    cfg = RetrainConfig(on_alerts=["feature_drift"])
    rules = {"feature_drift": AlertRule(metric="drift.linf.*", threshold=0.1)}
    transitions = _firing(Alerts(rules), 0.3, 100)
    Retrainer("ctr", "/h", cfg, str(tmp_path / "a.json"), jobs.submit, jobs.status).consider(transitions, now=100)
    # The monitor died before saving its state (another state file): the same trigger, the same job id.
    again = Retrainer("ctr", "/h", cfg, str(tmp_path / "b.json"), jobs.submit, jobs.status)
    [job] = again.consider(transitions, now=101)
    assert len(jobs.submitted) == 1 and job.status in ("PENDING", "RUNNING")
    # Restarted with its state: the trigger is known, nothing is submitted.
    assert Retrainer("ctr", "/h", cfg, str(tmp_path / "a.json"), jobs.submit, jobs.status).state.history[0].submission_id == job.submission_id


def test_the_schedule_submits_once_per_scheduled_minute(tmp_path):
    jobs = Jobs()
    t = float(calendar.timegm((2026, 12, 3, 2, 59, 0, 0, 0, 0)))
    retrainer = Retrainer("ctr", "/h", RetrainConfig(schedule="0 3 * * *", warm_start=False), str(tmp_path / "r.json"), jobs.submit, jobs.status)
    assert retrainer.consider([], now=t) == []  # the first tick only starts the clock
    [job] = retrainer.consider([], now=t + 90)  # 03:00:30
    assert job.reason == "schedule 0 3 * * *" and "warm_start" not in job.entrypoint
    assert retrainer.consider([], now=t + 150) == [] and len(jobs.submitted) == 1


def test_a_refused_submission_is_retried_then_given_up(tmp_path):
    from mlsys.monitor.retrain import SUBMIT_RETRY_S

    jobs, down = Jobs(), {"n": 2}

    def flaky(submission_id: str, command: str) -> None:
        if down["n"]:
            down["n"] -= 1
            raise RuntimeError("Request failed with status code 500: No available agent to submit job, please try again later.")
        jobs.submit(submission_id, command)

    cfg = RetrainConfig(on_alerts=["feature_drift"])
    retrainer = Retrainer("ctr", "/h", cfg, str(tmp_path / "r.json"), flaky, jobs.status)
    [job] = retrainer.consider(_firing(Alerts({"feature_drift": AlertRule(metric="drift.linf.*", threshold=0.1)}), 0.3, 100), now=100)
    assert job.status == "UNSUBMITTED" and "No available agent" in job.error and jobs.submitted == {}
    retrainer.consider([], now=130)
    assert job.status == "UNSUBMITTED"
    retrainer.consider([], now=160)
    assert job.status == "PENDING" and list(jobs.submitted) == [job.submission_id]
    dead = Retrainer("ctr", "/h", cfg, str(tmp_path / "d.json"), lambda *a: (_ for _ in ()).throw(RuntimeError("refused")), jobs.status)
    [never] = dead.consider(_firing(Alerts({"feature_drift": AlertRule(metric="drift.linf.*", threshold=0.1)}), 0.3, 100), now=100)
    dead.consider([], now=100 + SUBMIT_RETRY_S)
    assert never.status == "FAILED to submit" and never.finished_at == 100 + SUBMIT_RETRY_S
