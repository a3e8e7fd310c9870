"""A load client for the serving benchmarks: fixed concurrency, a warm-up, then N timed requests.

It runs as its own process (``benchmarks/serving.py`` starts one per measurement), so the
server under test shares the machine with it but not its interpreter:

    python benchmarks/load_client.py --url http://127.0.0.1:8000/v1/rank \\
        --bodies /tmp/rank-bodies.jsonl --concurrency 16 --requests 2000 --warmup 200

``--bodies``: one request body per line (JSON), sent in turn (request i gets line i mod lines).
C coroutines (asyncio + aiohttp, keep-alive connections, at most C open) each send a request,
read the whole answer and send the next. The first ``--warmup`` requests are not measured;
then ``--requests`` are, and the client prints one JSON object: latency percentiles (ms, from
sending the request to having read the whole body), throughput (requests/s over the measured
phase), errors (any non-2xx answer or a failed connection counts: by status, with the first
error body) and the client's own CPU seconds.

``--steps 1:40,2:40,8:40``: a load ramp instead (``benchmarks/autoscaling_ramp.py``): after the warm-up,
C closed-loop clients for S seconds, step after step, and one JSON object with each step's summary and a
timeline of every wall-clock second (requests completed in it, their latencies, the step's concurrency).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter

import aiohttp
import numpy as np


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _phase(session: aiohttp.ClientSession, url: str, bodies: list[bytes], headers: dict, concurrency: int,
                 total: int, start_index: int, timeout_s: float) -> tuple[list[float], Counter, str | None, float]:
    """``total`` requests by ``concurrency`` workers; (latencies ms of the 2xx ones, statuses, first error, wall s)."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    first_error: list[str] = []
    next_index = [0]
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def worker() -> None:
        while next_index[0] < total:
            i = next_index[0]
            next_index[0] += 1
            body = bodies[(start_index + i) % len(bodies)]
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers, timeout=timeout) as response:
                    payload = await response.read()
                    status = response.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                status, payload = -1, f"{type(e).__name__}: {e}".encode()
            elapsed = (time.perf_counter() - started) * 1000.0
            statuses[status] += 1
            if 200 <= status < 300:
                latencies.append(elapsed)
            elif not first_error:
                first_error.append(f"{status}: {payload[:300].decode(errors='replace')}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses, first_error[0] if first_error else None, time.perf_counter() - started


async def run(url: str, bodies: list[bytes], concurrency: int, requests: int, warmup: int, timeout_s: float) -> dict:
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        _, warm_statuses, warm_error, _ = await _phase(session, url, bodies, headers, concurrency, warmup, 0, timeout_s)
        cpu_before = _cpu_seconds()
        latencies, statuses, error, wall = await _phase(session, url, bodies, headers, concurrency, requests, warmup, timeout_s)
        cpu = _cpu_seconds() - cpu_before
    errors = sum(n for s, n in statuses.items() if not 200 <= s < 300)
    lat = np.asarray(latencies) if latencies else np.asarray([float("nan")])
    return {
        "url": url, "concurrency": concurrency, "requests": requests, "warmup": warmup,
        "ok": len(latencies), "errors": errors, "statuses": {str(s): n for s, n in sorted(statuses.items())},
        "first_error": error, "warmup_errors": sum(n for s, n in warm_statuses.items() if not 200 <= s < 300),
        "warmup_first_error": warm_error,
        "p50_ms": float(np.percentile(lat, 50)), "p90_ms": float(np.percentile(lat, 90)),
        "p99_ms": float(np.percentile(lat, 99)), "mean_ms": float(lat.mean()), "max_ms": float(lat.max()),
        "wall_s": wall, "throughput_rps": requests / wall if wall else float("nan"), "client_cpu_s": cpu,
    }


def _summary(latencies: list[float], errors: int, wall: float) -> dict:
    lat = np.asarray(latencies) if latencies else np.asarray([float("nan")])
    return {"ok": len(latencies), "errors": errors, "wall_s": wall, "qps": len(latencies) / wall if wall else float("nan"),
            "mean_ms": float(lat.mean()), "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


async def ramp(url: str, bodies: list[bytes], steps: list[tuple[int, float]], warmup: int, timeout_s: float) -> dict:
    """``steps`` of (concurrency, seconds), closed loop; per step and per wall-clock second."""
    headers = {"content-type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    done: list[tuple[float, float, bool, int]] = []  # (wall time at the end, latency ms, ok, step)
    connector = aiohttp.TCPConnector(limit=max(c for c, _ in steps), force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        await _phase(session, url, bodies, headers, steps[0][0], warmup, 0, timeout_s)
        sent = [warmup]
        summaries = []
        for index, (concurrency, seconds) in enumerate(steps):
            deadline = time.monotonic() + seconds

            async def worker(deadline: float = deadline, index: int = index) -> None:
                while time.monotonic() < deadline:
                    body = bodies[sent[0] % len(bodies)]
                    sent[0] += 1
                    started = time.perf_counter()
                    try:
                        async with session.post(url, data=body, headers=headers, timeout=timeout) as response:
                            await response.read()
                            ok = 200 <= response.status < 300
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        ok = False
                    done.append((time.time(), (time.perf_counter() - started) * 1000.0, ok, index))

            began, first = time.time(), len(done)
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            mine = done[first:]
            summaries.append({"step": index, "concurrency": concurrency, "start": began, "end": time.time(),
                              **_summary([d[1] for d in mine if d[2]], sum(1 for d in mine if not d[2]), time.time() - began)})
    seconds: dict[int, list] = {}
    for d in done:
        seconds.setdefault(int(d[0]), []).append(d)
    timeline = [{"t": t, "step": rows[-1][3], "concurrency": steps[rows[-1][3]][0],
                 **_summary([d[1] for d in rows if d[2]], sum(1 for d in rows if not d[2]), 1.0)}
                for t, rows in sorted(seconds.items())]
    return {"url": url, "warmup": warmup, "steps": summaries, "timeline": timeline,
            "errors": sum(s["errors"] for s in summaries)}


def parse_steps(text: str) -> list[tuple[int, float]]:
    """``"1:40,2:40"`` -> ``[(1, 40.0), (2, 40.0)]``: concurrency and seconds of each step."""
    steps = [(int(c), float(s)) for c, s in (part.split(":") for part in text.split(","))]
    if not steps or any(c < 1 or s <= 0 for c, s in steps):
        raise ValueError(f"--steps {text!r}: give CONCURRENCY:SECONDS,..., each >= 1 client for > 0 s")
    return steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", required=True, help="a file with one JSON request body per line")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per request")
    parser.add_argument("--steps", help="a ramp: CONCURRENCY:SECONDS,... (then --concurrency and --requests are unused)")
    args = parser.parse_args(argv)
    with open(args.bodies, "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    if not bodies:
        sys.exit(f"{args.bodies} has no request bodies")
    try:
        from uvloop import run as run_loop  # Ray installs uvloop; the same loop for every server measured
    except ImportError:
        run_loop = asyncio.run
    if args.steps:
        result = run_loop(ramp(args.url, bodies, parse_steps(args.steps), args.warmup, args.timeout_s))
    else:
        result = run_loop(run(args.url, bodies, args.concurrency, args.requests, args.warmup, args.timeout_s))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
