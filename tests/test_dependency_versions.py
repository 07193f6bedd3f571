"""The MQTT transport runs only on the paho-mqtt and aiomqtt releases its patches
(`voicebus/transport/mqtt/paho_internals.py`) were verified with, and says so."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from voicebus import EventBus, VoicebusError
from voicebus.errors import UnsupportedDependencyError
from voicebus.transport.mqtt import paho_internals
from voicebus.transport.mqtt.paho_internals import VERIFIED, check_versions

ROOT = Path(__file__).resolve().parent.parent


def _installed(**versions: str | None) -> dict[str, str | None]:
    """Fake installed versions: the real ones, except those given."""
    real = {name: paho_internals.installed_version(name) for name in VERIFIED}
    real.update({name.replace("_", "-"): v for name, v in versions.items()})
    return real


def _pretend(monkeypatch: pytest.MonkeyPatch, **versions: str | None) -> None:
    fake = _installed(**versions)
    monkeypatch.setattr(paho_internals, "installed_version", fake.__getitem__)


def test_the_verified_range_is_the_declared_dependency_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {dep.split(">=")[0]: dep for dep in project["dependencies"]}
    for name, (lowest, first_refused) in VERIFIED.items():
        low = ".".join(map(str, lowest))
        high = ".".join(map(str, first_refused))
        assert declared[name] == f"{name}>={low},<{high}"


def test_the_installed_versions_are_supported() -> None:
    check_versions()


@pytest.mark.parametrize(
    ("paho", "aiomqtt", "ok"),
    [
        ("2.1.0", "2.5.0", True),
        ("2.2.9", "2.5.1", True),
        ("2.2.0", "2.5.2.post1", True),
        ("2.3.0", "2.5.1", False),
        ("2.3.0rc1", "2.5.1", False),
        ("2.0.0", "2.5.1", False),
        ("1.6.1", "2.5.1", False),
        ("2.2.0", "2.6.0", False),
        ("2.2.0", "3.0.0a1", False),
        ("2.2.0", "2.4.0", False),
        ("2.2.0", None, False),
        ("dev", "2.5.1", False),
    ],
)
def test_versions_outside_the_range_are_refused(
    monkeypatch: pytest.MonkeyPatch, paho: str, aiomqtt: str | None, ok: bool
) -> None:
    _pretend(monkeypatch, paho_mqtt=paho, aiomqtt=aiomqtt)
    if ok:
        check_versions()
        return
    with pytest.raises(UnsupportedDependencyError) as caught:
        check_versions()
    assert isinstance(caught.value, VoicebusError)


async def test_a_bus_refuses_to_connect_on_an_unsupported_paho_naming_both_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked when connecting, before any connection attempt (port 1: nothing
    listens there, so reaching the network would raise another error)."""
    _pretend(monkeypatch, paho_mqtt="2.3.0")
    bus = EventBus("mqtt://127.0.0.1:1", reconnect=False)
    with pytest.raises(UnsupportedDependencyError) as caught:
        await bus.start()
    message = str(caught.value)
    assert "paho-mqtt 2.3.0" in message  # installed
    assert "paho-mqtt>=2.1,<2.3" in message  # supported
    assert "aiomqtt" not in message  # only what is wrong
    assert not bus.is_running


async def test_a_missing_aiomqtt_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend(monkeypatch, aiomqtt=None)
    with pytest.raises(UnsupportedDependencyError, match=r"aiomqtt \(not installed\)"):
        await EventBus("mqtt://127.0.0.1:1", reconnect=False).start()
