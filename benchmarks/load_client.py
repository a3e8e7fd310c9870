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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", required=True, help="a file with one JSON request body per line")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per request")
    args = parser.parse_args(argv)
    with open(args.bodies, "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    if not bodies:
        sys.exit(f"{args.bodies} has no request bodies")
    try:
        from uvloop import run as run_loop  # Ray installs uvloop; the same loop for every server measured
    except ImportError:
        run_loop = asyncio.run
    result = run_loop(run(args.url, bodies, args.concurrency, args.requests, args.warmup, args.timeout_s))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
