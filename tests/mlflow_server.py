"""A real ``mlflow server`` (the tracking server and registry a cluster's nodes share), for tests.

    with MlflowServer.start(home) as server:
        env = {"MLFLOW_TRACKING_URI": server.uri}
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.conftest import free_port as _free_port


@dataclass
class MlflowServer:
    uri: str
    process: subprocess.Popen
    workdir: str

    @classmethod
    def start(cls, root: Path, timeout_s: float = 120.0) -> "MlflowServer":
        """SQLite behind a server on 127.0.0.1 and a free port; artifacts stay where the client puts them
        (mlsys names a shared home's folder per experiment)."""
        root.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        args = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'tracking.db'}",
                "--default-artifact-root", str(root / "artifacts"), "--no-serve-artifacts"]
        log = (root / "server.log").open("w")
        process = subprocess.Popen(args, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        server = cls(f"http://127.0.0.1:{port}", process, str(root))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{(root / 'server.log').read_text()[-3000:]}")
            try:
                if requests.get(f"{server.uri}/health", timeout=2).ok:
                    return server
            except requests.RequestException:
                pass
            time.sleep(0.5)
        server.stop()
        raise RuntimeError(f"mlflow server did not answer on port {port} in {timeout_s:g} s")

    def stop(self) -> None:
        """Stop the server; its folder (the tracking DB) stays for the test to read."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "MlflowServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
