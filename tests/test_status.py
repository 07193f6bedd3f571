"""Retained voicebus/status/<client_id>: online on connect; offline on stop and as Last
Will for a named client, cleared (nothing left) for a generated client id."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import aiomqtt

from tests.broker import Mosquitto
from tests.helpers import eventually
from voicebus import EventBus
from voicebus.ops.status import get_statuses
from voicebus.transport.mqtt.transport import MqttTransport
from voicebus.wire.status import is_generated, status_topic

ROOT = Path(__file__).resolve().parent.parent


async def _watch(port: int, topic: str, seen: list[str], ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe(topic, qos=1)
        ready.set()
        async for message in c.messages:
            assert isinstance(message.payload, bytes)
            seen.append(message.payload.decode())


async def _until(seen: list[str], expected: list[str], timeout: float = 5.0) -> None:
    def reached() -> bool:
        assert seen == expected[: len(seen)], seen
        return seen == expected

    await eventually(reached, timeout)


async def test_online_will_on_link_loss_online_again_offline_on_stop(
    mosquitto: Mosquitto,
) -> None:
    client_id = f"tts-{uuid.uuid4().hex[:8]}"
    seen: list[str] = []
    ready = asyncio.Event()
    watcher = asyncio.create_task(_watch(mosquitto.port, status_topic(client_id), seen, ready))
    try:
        await ready.wait()
        bus = EventBus(mosquitto.url(), client_id=client_id, reconnect_delay=0.02)
        async with bus:
            await _until(seen, ["online"])
            assert (await get_statuses(bus))[client_id] == "online"
            transport = bus.transport
            assert isinstance(transport, MqttTransport) and transport._paho is not None
            # An internal: the link breaks under paho (no DISCONNECT), so the Will is sent.
            transport._paho.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
            await _until(seen, ["online", "offline", "online"])  # Last Will, then back
            # counted once re-subscribed (voicebus/cancelled): after "online" is announced
            await eventually(lambda: transport.reconnects == 1)
        await _until(seen, ["online", "offline", "online", "offline"])
        async with EventBus(mosquitto.url()) as other:
            assert (await get_statuses(other))[client_id] == "offline"
    finally:
        watcher.cancel()


async def test_status_can_be_turned_off(mosquitto: Mosquitto) -> None:
    client_id = f"quiet-{uuid.uuid4().hex[:8]}"
    async with EventBus(mosquitto.url(), client_id=client_id, status=False) as bus:
        assert client_id not in await get_statuses(bus)
    assert status_topic("kitchen/satellite+1") == "voicebus/status/kitchen_satellite_1"


async def test_a_generated_client_id_has_no_status_by_default(mosquitto: Mosquitto) -> None:
    seen: list[str] = []
    ready = asyncio.Event()
    bus = EventBus(mosquitto.url())
    topic = status_topic(bus.client_id)
    watcher = asyncio.create_task(_watch(mosquitto.port, topic, seen, ready))
    try:
        await ready.wait()
        async with bus, EventBus(mosquitto.url(), client_id=f"named-{bus.client_id}") as named:
            assert bus.client_id not in await get_statuses(named)
            assert (await get_statuses(named))[named.client_id] == "online"
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as probe:
            await probe.publish(topic, b"probe", qos=1)  # after all the bus ever sent
        await _until(seen, ["probe"])
    finally:
        watcher.cancel()


async def test_a_generated_client_id_with_status_leaves_none_after_stop_or_link_loss(
    mosquitto: Mosquitto,
) -> None:
    """status=True: online while it runs; its clean stop and its Last Will clear the
    status (an empty retained message) instead of leaving one more retained offline."""
    bus = EventBus(mosquitto.url(), reconnect_delay=0.02, status=True)
    assert is_generated(bus.client_id)
    seen: list[str] = []
    ready = asyncio.Event()
    watcher = asyncio.create_task(_watch(mosquitto.port, status_topic(bus.client_id), seen, ready))
    try:
        await ready.wait()
        async with bus:
            await _until(seen, ["online"])
            transport = bus.transport
            assert isinstance(transport, MqttTransport) and transport._paho is not None
            transport._paho.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
            await _until(seen, ["online", "", "online"])  # the Last Will clears it
            await eventually(lambda: transport.reconnects == 1)
        await _until(seen, ["online", "", "online", ""])
        async with EventBus(mosquitto.url(), status=False) as other:
            assert bus.client_id not in await get_statuses(other)
    finally:
        watcher.cancel()


def test_which_client_ids_count_as_generated() -> None:
    assert is_generated(EventBus("memory://").client_id)
    for named in ("llm", "voicebus-llm", "voicebus-0123456789ab-2", "Voicebus-0123456789ab"):
        assert not is_generated(EventBus("memory://", client_id=named).client_id)


def quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_five_quick_start_runs_leave_no_retained_status(fresh_mosquitto: Mosquitto) -> None:
    """The README's quick start, as a user runs it five times against one broker."""
    env = {**os.environ, "VOICEBUS_URL": fresh_mosquitto.url()}
    code = quick_start()
    for _ in range(5):
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
        )
        assert run.returncode == 0 and "Received: speech_detected" in run.stdout, run.stderr
    statuses = subprocess.run(
        [sys.executable, "-m", "voicebus", "status", "--json"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert statuses.returncode == 0, statuses.stderr
    assert json.loads(statuses.stdout) == []
