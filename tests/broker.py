"""Start Mosquitto processes for tests, from the configs in ``mosquitto/``.

Each broker gets free loopback ports, its own data directory and log, and can
be stopped (SIGTERM), killed (SIGKILL) and restarted on the same ports.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "mosquitto"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

_PATH_KEYS = {
    "password_file",
    "acl_file",
    "cafile",
    "certfile",
    "keyfile",
    "capath",
    "crlfile",
}
_DROP_KEYS = {"persistence_location", "log_dest", "user", "pid_file"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """A mosquitto process made from ``mosquitto/<config>`` with fresh ports."""

    def __init__(self, workdir: Path, config: str = "mosquitto.conf", extra: str = "") -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports: dict[int, int] = {}
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(self._render((CONFIGS / config).read_text(), extra))
        self.proc: subprocess.Popen[bytes] | None = None

    def _render(self, text: str, extra: str) -> str:
        out = []
        for line in (text + "\n" + extra).splitlines():
            stripped = line.strip()
            key = stripped.split(" ", 1)[0] if stripped and not stripped.startswith("#") else ""
            if key in _DROP_KEYS:
                continue
            if key == "listener":
                parts = stripped.split()
                original = int(parts[1])
                port = self.ports.setdefault(original, free_port())
                line = f"listener {port} 127.0.0.1"
            elif key in _PATH_KEYS:
                # Relative paths: a file made for this broker (password file, test
                # certificates) in its workdir, else the one shipped in mosquitto/.
                value = stripped.split(" ", 1)[1].strip()
                if not os.path.isabs(value):
                    mine = self.workdir / value
                    line = f"{key} {mine if mine.exists() else CONFIGS / value}"
            out.append(line)
        out += [
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
        ]
        if os.geteuid() == 0:
            out.append("user root")
        return "\n".join(out) + "\n"

    @property
    def port(self) -> int:
        """The port of the first listener."""
        return next(iter(self.ports.values()))

    def url(
        self, scheme: str = "mqtt", userinfo: str = "", original_port: int | None = None
    ) -> str:
        port = self.ports[original_port] if original_port else self.port
        at = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{at}127.0.0.1:{port}"

    def start(self, timeout: float = 10.0) -> Mosquitto:
        with self.log.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log, cwd=self.workdir
            )
        deadline = time.monotonic() + timeout
        pending = set(self.ports.values())
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            for port in list(pending):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        pending.discard(port)
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)  # the poll interval of this deadline loop (sync code)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def config_value(config: str, key: str) -> str | None:
    """A value from a shipped config (for tests that check the shipped settings)."""
    match = re.search(rf"^\s*{re.escape(key)}\s+(.+)$", (CONFIGS / config).read_text(), re.M)
    return match.group(1).strip() if match else None
