"""QoS 1 publishes in flight stay within the broker's Receive Maximum (CONNACK):
voicebus writes its PUBLISH packets itself (`transport/mqtt/writer.py`), so it keeps
the window paho kept before; more publishes wait their turn, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.broker import Mosquitto
from tests.helpers import Collector, marker
from voicebus import EventBus, EventType
from voicebus.transport.mqtt.transport import MqttTransport


async def test_publishes_beyond_the_brokers_receive_maximum_wait_their_turn(
    tmp_path: Path,
) -> None:
    with Mosquitto(tmp_path / "broker", extra="max_inflight_messages 5\n") as broker:
        url = broker.url()
        got = Collector()
        async with EventBus(url) as receiver, EventBus(url) as sender:
            receiver.subscribe(EventType.SPEECH_DETECTED, got)
            await receiver.ready()
            transport = sender.transport
            assert isinstance(transport, MqttTransport)
            assert transport._publisher.window == 5  # from the broker's CONNACK
            peak = 0

            async def emit(i: int) -> None:
                nonlocal peak
                await sender.emit(EventType.SPEECH_DETECTED, {"text": f"e{i}"})
                peak = max(peak, len(transport._inflight))

            await asyncio.gather(*(emit(i) for i in range(200)))
            await got.wait(200)
            await marker(sender, receiver)
            assert [e.data["text"] for e in got.events] == [f"e{i}" for i in range(200)]
            assert transport.reconnects == 0 and transport.connected
            assert peak <= 5
