"""A real Home Assistant (2024.3.3, the last release for Python 3.11) started by the
tests, headless, on a free loopback port, as an MQTT client of a test Mosquitto.

Its venv is separate (it pins paho-mqtt 1.6): ``$VOICEBUS_HA_PYTHON``, else
``.venv-ha/bin/python`` in the repository, built by ``.ci/run`` from
``integrations/homeassistant/requirements-ha.txt``. The configuration directory
is written before the start: the ``mqtt`` config entry (broker, port, protocol),
onboarding done, and an owner with a long-lived access token for the REST API
(``.storage/auth``), so no UI step is needed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .broker import free_port

ROOT = Path(__file__).resolve().parent.parent
HA_VERSION = "2024.3.3"
REQUIREMENTS = ROOT / "integrations" / "homeassistant" / "requirements-ha.txt"
SHIPPED_YAML = ROOT / "integrations" / "homeassistant"


def ha_python() -> Path:
    """The Python of Home Assistant's venv (it may not exist: see `ha_problem`)."""
    given = os.environ.get("VOICEBUS_HA_PYTHON")
    return Path(given) if given else ROOT / ".venv-ha" / "bin" / "python"


def ha_problem() -> str | None:
    """Why Home Assistant cannot be started here (with the command that fixes it), or
    None when `ha_python` runs Home Assistant `HA_VERSION`."""
    python = ha_python()
    fix = (
        f"build it: python3 -m venv .venv-ha && .venv-ha/bin/pip install -r "
        f"{REQUIREMENTS.relative_to(ROOT)} (or set VOICEBUS_HA_PYTHON)"
    )
    if not python.exists():
        return f"no Home Assistant venv at {python}; {fix}"
    found = subprocess.run(
        [str(python), "-c", "from homeassistant.const import __version__; print(__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    version = found.stdout.strip()
    if found.returncode != 0 or version != HA_VERSION:
        return f"{python} has Home Assistant {version or 'none'}, not {HA_VERSION}; {fix}"
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(issuer: str, key: str) -> str:
    """An HS256 JWT as Home Assistant issues for a long-lived token (iss: its id)."""
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64(json.dumps({"iss": issuer, "iat": now, "exp": now + 86400}).encode())
    signature = hmac.new(key.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64(signature)}"


def _store(key: str, data: dict[str, Any], version: int = 1, minor: int = 1) -> str:
    return json.dumps({"version": version, "minor_version": minor, "key": key, "data": data})


class HomeAssistant:
    """One Home Assistant process with its own configuration directory."""

    def __init__(
        self, workdir: Path, mqtt_port: int, protocol: str = "3.1.1", python: Path | None = None
    ) -> None:
        self.workdir = workdir
        self.config = workdir / "config"
        self.log = workdir / "home-assistant.out"
        self.port = free_port()
        self.mqtt_port = mqtt_port
        self.python = python or ha_python()
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = self._write_config(protocol)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self, protocol: str) -> str:
        storage = self.config / ".storage"
        storage.mkdir(parents=True, exist_ok=True)
        for name in ("scripts.yaml", "automations.yaml"):
            shutil.copy(SHIPPED_YAML / name, self.config / name)
        (self.config / "configuration.yaml").write_text(
            f"""homeassistant:
  name: voicebus test
  latitude: 52.5
  longitude: 13.4
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: DE
http:
  server_host: 127.0.0.1
  server_port: {self.port}
api:
script: !include scripts.yaml
automation: !include automations.yaml
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
"""
        )
        (storage / "core.config_entries").write_text(
            _store(
                "core.config_entries",
                {
                    "entries": [
                        {
                            "entry_id": secrets.token_hex(16),
                            "version": 1,
                            "minor_version": 1,
                            "domain": "mqtt",
                            "title": "127.0.0.1",
                            "data": {
                                "broker": "127.0.0.1",
                                "port": self.mqtt_port,
                                "protocol": protocol,
                                "discovery": True,
                                "discovery_prefix": "homeassistant",
                            },
                            "options": {},
                            "pref_disable_new_entities": False,
                            "pref_disable_polling": False,
                            "source": "user",
                            "unique_id": None,
                            "disabled_by": None,
                        }
                    ]
                },
            )
        )
        (storage / "onboarding").write_text(
            _store("onboarding", {"done": ["user", "core_config", "analytics", "integration"]}, 4)
        )
        user, token_id, jwt_key = (
            secrets.token_hex(16),
            secrets.token_hex(16),
            secrets.token_hex(64),
        )
        created = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        (storage / "auth").write_text(
            _store(
                "auth",
                {
                    "users": [
                        {
                            "id": user,
                            "group_ids": ["system-admin"],
                            "is_owner": True,
                            "is_active": True,
                            "name": "voicebus test",
                            "system_generated": False,
                            "local_only": False,
                        }
                    ],
                    "groups": [{"id": "system-admin", "name": "Administrators"}],
                    "credentials": [],
                    "refresh_tokens": [
                        {
                            "id": token_id,
                            "user_id": user,
                            "client_id": None,
                            "client_name": "voicebus tests",
                            "client_icon": None,
                            "token_type": "long_lived_access_token",
                            "created_at": created,
                            "access_token_expiration": 86400.0,
                            "token": secrets.token_hex(64),
                            "jwt_key": jwt_key,
                            "last_used_at": None,
                            "last_used_ip": None,
                            "expire_at": None,
                            "credential_id": None,
                            "version": HA_VERSION,
                        }
                    ],
                },
            )
        )
        return _jwt(token_id, jwt_key)

    def start(self, timeout: float = 60.0) -> HomeAssistant:
        """Start Home Assistant; return once its REST API says it is RUNNING."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.python),
                    "-m",
                    "homeassistant",
                    "--config",
                    str(self.config),
                    "--skip-pip",
                ],
                stdout=log,
                stderr=log,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Home Assistant exited: {self.log_text()[-3000:]}")
            try:
                if self.get("/api/config").get("state") == "RUNNING":
                    return self
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Home Assistant not running: {self.log_text()[-3000:]}")
            time.sleep(0.1)  # the poll interval of this deadline loop (sync code)

    def stop(self, timeout: float = 30.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # --- REST API ----------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        return (
            json.loads(text) if response.headers.get_content_type() == "application/json" else text
        )

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self._call("POST", path, body or {})

    def state(self, entity_id: str) -> dict[str, Any] | None:
        """The entity's state object, or None when Home Assistant has no such entity."""
        try:
            found: dict[str, Any] = self.get(f"/api/states/{entity_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return found

    def template(self, text: str) -> str:
        """`text` rendered by Home Assistant (``/api/template``)."""
        return str(self.post("/api/template", {"template": text}))
