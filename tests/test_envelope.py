"""Envelope values from the wire are untrusted: ``time`` and Correlation Data.

Before, a ``time`` of ``nan``, ``inf`` or ``1e300`` became the event's timestamp
(then `voicebus listen` skipped the line and `voicebus dlq list` crashed), and
Correlation Data that is not UTF-8 was decoded with replacement characters, so
two different values became one correlation id and a reply carried other bytes.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.broker import Mosquitto
from tests.helpers import Collector
from tests.test_cli import Background, mosquitto_pub, voicebus
from voicebus import Event, EventBus, EventType
from voicebus.transport import Message
from voicebus.wire.codec import BAD_TIME, correlation_bytes, correlation_text, decode, encode
from voicebus.wire.routes import ROUTES, Route

SPEECH = "hermes/asr/textCaptured"
REPLY = "voicebus/dialogueManager/responseGenerated"
BAD_TIMES = ["nan", "NaN", "inf", "-inf", "Infinity", "1e300", "1e309", "-5", "0", "soon", ""]


async def test_a_bad_time_is_treated_as_absent_and_noted(bus_url: str) -> None:
    got = Collector()
    good = "1718000000.25"
    async with EventBus(bus_url) as bus, EventBus(bus_url) as peer:
        bus.subscribe(EventType.SPEECH_DETECTED, got)
        await bus.ready()
        before = time.time()
        for n, raw in enumerate([*BAD_TIMES, good, None]):
            props = (("id", f"t-{n}"),) + ((("time", raw),) if raw is not None else ())
            payload = json.dumps({"text": str(raw)}).encode()
            await peer.publish_message(Message(SPEECH, payload, 1, False, None, props))
        events = await got.wait(len(BAD_TIMES) + 2)
        after = time.time()
    for raw, event in zip(BAD_TIMES, events, strict=False):
        assert before <= event.timestamp <= after, (raw, event.timestamp)
        assert event.metadata == {BAD_TIME: raw}
    *_, sane, absent = events
    assert sane.timestamp == float(good) and sane.metadata == {}
    assert before <= absent.timestamp <= after and absent.metadata == {}


def test_the_bad_time_note_is_short_and_printable() -> None:
    raw = "\x85nan" + "9" * 70_000
    message = Message(SPEECH, b'{"text": "x"}', 1, False, None, (("time", raw),))
    event = decode(message, ROUTES, lambda: "fresh")
    note = event.metadata[BAD_TIME]
    assert note.startswith("\\x85nan") and note.isascii() and note.isprintable()
    assert len(note) < 300


def test_correlation_text_is_lossless_and_injective() -> None:
    values = [
        b"",
        b"req-1",
        "kit\u00e9".encode(),
        b"\xff\xfe..",
        b"\xfe\xff..",
        b"b64:",
        b"b64:aGk=",
    ]
    values += [b"a\x01b", "\ufdd0".encode(), "kit\u0085chen".encode(), b"\x00"]
    values += [os.urandom(n) for n in range(1, 33) for _ in range(30)]
    texts = [correlation_text(v) for v in values]
    assert [correlation_bytes(t) for t in texts] == values
    assert len(set(texts)) == len(set(values))
    assert texts[:3] == ["", "req-1", "kit\u00e9"]  # plain text stays as it is
    assert correlation_text(b"\xff\xfe..") != correlation_text(b"\xfe\xff..")
    for own in ("req-1", "b64:", "b64:not base64!", "b64:aGk"):  # ids chosen by a user
        assert correlation_text(correlation_bytes(own)) == own


async def test_binary_correlation_data_comes_back_in_the_reply(mosquitto: Mosquitto) -> None:
    """A raw MQTT 5 peer sends two requests whose Correlation Data is not UTF-8; a
    voicebus service answers with ``correlation_id=event.correlation_id``: each
    reply carries the request's original bytes, and the two ids differ."""
    first, second = b"\xff\xfe\x00\x01req", b"\xfe\xff\x00\x01req"
    seen: list[Event] = []

    async with EventBus(mosquitto.url()) as service:

        async def answer(event: Event) -> None:
            seen.append(event)
            await service.emit(
                EventType.RESPONSE_GENERATED,
                {"response": event.data["text"]},
                correlation_id=event.correlation_id,
            )

        service.subscribe(EventType.SPEECH_DETECTED, answer)
        await service.ready()
        async with aiomqtt.Client(
            "127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as peer:
            await peer.subscribe(REPLY, qos=1)
            for n, data in enumerate((first, second)):
                props = Properties(PacketTypes.PUBLISH)
                props.CorrelationData = data
                await peer.publish(SPEECH, json.dumps({"text": f"q{n}"}), qos=1, properties=props)
            replies: dict[str, bytes] = {}
            async with asyncio.timeout(10):
                async for message in peer.messages:
                    assert message.properties is not None
                    body = json.loads(message.payload)  # type: ignore[arg-type]
                    replies[body["response"]] = message.properties.CorrelationData
                    if len(replies) == 2:
                        break
    assert replies == {"q0": first, "q1": second}
    assert len({e.correlation_id for e in seen}) == 2
    assert all(e.correlation_id and e.correlation_id.isascii() for e in seen)


def _retain(broker: Mosquitto, topic: str, payload: str) -> None:
    mosquitto_pub(broker, topic, payload, "-r", "-q", "1")


def test_dlq_list_shows_records_with_a_time_that_is_no_time(
    fresh_mosquitto: Mosquitto,
) -> None:
    url = fresh_mosquitto.url()
    for n, when in enumerate(["NaN", "Infinity", "-Infinity", "1e300"]):
        record = (
            f'{{"id": "odd-{n}", "reason": "handler_error", "error": "boom {n}", '
            f'"time": {when}, "topic": "{SPEECH}", "client_id": "evil", '
            f'"envelope": {{"time": {when}}}}}'
        )
        _retain(fresh_mosquitto, f"voicebus/deadLetter/odd-{n}", record)
    result = voicebus("dlq", "list", url=url)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for n in range(4):
        assert f"odd-{n}" in result.stdout and f"boom {n}" in result.stdout
    as_json = voicebus("dlq", "list", "--json", url=url)
    assert as_json.returncode == 0, as_json.stderr
    assert {r["id"] for r in json.loads(as_json.stdout)} == {f"odd-{n}" for n in range(4)}


@pytest.mark.parametrize("as_json", [False, True])
def test_listen_count_ends_over_messages_whose_time_is_nan(
    mosquitto: Mosquitto, as_json: bool
) -> None:
    marker = uuid.uuid4().hex[:8]
    args = ["listen", "speech_detected", "--count", "3"] + (["--json"] if as_json else [])
    with Background.voicebus(*args, url=mosquitto.url()) as listen:
        listen.wait_for("listening on", "stderr")
        for n in range(3):
            mosquitto_pub(
                mosquitto,
                SPEECH,
                json.dumps({"text": f"{marker}-{n}"}),
                "-D", "publish", "user-property", "time", "nan",
            )  # fmt: skip
        code, out, err = listen.finish(timeout=20)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and all(f"{marker}-{n}" in lines[n] for n in range(3)), out
    if as_json:
        records = [json.loads(line) for line in lines]
        assert all(isinstance(r["timestamp"], float) and r["timestamp"] > 0 for r in records)


def test_parent_id_travels_as_the_parent_user_property() -> None:
    route = ROUTES.get(EventType.RESPONSE_GENERATED)
    event, message = encode_event(route, parent_id="abc-1")
    assert event.parent_id == "abc-1"
    assert ("parent", "abc-1") in message.user_properties
    assert decode(message, ROUTES, lambda: "fresh").parent_id == "abc-1"
    orphan, message = encode_event(route, parent_id=None)
    assert orphan.parent_id is None
    assert all(key != "parent" for key, _ in message.user_properties)
    assert decode(message, ROUTES, lambda: "fresh").parent_id is None
    empty = Message(REPLY, b'{"response": "x"}', 1, False, None, (("parent", ""),))
    assert decode(empty, ROUTES, lambda: "fresh").parent_id is None


def encode_event(route: Route, *, parent_id: str | None) -> tuple[Event, Message]:
    return encode(
        route,
        {"response": "x"},
        event_id="e-1",
        source="s",
        correlation_id=None,
        metadata=None,
        parent_id=parent_id,
    )
