"""QoS 1 publishes in flight stay within the broker's Receive Maximum (CONNACK):
voicebus writes its PUBLISH packets itself (`transport/mqtt/writer.py`), so it keeps
the window paho kept before; more publishes wait their turn, in order."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from tests.broker import Mosquitto
from tests.helpers import Collector, eventually, marker
from voicebus import EventBus, EventType
from voicebus.transport import Message, parse_url
from voicebus.transport.mqtt import MqttOptions
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


async def test_qos0_publishes_of_the_last_loop_iteration_go_out_before_close(
    mosquitto: Mosquitto,
) -> None:
    """Publishes after the first of a loop iteration are written together at its end
    (`writer.py`); `close` right after them still sends them before its DISCONNECT."""
    got: list[Message] = []
    url = parse_url(mosquitto.url())
    receiver = MqttTransport(url, MqttOptions(client_id=f"rx-{uuid.uuid4().hex[:8]}"))
    sender = MqttTransport(url, MqttOptions(client_id=f"tx-{uuid.uuid4().hex[:8]}", status=False))
    await receiver.connect(got.append)
    try:
        await receiver.subscribe("vb/window/#", 1)
        await sender.connect(lambda m: None)
        for i in range(10):  # one loop iteration: QoS 0 publishes never wait
            await sender.publish(Message("vb/window/q0", b"%d" % i, qos=0))
        await sender.close()
        await eventually(lambda: len(got) == 10)
        assert [m.payload for m in got] == [b"%d" % i for i in range(10)]
    finally:
        await receiver.close()
