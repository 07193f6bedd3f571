"""A three-node NATS cluster with JetStream and the MQTT gateway on every node,
started by the tests on free loopback ports (nats-server 2.9, Debian package).

Each node gets its own store directory and log; a node can be killed. NATS's
MQTT gateway speaks MQTT 3.1.1 only.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from .broker import free_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsNode:
    def __init__(self, workdir: Path, name: str) -> None:
        self.workdir = workdir
        self.name = name
        self.client_port = free_port()
        self.cluster_port = free_port()
        self.mqtt_port = free_port()
        self.http_port = free_port()
        self.conf = workdir / f"{name}.conf"
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.mqtt_port}"

    def write_config(self, routes: list[int]) -> None:
        route_list = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
        self.conf.write_text(
            f"""server_name: {self.name}
listen: 127.0.0.1:{self.client_port}
http: 127.0.0.1:{self.http_port}
jetstream {{ store_dir: "{self.workdir / self.name}" }}
cluster {{
  name: voicebus
  listen: 127.0.0.1:{self.cluster_port}
  routes: [{route_list}]
}}
mqtt {{
  listen: 127.0.0.1:{self.mqtt_port}
  # R3: the MQTT sessions, messages and retained messages survive one node lost
  # (NATS picks R2 when it creates them before every route is up: no quorum then)
  stream_replicas: 3
}}
"""
        )

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [NATS_SERVER, "-c", str(self.conf)], stdout=log, stderr=log, cwd=self.workdir
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.mqtt_port)) == 0

    def healthy(self) -> bool:
        """JetStream is up and current on this node (``/healthz``): MQTT connects
        work (before, each waits out a 4 s JetStream request timeout)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1):
                return True
        except OSError:  # URLError and HTTPError (503 while JetStream is not current)
            return False


class NatsCluster:
    """Three nodes, each routed to the other two."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.nodes = [NatsNode(workdir, f"n{i}") for i in (1, 2, 3)]
        for node in self.nodes:
            node.write_config([n.cluster_port for n in self.nodes if n is not node])

    def start(self, timeout: float = 20.0) -> NatsCluster:
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + timeout
        while not all(node.listening() and node.healthy() for node in self.nodes):
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(f"nats-server exited: {node.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the NATS cluster did not listen for MQTT in time")
            time.sleep(0.05)  # the poll interval of this deadline loop (sync code)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def url(self, *nodes: int, protocol: str = "3.1.1") -> str:
        """An MQTT URL naming `nodes` (1-based) in that order."""
        hosts = ",".join(self.nodes[i - 1].address for i in nodes)
        return f"mqtt://{hosts}?protocol={protocol}"
