import os
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MLSYS = str(Path(sys.executable).parent / "mlsys")

# Keep Ray's and DeepSpeed's caches where `make setup` put them.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
os.environ.setdefault("DS_ACCELERATOR", "cpu")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, what: str, timeout: float = 60.0, interval: float = 0.2):
    """``predicate()``'s first truthy value, polled every ``interval`` s; an AssertionError naming ``what`` after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the in-process integration tests (as `mlsys` starts it)."""
    import ray

    from mlsys.cluster import connect
    from mlsys.config import ClusterConfig

    connect(ClusterConfig(address="local", num_cpus=4))
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on a free port for the session (see tests/redis_server.py)."""
    from tests.redis_server import RedisServer

    with RedisServer.start() as server:
        yield server
