"""Serving benchmarks (issue 12): the Ray Serve app against a bare process and KServe, batching
on and off, the split graph against the fused one. Candidates and baselines side by side in one run.

    python benchmarks/serving.py --home /tmp/bench-serve --model ctr/1 [--case rank v2 batching split]
        [--repeats 3] [--requests 2000] [--warmup 200] [--kserve-python /tmp/kserve-venv/bin/python] [--proxy haproxy]
        [--no-record]

The model is a trained package (``mlsys run home.root=/tmp/bench-serve train.max_epochs=1``:
DeepFM, MovieLens-100K). This process starts Ray and Serve (``mlsys.api.serving.start_server``,
the default app: what ``mlsys serve`` deploys) and keeps them up; further apps of the same model
(other settings) go beside it on route prefixes. Baselines run as their own processes. Every
measurement is one run of ``benchmarks/load_client.py`` (its own process: fixed concurrency,
``--warmup`` requests, then ``--requests`` timed ones; p50/p99/throughput, any non-2xx an error).
Each repeat measures every side of a case in turn, rotating the order; the table has medians.

- ``rank``: ``POST /v1/rank``, 100 candidates, users of the trained data, against
  ``benchmarks/bare_server.py`` (one FastAPI + uvicorn process, ``load_model(...).rank``),
  at concurrency 1 and 4. Also, to attribute the difference, the app with its feature log off, and with
  Serve's log level at WARNING.
- ``v2``: ``POST /v2/models/ctr/infer`` with 100 (user, item) rows against KServe's Python
  ``ModelServer`` (``benchmarks/kserve_model.py``, its own venv) at concurrency 16 (and 1).
- ``batching``: the v2 route at concurrency 16 and 4 (where a batch that waits would cost),
  ``serve.batching.enabled=true`` against ``false``, fused and split, and a few fused ``max_batch_size``
  settings; the batch sizes formed.
- ``split``: ``serve.graph=split`` against ``fused``, ``/v1/rank``, concurrency 1 and 16.
- ``monitoring`` (issue 15): ``/v1/rank`` with the online statistics on (windows of 10 s, so parts are
  written during the run) against ``serve.monitoring.enabled=false``, concurrency 1 and 4 (target p50 <= 1.05x).

Stage latencies and batch sizes come from the Ray node's Prometheus endpoint (``ray_mlsys_*``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from harness import Row, median, record  # noqa: E402

CASES = ("rank", "v2", "batching", "split", "monitoring")
CANDIDATES = 100


# -- the machine -----------------------------------------------------------------------------------


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    return pids


def other_benchmarks() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "benchmarks/"], capture_output=True, text=True).stdout.splitlines()
    mine = _ancestors()
    return [line for line in out if int(line.split()[0]) not in mine]


def wait_quiet(max_wait_s: float) -> tuple[float, float, bool]:
    """Wait (a minute at a time) for load < 1.5 and no other benchmark; (load, waited s, quiet)."""
    started = time.monotonic()
    while True:
        load, others = os.getloadavg()[0], other_benchmarks()
        if load < 1.5 and not others:
            return load, time.monotonic() - started, True
        if time.monotonic() - started >= max_wait_s:
            return load, time.monotonic() - started, False
        print(f"[bench] machine busy (load {load:.2f}, other benchmarks: {others[:3]}); waiting 60 s", flush=True)
        time.sleep(60)


def wait_raylets(max_wait_s: float = 1800) -> None:
    """At most two Ray clusters on these 2 cores: wait while two raylets run."""
    started = time.monotonic()
    while int(subprocess.run(["pgrep", "-c", "raylet"], capture_output=True, text=True).stdout.strip() or 0) >= 2:
        if time.monotonic() - started > max_wait_s:
            sys.exit("two Ray clusters kept running on this machine; not starting a third")
        print("[bench] two raylets running; waiting 30 s", flush=True)
        time.sleep(30)


def cpu_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float = 180, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


# -- request bodies --------------------------------------------------------------------------------


def write_bodies(package, directory: Path, n: int = 512, seed: int = 0) -> dict[str, Path]:
    """``n`` requests for users of the trained data, each with 100 distinct known candidates."""
    from mlsys.data.feature_schema import ITEM, USER

    rng = np.random.default_rng(seed)
    users, items = package.users[USER].to_numpy(), package.items[ITEM].to_numpy()
    requests = [(int(rng.choice(users)), [int(i) for i in rng.choice(items, CANDIDATES, replace=False)]) for _ in range(n)]
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"rank": directory / "rank.jsonl", "v2": directory / "v2.jsonl"}
    with paths["rank"].open("w") as f:
        for user, candidates in requests:
            f.write(json.dumps({"user_id": user, "candidates": candidates}) + "\n")
    with paths["v2"].open("w") as f:
        for user, candidates in requests:
            f.write(json.dumps({"inputs": [
                {"name": "user_id", "shape": [CANDIDATES], "datatype": "INT64", "data": [user] * CANDIDATES},
                {"name": "item_id", "shape": [CANDIDATES], "datatype": "INT64", "data": candidates}]}) + "\n")
    return paths


def in_process_rank_ms(package, bodies: Path) -> float:
    """``RankingModel.rank`` in this process on the same requests (median ms): the work itself."""
    from mlsys.serve.ranker import RankingModel

    model = RankingModel(package)
    requests = [json.loads(line) for line in bodies.read_text().splitlines()]
    times = []
    for i in range(2000):
        r = requests[i % len(requests)]
        started = time.perf_counter()
        model.rank(r["user_id"], r["candidates"])
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times[200:]))


# -- the servers -----------------------------------------------------------------------------------


@dataclass
class Side:
    """One server measured: its label, endpoint and (for our apps) its Serve application."""

    label: str
    url: str
    app: str | None = None


class Prometheus:
    """Sums of ``ray_mlsys_*`` series of this Ray node's metrics endpoint, by application and stage."""

    LINE = re.compile(r"^(ray_mlsys_(?:stage_latency_ms|batch_size)_(?:sum|count|bucket))\{(.*)\} (\S+)$")

    def __init__(self):
        import ray

        node = ray._private.worker.global_worker.node
        self.url = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"

    def snapshot(self) -> dict[tuple, float]:
        out: dict[tuple, float] = defaultdict(float)
        with urllib.request.urlopen(self.url, timeout=10) as r:
            for line in r.read().decode().splitlines():
                m = self.LINE.match(line)
                if m:
                    labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
                    out[(m.group(1), labels.get("application"), labels.get("stage"), labels.get("le"))] += float(m.group(3))
        return out

    def settled(self, app: str, sent: int, timeout_s: float = 45) -> dict[tuple, float]:
        """A snapshot once ``app``'s ingress has exported the ``sent`` requests sent to it (or after the timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            snap = self.snapshot()
            if snap.get(("ray_mlsys_stage_latency_ms_count", app, "request", None), 0) >= sent or time.monotonic() > deadline:
                return snap
            time.sleep(1)


def breakdown(before: dict, after: dict, app: str) -> dict:
    """Mean stage latencies (ms) and batch sizes of the requests between two snapshots."""
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if k[1] == app}
    out: dict = {}
    for (name, _, stage, le), value in delta.items():
        if name == "ray_mlsys_stage_latency_ms_count" and value:
            out[f"{stage}_ms"] = delta[("ray_mlsys_stage_latency_ms_sum", app, stage, None)] / value
        if name == "ray_mlsys_batch_size_count" and value:
            out[f"{stage}_batch_mean"] = delta[("ray_mlsys_batch_size_sum", app, stage, None)] / value
            out[f"{stage}_calls"] = value
        if name == "ray_mlsys_batch_size_bucket" and value:
            out.setdefault(f"{stage}_batch_le", {})[le] = value
    return out


@dataclass
class Serving:
    """Ray + Serve in this process: the default app at ``/`` and others beside it."""

    home: str
    model: str
    port: int = field(default_factory=free_port)
    apps: dict = field(default_factory=dict)
    extra: list = field(default_factory=list)  # overrides of every app, the default one too (autoscaling_ramp.py)

    def overrides(self, extra: list[str]) -> list[str]:
        return [f"home.root={self.home}", f"serve.model={self.model}", f"serve.port={self.port}", "cluster.num_cpus=8",
                *self.extra, *extra]

    def start(self) -> str:
        from mlsys.api.config import compose_config
        from mlsys.api.serving import start_server

        started = time.perf_counter()
        self.url = start_server(compose_config(self.overrides([])))
        self.started_s = time.perf_counter() - started
        self.prometheus = Prometheus()
        return self.url

    def deploy(self, name: str, extra: list[str]) -> str:
        """Another app of the same model (``extra`` overrides) at ``/<name>``, with the same feature log setting."""
        from mlsys.api import serving
        from mlsys.api.config import compose_config
        from mlsys.serve import app

        cfg = compose_config(self.overrides([f"serve.app_name={name}", f"serve.route_prefix=/{name}", *extra]))
        model = serving.resolve_model(cfg)
        _, log_dir = serving.online_features(cfg)
        self.apps[name] = extra
        return app.start(cfg.serve, model.source, model.name, model.version, None, log_dir)

    def delete(self, name: str) -> None:
        from ray import serve

        serve.delete(name)
        self.apps.pop(name, None)

    def stop(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


class Process:
    """A baseline server in its own process, logging to a file."""

    def __init__(self, args: list[str], ready_url: str, log: Path, env: dict | None = None):
        self.log = log.open("wb")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        wait_http(ready_url, process=self.process)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


# -- measuring -------------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    serving: Serving
    bodies: dict[str, Path]
    results: dict = field(default_factory=lambda: defaultdict(list))  # (case, label, concurrency) -> [result]
    sent: dict = field(default_factory=lambda: defaultdict(int))  # app -> requests sent (to know when its metrics are in)

    def client(self, side: Side, kind: str, concurrency: int) -> dict:
        a = self.args
        before = self.serving.prometheus.settled(side.app, self.sent[side.app]) if side.app else None
        cmd = [sys.executable, str(HERE / "load_client.py"), "--url", side.url, "--bodies", str(self.bodies[kind]),
               "--concurrency", str(concurrency), "--requests", str(a.requests), "--warmup", str(a.warmup)]
        busy0 = cpu_busy()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        busy1 = cpu_busy()
        if proc.returncode != 0:
            raise RuntimeError(f"load client failed ({proc.returncode}): {proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if result["errors"] or result["warmup_errors"]:  # a side that fails is no measurement: stop, say why
            raise RuntimeError(f"{side.label} at {side.url}: {result['errors']} of {a.requests} requests failed "
                               f"({result['statuses']}), e.g. {result['first_error']}")
        result["machine_busy_cores"] = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * os.cpu_count()
        if side.app:
            self.sent[side.app] += a.warmup + a.requests
            result["stages"] = breakdown(before, self.serving.prometheus.settled(side.app, self.sent[side.app]), side.app)
        return result

    def rounds(self, case: str, sides: list[Side], kind: str, concurrencies: list[int]) -> None:
        for repeat in range(self.args.repeats):
            for concurrency in concurrencies:
                order = sides[repeat % len(sides):] + sides[:repeat % len(sides)]
                for side in order:
                    r = self.client(side, kind, concurrency)
                    self.results[(case, side.label, concurrency)].append(r)
                    print(f"[{case}] repeat {repeat + 1} c={concurrency} {side.label}: p50 {r['p50_ms']:.2f} ms, "
                          f"p99 {r['p99_ms']:.2f} ms, {r['throughput_rps']:.1f} req/s, errors {r['errors']}, "
                          f"busy {r['machine_busy_cores']:.2f} cores, stages {json.dumps(r.get('stages', {}))}", flush=True)

    def med(self, case: str, label: str, concurrency: int, key: str) -> float:
        return median([r[key] for r in self.results[(case, label, concurrency)]])

    def row(self, case: str, name: str, cand: str, base: str, c: int, key: str, unit: str) -> Row:
        return Row(name, cand, base, self.med(case, cand, c, key), self.med(case, base, c, key), unit,
                   len(self.results[(case, cand, c)]))

    def stages(self, case: str, label: str, c: int) -> str:
        keys = sorted({k for r in self.results[(case, label, c)] for k in r.get("stages", {}) if not k.endswith("_le")})
        parts = []
        for k in keys:
            values = [r["stages"][k] for r in self.results[(case, label, c)] if k in r.get("stages", {})]
            parts.append(f"{k} {median(values):.2f}" if "calls" not in k else f"{k} {median(values):.0f}")
        return ", ".join(parts) or "n/a"

    def errors(self) -> int:
        return sum(r["errors"] + r["warmup_errors"] for rs in self.results.values() for r in rs)


def case_rank(b: Bench, package_path: str) -> list[Row]:
    bare_port = free_port()
    bare = Process([sys.executable, str(HERE / "bare_server.py"), "--package", package_path, "--port", str(bare_port)],
                   f"http://127.0.0.1:{bare_port}/healthz", Path(b.args.logs) / "bare_server.log")
    nolog = b.serving.deploy("nolog", ["serve.feature_logging.enabled=false"])
    warn = b.serving.deploy("warn", ["serve.log_level=WARNING"])
    sides = [Side("bare FastAPI + ORT", f"http://127.0.0.1:{bare_port}/v1/rank"),
             Side("mlsys serve (fused, defaults)", f"{b.serving.url}/v1/rank", "ranking"),
             Side("mlsys serve, feature log off", f"{nolog}/v1/rank", "nolog"),
             Side("mlsys serve, log WARNING", f"{warn}/v1/rank", "warn")]
    try:
        b.rounds("rank", sides, "rank", [1, 4])
    finally:
        bare.stop()
        b.serving.delete("nolog")
        b.serving.delete("warn")
    base, ours, *attribution = (s.label for s in sides)
    rows = []
    for c in (1, 4):
        rows += [b.row("rank", f"/v1/rank p50, 100 candidates, concurrency {c} (target <= 1.5x)", ours, base, c, "p50_ms", "ms"),
                 b.row("rank", f"/v1/rank p99, 100 candidates, concurrency {c} (target <= 2x)", ours, base, c, "p99_ms", "ms")]
    for side in attribution:
        rows += [b.row("rank", "/v1/rank p50, concurrency 1, attribution", side, base, 1, "p50_ms", "ms"),
                 b.row("rank", "/v1/rank p99, concurrency 1, attribution", side, base, 1, "p99_ms", "ms")]
    rows.append(b.row("rank", "/v1/rank throughput, concurrency 4", ours, base, 4, "throughput_rps", "req/s"))
    return rows


def case_v2(b: Bench, package_path: str) -> list[Row]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kserve = Process([b.args.kserve_python, str(HERE / "kserve_model.py"), "--package", package_path, "--port", str(port)],
                     f"http://127.0.0.1:{port}/v2/models/ctr/ready", Path(b.args.logs) / "kserve.log", env)
    sides = [Side("KServe ModelServer", f"http://127.0.0.1:{port}/v2/models/ctr/infer"),
             Side("mlsys serve (fused, batched)", f"{b.serving.url}/v2/models/ctr/infer", "ranking")]
    try:
        b.rounds("v2", sides, "v2", [16, 1])
    finally:
        kserve.stop()
    base, ours = (s.label for s in sides)
    return [b.row("v2", "v2 infer throughput, 100 rows, concurrency 16 (target >= 1.2x)", ours, base, 16, "throughput_rps", "req/s"),
            b.row("v2", "v2 infer p50, concurrency 16", ours, base, 16, "p50_ms", "ms"),
            b.row("v2", "v2 infer p99, concurrency 16", ours, base, 16, "p99_ms", "ms"),
            b.row("v2", "v2 infer p50, concurrency 1", ours, base, 1, "p50_ms", "ms")]


# The fused graph batches the requests of one event-loop turn (mlsys.serve.coalesce): only the size varies.
BATCH_SETTINGS = [("b32", ["serve.batching.max_batch_size=32"]), ("b4", ["serve.batching.max_batch_size=4"])]


def case_batching(b: Bench) -> list[Row]:
    urls = {"nobatch": b.serving.deploy("nobatch", ["serve.batching.enabled=false"]),
            "bsplit": b.serving.deploy("bsplit", ["serve.graph=split"]),
            "splitnobatch": b.serving.deploy("splitnobatch", ["serve.graph=split", "serve.batching.enabled=false"])}
    for name, extra in BATCH_SETTINGS:
        urls[name] = b.serving.deploy(name, extra)
    sides = [Side("fused, batching off", f"{urls['nobatch']}/v2/models/ctr/infer", "nobatch"),
             Side("fused, batching on (16 a call)", f"{b.serving.url}/v2/models/ctr/infer", "ranking"),
             Side("split, batching off", f"{urls['splitnobatch']}/v2/models/ctr/infer", "splitnobatch"),
             Side("split, batching on (16, 2 ms)", f"{urls['bsplit']}/v2/models/ctr/infer", "bsplit"),
             *(Side(f"fused, batching on ({n[1:]} a call)", f"{urls[n]}/v2/models/ctr/infer", n) for n, _ in BATCH_SETTINGS)]
    try:
        b.rounds("batching", sides, "v2", [4, 16])
    finally:
        for name in urls:
            b.serving.delete(name)
    off, on, soff, son, *tuned = (s.label for s in sides)
    rows = [b.row("batching", "v2 infer throughput, concurrency 16, fused (target >= 3x)", on, off, 16, "throughput_rps", "req/s"),
            b.row("batching", "v2 infer throughput, concurrency 16, split", son, soff, 16, "throughput_rps", "req/s")]
    rows += [b.row("batching", "v2 infer throughput, concurrency 16, fused", t, off, 16, "throughput_rps", "req/s") for t in tuned]
    rows += [b.row("batching", "v2 infer p50, concurrency 16, fused", on, off, 16, "p50_ms", "ms"),
             b.row("batching", "v2 infer p50, concurrency 4, fused", on, off, 4, "p50_ms", "ms"),
             b.row("batching", "v2 infer throughput, concurrency 4, fused", on, off, 4, "throughput_rps", "req/s")]
    return rows


def case_split(b: Bench) -> list[Row]:
    split = b.serving.deploy("split", ["serve.graph=split"])
    sides = [Side("fused", f"{b.serving.url}/v1/rank", "ranking"), Side("split", f"{split}/v1/rank", "split")]
    try:
        b.rounds("split", sides, "rank", [1, 16])
    finally:
        b.serving.delete("split")
    fused, split = (s.label for s in sides)
    return [b.row("split", "/v1/rank p50, concurrency 1", split, fused, 1, "p50_ms", "ms"),
            b.row("split", "/v1/rank p99, concurrency 1", split, fused, 1, "p99_ms", "ms"),
            b.row("split", "/v1/rank throughput, concurrency 16", split, fused, 16, "throughput_rps", "req/s"),
            b.row("split", "/v1/rank p50, concurrency 16", split, fused, 16, "p50_ms", "ms"),
            b.row("split", "/v1/rank p99, concurrency 16", split, fused, 16, "p99_ms", "ms")]


# -- the report ------------------------------------------------------------------------------------


def case_monitoring(b: Bench) -> list[Row]:
    on = b.serving.deploy("monitored", ["serve.monitoring.window_s=10", f"serve.monitoring.path={b.serving.home}/monitor-bench"])
    off = b.serving.deploy("unmonitored", ["serve.monitoring.enabled=false"])
    sides = [Side("online statistics on", f"{on}/v1/rank", "monitored"), Side("online statistics off", f"{off}/v1/rank", "unmonitored")]
    try:
        b.rounds("monitoring", sides, "rank", [1, 4])
    finally:
        for name in ("monitored", "unmonitored"):
            b.serving.delete(name)
    cand, base = (s.label for s in sides)
    return [b.row("monitoring", f"/v1/rank p50 with online statistics, concurrency {c} (target <= 1.05x)", cand, base, c, "p50_ms", "ms")
            for c in (1, 4)] + [b.row("monitoring", "/v1/rank p99 with online statistics, concurrency 4", cand, base, 4, "p99_ms", "ms")]


def _per_repeat(b: Bench, case: str, c: int, key: str) -> str:
    labels = [label for (cs, label, cc) in b.results if cs == case and cc == c]
    return "; ".join(f"{label}: {', '.join(f'{r[key]:.1f}' for r in b.results[(case, label, c)])}" for label in labels)


def notes(b: Bench, cases: list[str], context: dict) -> str:
    a = b.args
    lines = [
        f"Load: `benchmarks/load_client.py` in its own process (asyncio + aiohttp, keep-alive), {a.warmup} warm-up requests then "
        f"{a.requests} timed ones per measurement, fixed concurrency; medians over {a.repeats} repeats, sides rotated within "
        f"each repeat. Bodies: {CANDIDATES} distinct known candidates for a user of the trained data (512 bodies, users vary), "
        f"as `/v1/rank` JSON or a v2 infer request of {CANDIDATES} (user_id, item_id) INT64 rows. Model: `{a.model}` "
        f"from `mlsys run home.root={a.home} train.max_epochs=1` (DeepFM defaults, MovieLens-100K). Serve: embedded Ray "
        f"(`cluster.num_cpus=8` logical), `serve.proxy={a.proxy}`"
        f"{' (with it RAY_SERVE_THROUGHPUT_OPTIMIZED=' + os.environ.get('RAY_SERVE_THROUGHPUT_OPTIMIZED', '') + ')' if a.proxy == 'haproxy' else ''}, "
        f"1 replica per deployment at 0.5 CPU, started in "
        f"{context['serve_start_s']:.1f} s; "
        f"our apps beside each other on route prefixes of one Serve instance. Errors (non-2xx) over all runs: {b.errors()}.",
        f"Machine: 2 cores, no GPU, shared. 1-minute load {context['load_start']:.2f} at the start "
        f"({'quiet' if context['quiet'] else 'NOT quiet: ran anyway after waiting'} {context['waited_s']:.0f} s), "
        f"{os.getloadavg()[0]:.2f} at the end. `RankingModel.rank` in-process on the same requests: "
        f"{context['in_process_ms']:.3f} ms (median).",
    ]
    for case in cases:
        labels = sorted({(label, c) for (cs, label, c) in b.results if cs == case}, key=lambda x: (x[1], x[0]))
        lines.append(f"\n{case}: per side (median over repeats) p50 / p99 ms, req/s, busy cores (whole machine), client CPU s; "
                     "stage means from `ray_mlsys_stage_latency_ms` (ms) and `ray_mlsys_batch_size` (requests per scoring call):")
        for label, c in labels:
            lines.append(f"- c={c} {label}: {b.med(case, label, c, 'p50_ms'):.2f} / {b.med(case, label, c, 'p99_ms'):.2f} ms, "
                         f"{b.med(case, label, c, 'throughput_rps'):.1f} req/s, {b.med(case, label, c, 'machine_busy_cores'):.2f} cores, "
                         f"client {b.med(case, label, c, 'client_cpu_s'):.1f} s; stages: {b.stages(case, label, c)}")
        for c in sorted({c for (cs, _, c) in b.results if cs == case}):
            lines.append(f"- c={c} p50 per repeat: {_per_repeat(b, case, c, 'p50_ms')}")
            lines.append(f"- c={c} req/s per repeat: {_per_repeat(b, case, c, 'throughput_rps')}")
    if "split" in cases:
        hop = b.med("split", "split", 1, "p50_ms") - b.med("split", "fused", 1, "p50_ms")
        lines.append(f"\nPer-hop cost (split p50 - fused p50 at concurrency 1, two extra hops: ingress -> embedding, "
                     f"ingress -> dense): {hop:.2f} ms in all, {hop / 2:.2f} ms a hop.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default="/tmp/bench-serve")
    parser.add_argument("--model", default="ctr/1")
    parser.add_argument("--case", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--kserve-python", default="/tmp/kserve-venv/bin/python")
    parser.add_argument("--logs", default="/tmp/bench-serve-logs")
    parser.add_argument("--quiet-wait-s", type=float, default=1800)
    parser.add_argument("--proxy", choices=("ray", "haproxy"), default="ray",
                        help="serve.proxy of every app: Serve's Python proxy, or HAProxy with direct ingress")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    Path(args.logs).mkdir(parents=True, exist_ok=True)

    from mlsys.api import serving as commands
    from mlsys.api.config import compose_config
    from mlsys.registry.package import read_package

    model = commands.resolve_model(compose_config([f"home.root={args.home}", f"serve.model={args.model}"]))
    package = read_package(model.source)
    bodies = write_bodies(package, Path(args.logs) / "bodies")
    load, waited, quiet = wait_quiet(args.quiet_wait_s)
    print(f"[bench] load {load:.2f}, waited {waited:.0f} s, quiet={quiet}", flush=True)
    context = {"load_start": load, "waited_s": waited, "quiet": quiet, "in_process_ms": in_process_rank_ms(package, bodies["rank"])}
    wait_raylets()
    serving = Serving(args.home, args.model, extra=[f"serve.proxy={args.proxy}"])
    serving.start()
    context["serve_start_s"] = serving.started_s
    bench = Bench(args, serving, bodies)
    rows: list[Row] = []
    try:
        for case in args.case:
            print(f"[bench] case {case}, load {os.getloadavg()[0]:.2f}", flush=True)
            if case == "rank":
                rows += case_rank(bench, model.source)
            elif case == "v2":
                rows += case_v2(bench, model.source)
            elif case == "batching":
                rows += case_batching(bench)
            elif case == "monitoring":
                rows += case_monitoring(bench)
            else:
                rows += case_split(bench)
    finally:
        (Path(args.logs) / "results.json").write_text(json.dumps({"|".join(map(str, k)): v for k, v in bench.results.items()}, indent=1))
        serving.stop()
    text = notes(bench, args.case, context)
    for r in rows:
        print(r.line())
    print(text)
    if not args.no_record:
        record("Serving: Ray Serve app against a bare process and KServe; batching; split against fused", rows, text)


if __name__ == "__main__":
    main()
