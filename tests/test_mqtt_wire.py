"""What travels over a real Mosquitto: plain JSON payloads and MQTT 5 properties."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.broker import Mosquitto
from tests.helpers import Collector, eventually
from voicebus import EventBus, EventType
from voicebus.transport.mqtt.properties import pack_publish_properties, unpack_publish_properties
from voicebus.transport.mqtt.transport import MqttTransport


async def mosquitto_pub(broker: Mosquitto, topic: str, payload: str, *extra: str) -> None:
    """Publish like a plain MQTT client (no MQTT 5 properties)."""
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), *extra,
        "-t", topic, "-m", payload,
    )  # fmt: skip
    assert await proc.wait() == 0


async def test_mosquitto_pub_reaches_a_typed_handler(mosquitto: Mosquitto) -> None:
    async with EventBus(mosquitto.url()) as bus:
        got = Collector()
        bus.subscribe(EventType.SPEECH_DETECTED, got)
        await bus.ready()
        payload = json.dumps({"text": "turn on the light", "likelihood": 0.8, "sessionId": "s-9"})
        await mosquitto_pub(mosquitto, "hermes/asr/textCaptured", payload)
        (event,) = await got.wait(1)
        assert event.type is EventType.SPEECH_DETECTED
        assert event.data["text"] == "turn on the light"
        assert event.data["seconds"] == 0.0
        assert event.correlation_id == "s-9"  # sessionId stands in for correlation data
        assert event.id  # a fresh id for a message without properties


async def test_voicebus_publishes_plain_json_on_the_mapped_topic(mosquitto: Mosquitto) -> None:
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(mosquitto.port),
            "-V",
            "mqttv5",
            "-t",
            "hermes/hotword/+/detected",
            "-C",
            "1",
            "-W",
            "10",
            "-v",
            "-F",
            "%t %p|%P",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        async with EventBus(mosquitto.url(), client_id="wake-1") as bus:

            async def received() -> bool:  # once mosquitto_sub's subscription is in place
                await bus.emit(
                    EventType.WAKE_WORD_DETECTED,
                    {"wakewordId": "porcupine", "confidence": 0.95},
                    correlation_id="utt-1",
                )
                return sub.poll() is not None

            await eventually(received, timeout=10, interval=0.05)
        out, _ = sub.communicate(timeout=10)
    finally:
        sub.kill()
    topic, rest = out.strip().split(" ", 1)
    payload, props = rest.split("|", 1)
    assert topic == "hermes/hotword/porcupine/detected"
    data = json.loads(payload)
    assert data == {
        "siteId": "default",
        "wakewordId": "porcupine",  # in the topic and in the payload (for Home Assistant)
        "modelId": "porcupine",
        "modelVersion": "",
        "modelType": "personal",
        "currentSensitivity": 1.0,
        "confidence": 0.95,
        "sessionId": "utt-1",  # the correlation id, for peers without MQTT 5
    }
    assert "wake-1" in props and "wake_word_detected" in props


def test_property_codec_matches_paho() -> None:
    packed = pack_publish_properties(
        content_type="application/json",
        correlation_data=b"utt-1",
        user_properties=(("id", "abc"), ("type", "speech_detected"), ("metadata", '{"a":1}')),
    )
    theirs = Properties(PacketTypes.PUBLISH)
    theirs.unpack(packed)
    assert theirs.ContentType == "application/json"
    assert theirs.CorrelationData == b"utt-1"
    assert theirs.UserProperty == [
        ("id", "abc"),
        ("type", "speech_detected"),
        ("metadata", '{"a":1}'),
    ]
    mine = Properties(PacketTypes.PUBLISH)
    mine.UserProperty = ("k", "v")
    mine.SubscriptionIdentifier = 7
    mine.SubscriptionIdentifier = 300
    mine.ResponseTopic = "r/t"
    mine.MessageExpiryInterval = 60
    decoded, end = unpack_publish_properties(mine.pack(), 0)
    assert decoded.user_properties == (("k", "v"),)
    assert decoded.subscription_ids == (7, 300)
    assert end == len(mine.pack())


async def test_raw_aiomqtt_v5_peer_sees_envelope_properties(mosquitto: Mosquitto) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as raw:
        await raw.subscribe("voicebus/model/loaded", qos=1)
        async with EventBus(mosquitto.url(), client_id="models") as bus:
            sent = await bus.emit(
                EventType.MODEL_LOADED,
                {"model": "llama"},
                correlation_id="c-1",
                metadata={"gpu": True},
            )
        message = await asyncio.wait_for(anext(aiter(raw.messages)), 5)
    props = message.properties
    assert props is not None
    assert json.loads(message.payload) == {  # type: ignore[arg-type]
        "siteId": "default",
        "model": "llama",
        "sessionId": "c-1",  # the correlation id, also in the payload
    }
    assert props.CorrelationData == b"c-1"
    user = dict(props.UserProperty)
    assert user["id"] == sent.id and user["type"] == "model_loaded" and user["source"] == "models"
    assert json.loads(user["metadata"]) == {"gpu": True}
    assert props.ContentType == "application/json"
    assert message.qos == 1


async def test_qos2_message_from_a_peer_reaches_the_handler(mosquitto: Mosquitto) -> None:
    async with EventBus(mosquitto.url()) as bus:
        got = Collector()
        bus.subscribe(EventType.TTS_COMPLETED, got)
        await bus.ready()
        await mosquitto_pub(
            mosquitto, "hermes/tts/sayFinished", '{"id": "say-1", "sessionId": "s-2"}', "-q", "2"
        )
        (event,) = await got.wait(1)
        assert event.data["id"] == "say-1" and event.correlation_id == "s-2"


async def test_a_failing_receiver_does_not_break_the_link(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    import voicebus.receive.inbound as inbound  # an internal: the decode step fails once

    real_decode = inbound.decode
    calls = 0

    def flaky_decode(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("receiver bug")
        return real_decode(*args)

    monkeypatch.setattr(inbound, "decode", flaky_decode)
    async with EventBus(mosquitto.url()) as bus:
        got = Collector()
        bus.subscribe(EventType.TTS_COMPLETED, got)
        await bus.emit(EventType.TTS_COMPLETED, {"id": "a"})
        await bus.emit(EventType.TTS_COMPLETED, {"id": "b"})
        (event,) = await got.wait(1)
        assert event.data["id"] == "b" and calls == 2
        assert isinstance(bus.transport, MqttTransport)
        assert bus.transport.reconnects == 0
