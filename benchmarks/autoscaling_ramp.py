"""Autoscaling ramp (issue 17): the replicas Ray Serve's autoscaler reaches under a load ramp, against
what ``mlsys.serve.capacity.replicas_for`` predicts from the measured QPS x latency (Little's law).

    python benchmarks/autoscaling_ramp.py --home /tmp/bench-serve --model ctr/1
        [--steps 1:45,2:45,4:45,8:45,4:45,1:45] [--target 2] [--max-replicas 4]
        [--upscale-delay-s 2] [--downscale-delay-s 5] [--no-record]

The model is a trained package (``mlsys run home.root=/tmp/bench-serve train.max_epochs=1``: DeepFM,
MovieLens-100K). This process starts the embedded Ray (``cluster.num_cpus=8`` logical CPUs: 4 ingress
replicas of 0.5 CPU fit) and the default app (``mlsys.api.serving.start_server``, fused graph) with Serve
autoscaling on the ingress (``serve.ingress.autoscaling.*``). One ``benchmarks/load_client.py --steps``
process drives the ramp (closed-loop clients, ``POST /v1/rank``, 100 candidates) and reports every
wall-clock second; meanwhile this process samples, every second, the ingress's replicas
(``serve.status()``) and the autoscaler's own gauges from the node's metrics endpoint
(``ray_serve_autoscaling_total_requests``, ``..._desired_replicas``). Per second and per step it sets
the formula's replicas, ``ceil(QPS x mean latency / target_ongoing_requests)`` within [min, max], beside
the replicas reached.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from harness import Row, record  # noqa: E402
from serving import Prometheus, Serving, wait_quiet, write_bodies  # noqa: E402

from mlsys.serve.capacity import replicas_for  # noqa: E402

DEPLOYMENT = "Ingress"
LOOK_BACK_S = 30.0  # Serve's default look_back_period_s (AutoscalingConfig has no field for it)
GAUGE = re.compile(r'^ray_serve_autoscaling_(total_requests|desired_replicas|target_replicas)\{(.*)\} (\S+)$')


def replica_states(app: str) -> dict[str, int]:
    from ray import serve

    deployments = serve.status().applications[app].deployments
    states = deployments[DEPLOYMENT].replica_states if DEPLOYMENT in deployments else {}
    return {getattr(k, "value", str(k)): int(n) for k, n in states.items()}


def autoscaler_gauges(url: str, app: str) -> dict[str, float]:
    """The controller's autoscaling gauges for the ingress (as last exported by the node: up to ~10 s old)."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            for line in r.read().decode().splitlines():
                m = GAUGE.match(line)
                if m and f'deployment="{DEPLOYMENT}"' in m.group(2) and f'application="{app}"' in m.group(2):
                    out[m.group(1)] = float(m.group(3))
    except OSError:
        pass
    return out


