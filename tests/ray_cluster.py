"""A real multi-node Ray cluster on this host, built with ``ray start`` as a user builds one.

A head and worker nodes, each its own ``ray start --block`` in its own session (process group),
on its own loopback address (``127.0.0.N``: Ray Train ranks nodes by IP, so nodes sharing one
address look like one machine; the head reports the host's address), with its own logical CPUs, its own ports and a custom resource
naming it (``node_<name>``; the workers also carry ``worker``). Token auth is on, with a token of
the cluster's own (``RAY_AUTH_TOKEN``), not ``~/.ray/auth_token``.

A node is killed the way a machine is lost: SIGKILL to its whole process group (the ``ray start``
process, its raylet and every worker the raylet started). The cluster is torn down the same way,
by the process groups it started: never ``ray stop``, which stops every Ray process on the host.

    with LocalCluster.start(workers={"a": 2, "b": 3}) as cluster:
        subprocess.run(["ray", "job", "submit", f"--address={cluster.dashboard}", ...], env=cluster.env)
        cluster.kill("a")          # the node is gone, mid-whatever
        cluster.add_worker("a")    # and comes back (a new raylet, same name and address)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.conftest import free_port as _free_port

BIN = Path(sys.executable).parent
# Ray workers' ports, per node, away from the default range (10002-19999) an embedded Ray uses
# and from the kernel's ephemeral ports (32768+) that free ports come from.
WORKER_PORTS = 20000
WORKER_PORTS_PER_NODE = 300


@dataclass
class Node:
    name: str
    ip: str
    num_cpus: float
    resources: dict
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL the node's process group: the machine is gone, nothing shuts down cleanly."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)


@dataclass
class LocalCluster:
    temp_dir: str
    token: str
    gcs_port: int
    dashboard_port: int
    object_store_bytes: int
    nodes: dict[str, Node] = field(default_factory=dict)
    _slots: dict[str, int] = field(default_factory=dict)  # node name -> its address's last byte / port block

    @property
    def address(self) -> str:
        """The GCS address workers and ``ray.init(address=...)`` join."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        """The head's dashboard: the Jobs API (``ray job submit --address``), the State API, ``serve deploy``."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment of a Ray CLI call (and of every node): token auth on, with this cluster's token."""
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        return {**env, "PATH": f"{BIN}:{env.get('PATH', '')}", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @classmethod
    def start(cls, workers: dict[str, float], head_cpus: float = 1, object_store_mb: int = 400, timeout_s: float = 180) -> "LocalCluster":
        """The head on 127.0.0.1 and one worker per ``workers`` entry (name -> logical CPUs) on 127.0.0.2, .3, ..."""
        # Short: Ray's Unix sockets live under it and paths are capped at 107 bytes.
        cluster = cls(tempfile.mkdtemp(prefix="ray-", dir="/tmp"), secrets.token_hex(32), _free_port(), _free_port(), object_store_mb * 2**20)
        try:
            cluster._launch("head", head_cpus, head=True)
            cluster._wait_for_dashboard(timeout_s)
            cluster.wait_for_nodes(1, timeout_s)
            # The head reports the host's address whatever --node-ip-address says; the workers keep theirs.
            cluster.nodes["head"].ip = cluster.alive_nodes()[0]["node_ip"]
            for name, cpus in workers.items():
                cluster.add_worker(name, cpus, timeout_s)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _launch(self, name: str, num_cpus: float, head: bool = False) -> Node:
        slot = self._slots.setdefault(name, len(self._slots))
        ip = f"127.0.0.{slot + 1}"
        resources = {f"node_{name}": 100} | ({} if head else {"worker": 100})
        low = WORKER_PORTS + slot * WORKER_PORTS_PER_NODE
        started = int(time.time() * 1000)
        args = [
            str(BIN / "ray"), "start", "--block", f"--node-ip-address={ip}", f"--num-cpus={num_cpus}",
            f"--resources={json.dumps(resources)}", f"--object-store-memory={self.object_store_bytes}",
            # every port of its own: nodes starting side by side on one host otherwise pick the same one
            f"--node-manager-port={_free_port()}", f"--object-manager-port={_free_port()}",
            f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
            f"--min-worker-port={low}", f"--max-worker-port={low + WORKER_PORTS_PER_NODE - 1}", "--disable-usage-stats",
        ]
        if head:
            args += ["--head", f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1",
                     f"--ray-client-server-port={_free_port()}", f"--temp-dir={self.temp_dir}"]
        else:
            # A session folder of its own, fresh at each start, as on a machine of its own: nodes sharing
            # one had every node's log monitor forward every node's worker output (lines twice, the
            # wrong node's address on them), and a restarted node would forward its dead raylet's logs again.
            args += [f"--address={self.address}", f"--temp-dir={self.temp_dir}/{name}{started % 10**6}"]
        log = Path(self.temp_dir) / f"ray-start-{name}-{started}.log"
        with log.open("w") as out:
            process = subprocess.Popen(args, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        node = self.nodes[name] = Node(name, ip, num_cpus, resources, process, log)
        return node

    def add_worker(self, name: str, num_cpus: float = 2, timeout_s: float = 180) -> Node:
        """Start (or restart, after :meth:`kill`) worker ``name``; returns once the head counts it alive."""
        known = {n["node_id"] for n in self.alive_nodes()}  # a killed node stays ALIVE until the head notices
        node = self._launch(name, num_cpus)
        self.wait_for(lambda: any(n["node_ip"] == node.ip and n["node_id"] not in known for n in self.alive_nodes()),
                      f"node {name} to join", timeout_s, node)
        return node

    def kill(self, name: str) -> Node:
        """Lose node ``name``: SIGKILL of its raylet and workers (its process group)."""
        node = self.nodes.pop(name)
        node.kill()
        return node

    def alive_nodes(self) -> list[dict]:
        """The State API's nodes that are ALIVE (``node_ip``, ``node_id``, ``resources_total``, ...)."""
        r = requests.get(f"{self.dashboard}/api/v0/nodes", params={"limit": 100, "detail": "true"}, headers=self.headers, timeout=10)
        r.raise_for_status()
        return [n for n in r.json()["data"]["result"]["result"] if n["state"] == "ALIVE"]

    def node_of(self, node_id: str) -> str:
        """The name of the node with this Ray node id (``head``, ``a``, ...)."""
        for n in self.alive_nodes():
            if n["node_id"] == node_id:
                return next(k[len("node_"):] for k in n["resources_total"] if k.startswith("node_"))
        raise KeyError(f"no alive node {node_id}")

    def wait_for_nodes(self, count: int, timeout_s: float) -> None:
        self.wait_for(lambda: len(self.alive_nodes()) >= count, f"{count} alive nodes", timeout_s)

    def wait_for(self, predicate, what: str, timeout_s: float, node: Node | None = None) -> None:
        """Poll ``predicate()`` (State API calls) until true; a RuntimeError naming ``what`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if node is not None and node.process.poll() is not None:
                raise RuntimeError(f"ray start of node {node.name} exited with {node.process.returncode}:\n{node.log.read_text()[-3000:]}")
            try:
                if predicate():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")

    def _wait_for_dashboard(self, timeout_s: float) -> None:
        head = self.nodes["head"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if head.process.poll() is not None:
                raise RuntimeError(f"ray start --head exited with {head.process.returncode}:\n{head.log.read_text()[-3000:]}")
            try:
                requests.get(f"{self.dashboard}/api/version", headers=self.headers, timeout=2).raise_for_status()
                return
            except requests.RequestException:
                time.sleep(0.5)
        raise RuntimeError(f"the head's dashboard did not answer in {timeout_s:g} s")

    def stop(self) -> None:
        """Kill every node this cluster started (workers first), by process group; remove its folder."""
        for name in [n for n in self.nodes if n != "head"] + [n for n in self.nodes if n == "head"]:
            self.nodes.pop(name).kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
