"""A real ``prometheus`` server (Debian's package, installed by ``make test``) scraping given targets, for tests.

    with PrometheusServer.start(["127.0.0.1:8080"]) as prom:
        prom.query('sum(ray_mlsys_requests_total)')
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.redis_server import _free_port, stop_process


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen
    workdir: str

    @classmethod
    def start(cls, targets: list[str], scrape_interval: str = "5s", timeout_s: float = 30.0,
              rule_files: tuple[str, ...] = ()) -> "PrometheusServer":
        """``rule_files``: Prometheus rule files (recording and alerting) it loads and evaluates."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed; run `make test` (apt-get install prometheus)")
        port, workdir = _free_port(), tempfile.mkdtemp(prefix="mlsys-prometheus-")
        config = Path(workdir) / "prometheus.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            # A scrape may take as long as its interval (Prometheus caps scrape_timeout there). With 1 s,
            # a CI run never saw a series in 90 s; a Ray node's metrics endpoint on a loaded 2-core
            # machine may well take longer than that to answer (wait_for's error shows the targets).
            "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                       "evaluation_interval": scrape_interval},
            "scrape_configs": [{"job_name": "ray", "static_configs": [{"targets": targets}]}],
            "rule_files": [str(Path(f).resolve()) for f in rule_files],
        }))
        args = [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir}/data",
                f"--web.listen-address=127.0.0.1:{port}"]
        log = open(Path(workdir) / "prometheus.log", "wb")
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        server = cls(f"http://127.0.0.1:{port}", process, workdir)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {process.returncode}: {server.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return server
            except OSError:
                time.sleep(0.2)
        server.stop()
        raise RuntimeError(f"prometheus was not ready on port {port} within {timeout_s}s")

    def log(self) -> str:
        return (Path(self.workdir) / "prometheus.log").read_text(errors="replace")

    def query(self, promql: str) -> list[dict]:
        """The instant vector of a PromQL query through the HTTP API (``/api/v1/query``)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}), timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, promql: str, timeout_s: float = 90.0) -> list[dict]:
        """Poll until the query returns a non-empty vector with a value above 0."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result and any(float(r["value"][1]) > 0 for r in result):
                return result
            time.sleep(1.0)
        raise AssertionError(f"prometheus never had {promql!r} within {timeout_s}s; its targets: {self.targets()}")

    def firing(self, alertname: str) -> list[dict]:
        """The alert's firing instances (the ``ALERTS`` series), their labels."""
        return [r["metric"] for r in self.query(f'ALERTS{{alertname="{alertname}", alertstate="firing"}}')]

    def targets(self) -> list[dict]:
        """Each scrape target's health, last error and last scrape duration (``/api/v1/targets``)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as r:
            active = json.loads(r.read())["data"]["activeTargets"]
        return [{k: t.get(k) for k in ("scrapeUrl", "health", "lastError", "lastScrapeDuration")} for t in active]

    def stop(self) -> None:
        stop_process(self.process, self.workdir)

    def __enter__(self) -> "PrometheusServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
