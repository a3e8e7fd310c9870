"""A real ``redis-server`` on a free port, for tests (no fake Redis).

``make setup`` installs Debian's redis-server. Use the context manager, or
the ``redis_server`` fixture of tests/conftest.py::

    with RedisServer.start() as server:
        cfg = FeaturesConfig(name="feast", online="redis", redis_port=server.port)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process: subprocess.Popen, workdir: str) -> None:
    """Terminate a test server's process (kill it after 10 s) and remove its folder."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class RedisServer:
    host: str
    port: int
    process: subprocess.Popen
    workdir: str

    @classmethod
    def start(cls, timeout_s: float = 10.0) -> "RedisServer":
        """Start redis-server (no persistence) on 127.0.0.1 and a free port; wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run `make setup` (apt-get install redis-server)")
        port, workdir = _free_port(), tempfile.mkdtemp(prefix="mlsys-redis-")
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = cls("127.0.0.1", port, process, workdir)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode} on port {port}")
            if server.ping():
                return server
            time.sleep(0.05)
        server.stop()
        raise RuntimeError(f"redis-server did not answer on port {port} within {timeout_s}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop this server (only the process it started) and remove its folder."""
        stop_process(self.process, self.workdir)

    def __enter__(self) -> "RedisServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
