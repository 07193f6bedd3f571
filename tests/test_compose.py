"""docker-compose.yml and Dockerfile, checked without a Docker engine: the services,
ports and mounts refer to things that exist, and the broker config the container
builds from mosquitto/mosquitto.conf is what the other services need."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from typer.testing import CliRunner

from tests.broker import CONFIGS, config_value
from voicebus.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    svc = compose["services"][name]
    assert isinstance(svc, dict)
    return svc


def unescape(value: str) -> str:
    """Compose interpolation: ``$$`` is a literal ``$``."""
    return value.replace("$$", "$")


def mounts(svc: dict[str, Any]) -> list[tuple[str, str, str]]:
    result = []
    for volume in svc.get("volumes", []):
        source, target, *mode = volume.split(":")
        result.append((source, target, mode[0] if mode else "rw"))
    return result


def container_config(compose: dict[str, Any]) -> str:
    """Apply the mosquitto service's sed expressions to the shipped config."""
    command = service(compose, "mosquitto")["command"]
    assert command[:2] == ["sh", "-c"]
    words = shlex.split(unescape(command[2]))
    assert words[0] == "sed"
    text = (CONFIGS / "mosquitto.conf").read_text()
    for flag, expression in itertools.pairwise(words):
        if flag != "-e":
            continue
        delimiter = expression[1]
        _, pattern, replacement, _ = expression.split(delimiter)
        text, count = re.subn(
            pattern,
            replacement,  # these BREs read the same as Python regexes
            text,
            flags=re.M,
        )
        assert count == 1, f"{expression} matches no line of mosquitto/mosquitto.conf"
    return text


def test_the_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"mosquitto", "demo", "nodered"}
    assert service(compose, "mosquitto")["image"].startswith("eclipse-mosquitto:2")
    assert service(compose, "nodered")["image"].startswith("nodered/node-red:")
    assert service(compose, "nodered")["profiles"] == ["nodered"]
    assert "profiles" not in service(compose, "demo")
    for name, svc in compose["services"].items():
        for dependency in svc.get("depends_on", {}):
            assert dependency in compose["services"], (name, dependency)


def test_mounts_refer_to_files_that_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, svc in compose["services"].items():
        for source, target, _ in mounts(svc):
            assert target.startswith("/"), (name, target)
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared


def test_mosquitto_uses_our_config_and_a_persistence_volume(compose: dict[str, Any]) -> None:
    svc = service(compose, "mosquitto")
    by_target = {target: (source, mode) for source, target, mode in mounts(svc)}
    assert by_target["/etc/voicebus/mosquitto"] == ("./mosquitto", "ro")
    assert by_target["/mosquitto/data"][0] == "mosquitto-data"
    assert "/etc/voicebus/mosquitto/mosquitto.conf" in svc["command"][2]
    config = container_config(compose)
    assert re.search(r"^listener 1883$", config, re.M)  # every interface of the container
    assert re.search(r"^persistence true$", config, re.M)
    assert re.search(r"^persistence_location /mosquitto/data/$", config, re.M)
    shipped = (CONFIGS / "mosquitto.conf").read_text().splitlines()
    changed = set(shipped) - set(config.splitlines())
    assert {line.split()[0] for line in changed} == {"listener", "persistence_location"}


def test_ports(compose: dict[str, Any]) -> None:
    listener = config_value("mosquitto.conf", "listener")
    assert listener is not None
    broker_port = listener.split()[0]
    assert service(compose, "mosquitto")["ports"] == [f"127.0.0.1:{broker_port}:{broker_port}"]
    assert service(compose, "nodered")["ports"] == ["127.0.0.1:1880:1880"]
    url = urlsplit(service(compose, "demo")["environment"]["VOICEBUS_URL"])
    assert (url.scheme, url.hostname, str(url.port)) == ("mqtt", "mosquitto", broker_port)


def test_the_demo_waits_for_a_healthy_broker(compose: dict[str, Any]) -> None:
    assert service(compose, "demo")["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    test = [unescape(word) for word in service(compose, "mosquitto")["healthcheck"]["test"]]
    assert test[:2] == ["CMD", "mosquitto_sub"] and "$SYS/broker/version" in test


def test_the_demo_image_builds_from_files_that_exist(compose: dict[str, Any]) -> None:
    svc = service(compose, "demo")
    context = ROOT / svc["build"]
    dockerfile = (context / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (context / source).exists(), source
    assert 'ENTRYPOINT ["voicebus"]' in dockerfile
    assert "VOICEBUS_URL=mqtt://mosquitto:1883" in dockerfile


def test_the_demo_command_is_a_valid_invocation(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's command, run in-process on memory:// (no latency) instead of the broker."""
    monkeypatch.delenv("VOICEBUS_URL", raising=False)
    args = [*service(compose, "demo")["command"], "--url", "memory://", "--scale", "0", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert '"utterances"' in result.stdout
