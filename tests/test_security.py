"""A locked-down Mosquitto from mosquitto/secure.conf: users, per-service ACL, TLS.

Certificates (mosquitto/gen-certs.sh) and the password file (mosquitto_passwd)
are made at test time in a temporary directory; nothing secret is committed.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.broker import CONFIGS, Mosquitto
from tests.helpers import Collector, eventually
from voicebus import (
    AuthenticationError,
    EventBus,
    EventType,
    NotAuthorizedError,
    TLSError,
)
from voicebus.transport.mqtt.transport import MqttTransport

PASSWORDS = {"admin": "admin-test-pw", "stt": "stt-test-pw", "llm": "llm-test-pw"}


@dataclass
class Secure:
    broker: Mosquitto
    ca: Path
    wrong_ca: Path
    certs: Path

    def url(self, user: str = "", mutual: bool = False) -> str:
        userinfo = f"{user}:{PASSWORDS[user]}" if user else ""
        return self.broker.url("mqtts", userinfo, 8884 if mutual else 8883)


def make_secure_files(workdir: Path, other: Path) -> None:
    """Certificates in workdir/certs (and a CA nobody trusts in `other`), users in
    workdir/passwd: what mosquitto/README.md tells an operator to do."""
    workdir.mkdir(parents=True, exist_ok=True)
    gen = str(CONFIGS / "gen-certs.sh")
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "CLIENTS": "stt", "DAYS": "2"}
    subprocess.run(["sh", gen, str(workdir / "certs")], check=True, env=env, capture_output=True)
    subprocess.run(["sh", gen, str(other)], check=True, env=env, capture_output=True)
    passwd = workdir / "passwd"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            ["mosquitto_passwd", *create, "-b", str(passwd), user, password],
            check=True,
            capture_output=True,
        )


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    root = tmp_path_factory.mktemp("secure")
    workdir = root / "broker"
    make_secure_files(workdir, root / "other-ca")
    broker = Mosquitto(workdir, "secure.conf")
    conf = broker.conf.read_text()
    assert f"password_file {workdir / 'passwd'}" in conf
    assert f"acl_file {CONFIGS / 'acl'}" in conf
    broker.start()
    yield Secure(
        broker, workdir / "certs" / "ca.crt", root / "other-ca" / "ca.crt", workdir / "certs"
    )
    broker.stop()


async def test_services_reach_their_topics_over_tls(secure: Secure) -> None:
    ca = str(secure.ca)
    got = Collector()
    llm = EventBus(
        secure.url(), client_id="llm-1", username="llm", password="llm-test-pw", ca_file=ca
    )
    async with llm, EventBus(secure.url("stt") + f"?ca={ca}", client_id="stt-1") as stt:
        llm.subscribe(EventType.SPEECH_DETECTED, got)
        await llm.ready()
        await stt.emit(EventType.SPEECH_DETECTED, {"text": "lights on"})
        (event,) = await got.wait(1)
        assert event.data["text"] == "lights on"
        assert event.source == "stt-1"


async def test_wrong_password_is_an_authentication_error_at_start(secure: Secure) -> None:
    bus = EventBus(secure.url(), username="stt", password="wrong", ca_file=str(secure.ca))
    started = time.perf_counter()
    with pytest.raises(AuthenticationError, match="refused the connection"):
        await bus.start()
    assert time.perf_counter() - started < 3
    assert not bus.is_running
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("voicebus-mqtt")]


async def test_unknown_ca_is_a_tls_error_naming_the_cause(secure: Secure) -> None:
    bus = EventBus(secure.url("stt"), ca_file=str(secure.wrong_ca))
    with pytest.raises(TLSError, match="certificate verify failed"):
        await bus.start()
    missing = EventBus(secure.url("stt"), ca_file=str(secure.certs / "nope.crt"))
    with pytest.raises(TLSError, match="cannot load TLS files"):
        await missing.start()


async def test_acl_denied_publish_is_not_authorized(secure: Secure) -> None:
    async with EventBus(secure.url("stt"), client_id="stt-2", ca_file=str(secure.ca)) as bus:
        with pytest.raises(NotAuthorizedError, match=r"not authorized.*ACL"):
            await bus.emit(EventType.TTS_STARTED, {"text": "stt may not speak"})
        await bus.emit(EventType.SPEECH_DETECTED, {"text": "but it may transcribe"})


async def test_mutual_tls_listener_requires_a_client_certificate(secure: Secure) -> None:
    url = secure.url("stt", mutual=True)
    ca = str(secure.ca)
    with pytest.raises(TLSError):
        await EventBus(url, client_id="stt-3", ca_file=ca).start()
    async with EventBus(
        url,
        client_id="stt-3",
        ca_file=ca,
        cert_file=str(secure.certs / "stt.crt"),
        key_file=str(secure.certs / "stt.key"),
    ) as bus:
        await bus.emit(EventType.SPEECH_DETECTED, {"text": "with a certificate"})


async def test_acl_denied_publish_from_the_outbox_becomes_a_dead_letter(secure: Secure) -> None:
    """Emitted during an outage, refused after the reconnect: nobody awaits it any
    more, so the refusal is a dead letter (never a silent success)."""
    async with EventBus(
        secure.url("stt"), client_id="stt-4", ca_file=str(secure.ca), reconnect_delay=0.02
    ) as bus:
        transport = bus.transport
        assert isinstance(transport, MqttTransport)
        await asyncio.to_thread(secure.broker.stop)
        try:
            await eventually(lambda: not transport.connected)
            await bus.emit(EventType.TTS_STARTED, {"text": "queued, then refused"})
        finally:
            await asyncio.to_thread(secure.broker.start)
        await eventually(bus.get_dead_letter_queue)
        (letter,) = bus.get_dead_letter_queue()
        assert letter["reason"] == "publish_refused"
        assert letter["topic"] == "voicebus/tts/sayStarted"
        assert "not authorized" in letter["error"]
