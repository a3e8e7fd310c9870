"""clusters/retrain-cronjob.yaml: the CronJob submits what the monitor's Retrainer submits, to the cluster,
image and home of the other manifests, once per scheduled run (its script run with /bin/sh against a
stand-in `ray` CLI that records its calls: the Ray Jobs API is not ours, and no cluster runs here)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from mlsys.monitor.config import RetrainConfig
from mlsys.monitor.retrain import entrypoint

CLUSTERS = Path(__file__).resolve().parents[2] / "clusters"
SCHEDULED_MINUTE = 29474640  # 2026-01-15 00:00 UTC in minutes: the suffix the CronJob controller names its Jobs with

FAKE_RAY = """#!/bin/sh
echo "$*" >> "$RAY_CALLS"
case "$1 $2" in
  "job submit") [ "$FAKE_SUBMIT" = ok ] && { echo "Job '$6' submitted successfully"; exit 0; }
                [ "$FAKE_SUBMIT" = exists ] && { echo "Job with submission_id $6 already exists. Please use a different submission_id."; exit 1; }
                echo "Failed to connect to Ray at address: $4"; exit 1 ;;
  "job logs") echo "training..."; exit 0 ;;
  "job status") echo "Status for job '$5': $FAKE_STATUS"; exit 0 ;;
esac
exit 2
"""


@pytest.fixture(scope="module")
def cronjob() -> dict:
    return yaml.safe_load((CLUSTERS / "retrain-cronjob.yaml").read_text())


def _container(cronjob: dict) -> dict:
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container


def _env(cronjob: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in _container(cronjob)["env"]}


def test_the_cronjob_runs_one_retrain_at_a_time(cronjob):
    assert (cronjob["apiVersion"], cronjob["kind"]) == ("batch/v1", "CronJob")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["timeZone"] == "Etc/UTC" and len(spec["schedule"].split()) == 5
    assert 0 < spec["startingDeadlineSeconds"] <= 3600
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert 0 <= job["backoffLimit"] <= 3 and job["activeDeadlineSeconds"] > 0
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    requests = _container(cronjob)["resources"]["requests"]
    assert requests["cpu"].endswith("m") and requests["memory"].endswith("Mi")  # it only submits and waits


def test_it_submits_what_the_retrainer_submits(cronjob):
    env = _env(cronjob)
    service = yaml.safe_load((CLUSTERS / "rayservice.yaml").read_text())
    overrides = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]["overrides"]
    home = next(o.split("=", 1)[1] for o in overrides if o.startswith("home.root="))
    tracking = next(o for o in overrides if o.startswith("home.tracking_uri="))
    assert env["ENTRYPOINT"] == entrypoint(env["MODEL"], home, RetrainConfig(overrides=[tracking]))
    assert "train.warm_start=models:/ctr@champion" in env["ENTRYPOINT"] and "cluster.address=auto" in env["ENTRYPOINT"]
    assert env["RAY_API_SERVER_ADDRESS"] == f"http://{service['metadata']['name']}-head-svc:8265"  # KubeRay's head service
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert _container(cronjob)["image"] == head["image"]


def _run(cronjob: dict, tmp_path: Path, job_name: str, submit: str, status: str = "SUCCEEDED") -> tuple[int, str, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "ray").write_text(FAKE_RAY)
    (bin_dir / "ray").chmod(0o755)
    calls = tmp_path / "calls.txt"
    calls.unlink(missing_ok=True)
    env = {**{k: v for k, v in _env(cronjob).items() if v is not None}, "JOB_NAME": job_name, "RAY_CALLS": str(calls),
           "FAKE_SUBMIT": submit, "FAKE_STATUS": status, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    container = _container(cronjob)
    result = subprocess.run([*container["command"], *container["args"]], env=env, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr, calls.read_text().splitlines() if calls.exists() else []


def test_a_scheduled_run_submits_once_and_waits_for_success(cronjob, tmp_path):
    rc, out, calls = _run(cronjob, tmp_path, f"mlsys-retrain-ctr-{SCHEDULED_MINUTE}", "ok")
    assert rc == 0, out
    sid = f"mlsys-retrain-ctr-cron-{SCHEDULED_MINUTE * 60}"
    assert calls == [f"job submit --address http://mlsys-ranking-head-svc:8265 --submission-id {sid} --no-wait -- "
                     + _env(cronjob)["ENTRYPOINT"],
                     f"job logs --address http://mlsys-ranking-head-svc:8265 --follow {sid}",
                     f"job status --address http://mlsys-ranking-head-svc:8265 {sid}"]
    assert f"Status for job '{sid}': SUCCEEDED" in out


def test_a_retry_follows_the_job_its_run_submitted(cronjob, tmp_path):
    rc, out, calls = _run(cronjob, tmp_path, f"mlsys-retrain-ctr-{SCHEDULED_MINUTE}", "exists", status="FAILED")
    assert rc == 1  # the retrain failed: so does the CronJob's Job
    assert "submitted by an earlier try of this run: following it" in out
    assert [c.split()[1] for c in calls] == ["submit", "logs", "status"]


def test_a_refused_submission_fails_the_pod(cronjob, tmp_path):
    rc, out, calls = _run(cronjob, tmp_path, f"mlsys-retrain-ctr-{SCHEDULED_MINUTE}", "refused")
    assert rc == 1 and "Failed to connect" in out
    assert len(calls) == 1  # no waiting on a job that does not exist


def test_a_job_made_by_hand_gets_an_id_of_its_own_minute(cronjob, tmp_path):
    rc, out, calls = _run(cronjob, tmp_path, "mlsys-retrain-ctr-now", "ok")
    assert rc == 0, out
    sid = shlex.split(calls[0])[5]
    seconds = int(sid.removeprefix("mlsys-retrain-ctr-cron-"))
    assert seconds % 60 == 0 and seconds > SCHEDULED_MINUTE * 60