def drive(args: argparse.Namespace, url: str, bodies: Path, prometheus_url: str) -> tuple[dict, list[dict]]:
    """Run the ramp; sample replicas and gauges every second while it runs. (client result, samples)."""
    cmd = [sys.executable, str(HERE / "load_client.py"), "--url", f"{url}/v1/rank", "--bodies", str(bodies),
           "--steps", args.steps, "--warmup", str(args.warmup)]
    client = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []
    while client.poll() is None:
        tick = time.time()
        states = replica_states(args.app)
        samples.append({"t": tick, "running": states.get("RUNNING", 0),
                        "starting": states.get("STARTING", 0) + states.get("PENDING_MIGRATION", 0),
                        "stopping": states.get("STOPPING", 0), **autoscaler_gauges(prometheus_url, args.app)})
        time.sleep(max(0.0, 1.0 - (time.time() - tick)))
    out, err = client.communicate()
    if client.returncode != 0:
        raise RuntimeError(f"load client failed ({client.returncode}): {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]), samples


def join(result: dict, samples: list[dict], a: argparse.Namespace) -> list[dict]:
    """One row per second of the ramp: the client's numbers, the formula, the replicas at that second."""
    rows, window = [], []
    for sec in result["timeline"]:
        latency_s = sec["mean_ms"] / 1000 if sec["ok"] else 0.0
        ongoing = sec["ok"] * latency_s  # QPS x mean latency, this second
        window = [w for w in window if w[0] > sec["t"] - LOOK_BACK_S] + [(sec["t"], ongoing)]
        smoothed = sum(w[1] for w in window) / len(window)
        near = min(samples, key=lambda s: abs(s["t"] - (sec["t"] + 0.5))) if samples else {}
        rows.append({**sec, "ongoing": ongoing,
                     "predicted": replicas_for(sec["ok"], latency_s, a.target, a.min_replicas, a.max_replicas),
                     "predicted_smoothed": replicas_for(smoothed, 1.0, a.target, a.min_replicas, a.max_replicas),
                     "running": near.get("running"), "starting": near.get("starting"),
                     "serve_total_requests": near.get("total_requests"), "serve_desired": near.get("desired_replicas")})
    return rows


def per_step(result: dict, rows: list[dict], a: argparse.Namespace) -> list[dict]:
    out = []
    for step in result["steps"]:
        mine = [r for r in rows if r["step"] == step["step"]]
        predicted = replicas_for(step["qps"], step["mean_ms"] / 1000, a.target, a.min_replicas, a.max_replicas)
        running = [r["running"] for r in mine if r["running"] is not None]
        reached_at = next((max(0.0, r["t"] - step["start"]) for r in mine if r["running"] == predicted), None)
        out.append({**step, "ongoing": step["qps"] * step["mean_ms"] / 1000, "predicted": predicted,
                    "at_end": running[-1] if running else None, "min": min(running, default=None),
                    "max": max(running, default=None), "reached_after_s": reached_at})
    return out


def fmt(v, spec: str = ".0f") -> str:
    return "n/a" if v is None else format(v, spec)


def step_table(steps: list[dict]) -> list[str]:
    lines = ["| step | clients | QPS | p50 ms | p99 ms | QPS x latency | formula's replicas | running at step end "
             "| min-max in step | formula's count first reached after |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in steps:
        lines.append(f"| {s['step'] + 1} | {s['concurrency']} | {s['qps']:.1f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
                     f"{s['ongoing']:.2f} | {s['predicted']} | {fmt(s['at_end'])} | {fmt(s['min'])}-{fmt(s['max'])} | "
                     f"{fmt(s['reached_after_s'], '.0f') + ' s' if s['reached_after_s'] is not None else 'not in the step'} |")
    return lines


def timeline_table(rows: list[dict], every: int) -> list[str]:
    t0 = rows[0]["t"] if rows else 0
    lines = ["| s | clients | QPS | mean ms | QPS x latency | formula | formula on the 30 s mean | running (+starting) "
             "| Serve's total requests | Serve's desired |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows[::every]:
        lines.append(f"| {r['t'] - t0} | {r['concurrency']} | {r['ok']} | {r['mean_ms']:.1f} | {r['ongoing']:.2f} | "
                     f"{r['predicted']} | {r['predicted_smoothed']} | {fmt(r['running'])} (+{fmt(r['starting'])}) | "
                     f"{fmt(r['serve_total_requests'], '.2f')} | {fmt(r['serve_desired'], '.2f')} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default="/tmp/bench-serve")
    parser.add_argument("--model", default="ctr/1")
    parser.add_argument("--app", default="ranking")
    parser.add_argument("--steps", default="1:45,2:45,4:45,8:45,4:45,1:45", help="CLIENTS:SECONDS,...")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--target", type=float, default=2.0, help="target_ongoing_requests")
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=4)
    parser.add_argument("--upscale-delay-s", type=float, default=2.0)
    parser.add_argument("--downscale-delay-s", type=float, default=5.0)
    parser.add_argument("--logs", default="/tmp/bench-ramp-logs")
    parser.add_argument("--quiet-wait-s", type=float, default=120)
    parser.add_argument("--no-record", action="store_true")
    a = parser.parse_args()
    logs = Path(a.logs)
    logs.mkdir(parents=True, exist_ok=True)

    from mlsys.api import serving as commands
    from mlsys.api.config import compose_config
    from mlsys.registry.package import read_package

    model = commands.resolve_model(compose_config([f"home.root={a.home}", f"serve.model={a.model}"]))
    bodies = write_bodies(read_package(model.source), logs / "bodies")["rank"]
    load, waited, quiet = wait_quiet(a.quiet_wait_s)
    print(f"[ramp] load {load:.2f}, waited {waited:.0f} s, quiet={quiet}", flush=True)
    scale = [f"serve.ingress.autoscaling.{k}={v}" for k, v in
             (("min_replicas", a.min_replicas), ("max_replicas", a.max_replicas), ("target_ongoing_requests", a.target),
              ("upscale_delay_s", a.upscale_delay_s), ("downscale_delay_s", a.downscale_delay_s))]
    serving = Serving(a.home, a.model, extra=scale)
    started = time.perf_counter()
    try:
        url = serving.start()
        print(f"[ramp] serving at {url} after {time.perf_counter() - started:.1f} s; ramp {a.steps}", flush=True)
        result, samples = drive(a, url, bodies, Prometheus().url)
    finally:
        serving.stop()
    rows = join(result, samples, a)
    steps = per_step(result, rows, a)
    (logs / "ramp.json").write_text(json.dumps({"result": result, "samples": samples, "rows": rows, "steps": steps}, indent=1))
    for line in timeline_table(rows, 1):
        print(line)
    for line in step_table(steps):
        print(line)

    table_rows = [Row(f"step {s['step'] + 1}, {s['concurrency']} clients: replicas at the step's end", "Serve autoscaler, running",
                      "ceil(QPS x latency / target)", float(s["at_end"] or 0), float(s["predicted"]), "replicas", 1) for s in steps]
    notes = "\n".join([
        f"Ramp: `benchmarks/load_client.py --steps {a.steps}` (closed-loop clients, keep-alive, `POST /v1/rank` with 100 "
        f"known candidates, {a.warmup} warm-up requests first), errors {result['errors']}. App: model `{a.model}` (DeepFM, "
        f"MovieLens-100K), fused graph, defaults otherwise; ingress autoscaling min {a.min_replicas}, max {a.max_replicas}, "
        f"target_ongoing_requests {a.target:g}, upscale_delay_s {a.upscale_delay_s:g}, downscale_delay_s "
        f"{a.downscale_delay_s:g}, 0.5 CPU a replica on `cluster.num_cpus=8` logical CPUs (2 cores). Serve's own "
        f"defaults, not settable through `serve.*.autoscaling`: look_back_period_s 30, the proxy's handle records its "
        "ongoing requests every 6 s and pushes them every 10 s. Replicas sampled every second with `serve.status()`; "
        "Serve's gauges as the node last exported them.",
        f"Machine: 2 cores, shared; 1-minute load {load:.2f} at the start ({'quiet' if quiet else 'NOT quiet'} after "
        f"{waited:.0f} s), {os.getloadavg()[0]:.2f} at the end.",
        "", "Per step (the formula from the step's QPS and mean latency; 'first reached': seconds from the step's start "
        "until the running replicas equalled it):", "", *step_table(steps),
        "", "Every 5 s (QPS: requests completed in that second; 'formula on the 30 s mean': the same formula on the mean "
        "of QPS x latency over the last 30 s, what Serve averages):", "", *timeline_table(rows, 5),
    ])
    if not a.no_record:
        record("Autoscaling ramp: Serve's replicas against ceil(QPS x latency / target)", table_rows, notes)


if __name__ == "__main__":
    main()
