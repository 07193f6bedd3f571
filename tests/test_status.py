"""Retained voicebus/status/<client_id>: online on connect, offline on stop and as Last Will."""

from __future__ import annotations

import asyncio
import socket
import uuid

import aiomqtt

from tests.broker import Mosquitto
from tests.helpers import eventually
from voicebus import EventBus
from voicebus.ops.status import get_statuses
from voicebus.transport.mqtt.transport import MqttTransport
from voicebus.wire.status import status_topic


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
