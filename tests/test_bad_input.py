"""Bad input over a real broker: each becomes a dead letter with its reason; the bus
keeps running. Oversize emits fail at once instead of hanging."""

from __future__ import annotations

import json
import time
import uuid

import aiomqtt
import pytest

from tests.broker import Mosquitto
from tests.helpers import Collector, eventually
from voicebus import EventBus, EventType, PayloadTooLargeError
from voicebus.ops.dlq import list_dead_letters
from voicebus.transport.mqtt.transport import MqttTransport

BAD_INPUT = {  # topic, payload -> reason
    "non_json": ("hermes/asr/textCaptured", b"hello there", "invalid_json"),
    "invalid_utf8": ("voicebus/emotion/changed", b'{"emotion": "\xc3\x28"}', "invalid_utf8"),
    "schema": ("voicebus/tts/sayStarted", json.dumps({"text": 42}).encode(), "validation"),
    "oversize": (
        "voicebus/dialogueManager/decisionMade",
        json.dumps({"decision": "x" * 5000}).encode(),
        "payload_too_large",
    ),
    "unknown_topic": ("voicebus/emotion/exploded", b"{}", "unknown_topic"),
}


async def test_bad_input_becomes_dead_letters_with_reasons(mosquitto: Mosquitto) -> None:
    client_id = f"guard-{uuid.uuid4().hex[:8]}"
    async with EventBus(mosquitto.url(), client_id=client_id, max_payload_size=4096) as bus:
        got = Collector()
        errors = Collector("errors")
        speech = Collector("speech")
        bus.subscribe("voicebus/#", got)
        bus.subscribe(EventType.SPEECH_DETECTED, speech)
        bus.subscribe(EventType.ERROR_OCCURRED, errors)
        await bus.ready()
        async with aiomqtt.Client(
            "127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as raw:  # a peer that sends garbage
            for topic, payload, _ in BAD_INPUT.values():
                await raw.publish(topic, payload, qos=1)
        await eventually(lambda: len(bus.get_dead_letter_queue()) >= len(BAD_INPUT))
        local = {(d["topic"], d["reason"]) for d in bus.get_dead_letter_queue()}
        assert local == {(topic, reason) for topic, _, reason in BAD_INPUT.values()}

        async def all_retained() -> list[dict[str, object]] | None:
            found = await list_dead_letters(bus, client_id=client_id)
            return found if len(found) >= len(BAD_INPUT) else None

        remote = await eventually(all_retained)
        assert {(r["topic"], r["reason"]) for r in remote} == local
        schema = next(r for r in remote if r["reason"] == "validation")
        assert "text" in schema["error"]
        assert json.loads(schema["payload"]) == {"text": 42}
        oversize = next(r for r in remote if r["reason"] == "payload_too_large")
        assert oversize["payload_size"] == len(BAD_INPUT["oversize"][1])
        assert len(await errors.wait(len(BAD_INPUT))) == len(BAD_INPUT)
        assert {e.type for e in got.events} == {EventType.ERROR_OCCURRED}  # nothing else ran
        assert speech.events == []

        await bus.emit(EventType.SPEECH_DETECTED, {"text": "still running"})
        (event,) = await speech.wait(1)
        assert event.data["text"] == "still running"


@pytest.mark.parametrize(
    ("limit", "size", "names"),
    [
        (None, 300_000, "max_payload_size"),  # the default, 256 KiB
        (4_000_000, 1_100_000, "maximum packet size 1048576"),  # from the broker's CONNACK
    ],
)
async def test_oversize_emit_fails_at_once(
    mosquitto: Mosquitto, limit: int | None, size: int, names: str
) -> None:
    got = Collector()
    async with EventBus(mosquitto.url(), max_payload_size=limit) as bus:
        bus.subscribe(EventType.SPEECH_DETECTED, got)
        started = time.perf_counter()
        with pytest.raises(PayloadTooLargeError, match=names):
            await bus.emit(EventType.SPEECH_DETECTED, {"text": "x" * size})
        assert time.perf_counter() - started < 1.0
        await bus.emit(EventType.SPEECH_DETECTED, {"text": "small"})
        (event,) = await got.wait(1)
        assert event.data["text"] == "small"
        assert isinstance(bus.transport, MqttTransport)
        assert bus.transport.reconnects == 0
