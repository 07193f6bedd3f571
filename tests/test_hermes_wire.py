"""Hermes on the wire for peers without MQTT 5: ``sessionId`` written from the
correlation id, binary audio (AUDIO_FRAME, PLAY_BYTES), and refused messages that
keep the sender's correlation id. Against a real Mosquitto and real clients
(``mosquitto_sub -V 311``, ``mosquitto_sub -N``, paho) where the issue says so."""

from __future__ import annotations

import asyncio
import json
import re
import struct
import uuid
from collections.abc import Iterator
from enum import Enum
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.broker import Mosquitto
from tests.helpers import Collector, eventually, marker
from tests.test_cli import Background, voicebus
from tests.test_hermes_compat import FIXTURES, _input_from_fixture
from voicebus import EventBus, EventType, PayloadTooLargeError, PayloadValidationError
from voicebus.deadletters import record_document
from voicebus.wire.codec import encode
from voicebus.wire.correlation import sender_correlation
from voicebus.wire.models import Payload, TtsFinished
from voicebus.wire.routes import ROUTES, Route, register_route
from voicebus.wire.topics import TopicTemplate

E = EventType


def wav(tag: bytes = b"", size: int = 680) -> bytes:
    """A WAV file of 16 kHz mono 16-bit audio: header, then `tag` and filler bytes
    (every byte value, newlines and NULs among them: nothing text-like survives)."""
    samples = (tag + bytes(range(256)) * (size // 256 + 1))[: max(size - 44, len(tag))]
    header = b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    return header + b"data" + struct.pack("<I", len(samples)) + samples


# --- sessionId on the wire ----------------------------------------------------------------


def _session_routes() -> list[Route]:
    """Every Hermes route whose payload has a ``sessionId`` (old and new types alike)."""
    return [
        r for r in ROUTES if r.session and r.template.template.startswith(("hermes/", "rhasspy/"))
    ]


def _input(route: Route) -> dict[str, Any]:
    """What a user emits for `route`, without a sessionId (the correlation id gives it,
    also where Hermes requires one): a rhasspy-hermes fixture of its topic (minimal
    ones first), else its required fields set to ``"x"``."""
    names = sorted(FIXTURES, key=lambda name: (not name.endswith("_minimal"), name))
    for name in names:
        fixture = FIXTURES[name]
        found = ROUTES.match(fixture["topic"])
        if found is not None and found[0] is route:
            data = _input_from_fixture(fixture)
            data.pop("sessionId", None)
            return data
    return {
        info.alias or key: "x"
        for key, info in route.model.model_fields.items()
        if info.is_required() and key != "session_id"
    }


def test_routes_know_whether_their_payload_has_a_session() -> None:
    assert ROUTES.get(E.TTS_COMPLETED).session and ROUTES.get(E.SPEECH_DETECTED).session
    assert not ROUTES.get(E.AUDIO_FRAME).session  # binary: no payload keys at all
    assert {E.WAKE_WORD_DETECTED, E.SPEECH_DETECTED, E.TTS_COMPLETED} <= {
        r.event_type for r in _session_routes()
    }


async def test_session_id_is_the_correlation_id_for_a_peer_without_mqtt5(
    mosquitto: Mosquitto,
) -> None:
    """``mosquitto_sub -V 311`` (no properties at all) sees the session in the payload
    of every Hermes type that has the field, and of the CLI's ``--correlation-id``."""
    routes = _session_routes()
    sub = Background(
        # stdbuf: mosquitto_sub's stdout is block-buffered in a pipe
        [
            *("stdbuf", "-oL", "mosquitto_sub", "-V", "311", "-p", str(mosquitto.port), "-d"),
            *("-t", "hermes/#", "-t", "rhasspy/#", "-C", str(len(routes) + 2), "-W", "20"),
            *("-F", "=>%t|%p"),
        ]
    )
    with sub:
        sub.wait_for("received SUBACK")
        async with EventBus(mosquitto.url()) as bus:
            for route in routes:
                await bus.emit(route.event_type, _input(route), correlation_id=f"cid-{_id(route)}")
            own = await bus.emit(E.TTS_COMPLETED, {"sessionId": "own"}, correlation_id="other")
            assert own.data["sessionId"] == "own"  # the data's own sessionId wins
        result = await asyncio.to_thread(
            voicebus, "publish", "tts_completed", "--correlation-id", "s1", url=mosquitto.url()
        )
        assert result.returncode == 0, result.stderr
        code, out, err = sub.finish(timeout=20)
    assert code == 0, (out, err)
    got: dict[str, list[Any]] = {}
    for line in out.splitlines():
        if line.startswith("=>"):
            topic, payload = line[2:].split("|", 1)
            found = ROUTES.match(topic)
            assert found is not None, topic
            got.setdefault(_id(found[0]), []).append(json.loads(payload).get("sessionId"))
    expected = {_id(route): [f"cid-{_id(route)}"] for route in routes}
    expected["tts_completed"] += ["own", "s1"]
    assert got == expected, out


def _id(route: Route) -> str:
    return str(route.event_type.value)


async def test_session_id_from_the_correlation_id_in_process() -> None:
    async with EventBus(f"memory://wire-{uuid.uuid4().hex[:8]}") as bus:
        seen = Collector()
        bus.subscribe(E.TTS_COMPLETED, seen)
        sent = await bus.emit(E.TTS_COMPLETED, {"id": "say-1"}, correlation_id="s-7")
        plain = await bus.emit(E.TTS_COMPLETED, {"id": "say-2"})
        assert sent.data == {"siteId": "default", "id": "say-1", "sessionId": "s-7"}
        assert "sessionId" not in plain.data  # no correlation id: nothing invented
        model = TtsFinished(id="say-3")  # a model instance, not a dict: the same
        assert (await bus.emit(E.TTS_COMPLETED, model, correlation_id="s-8")).data[
            "sessionId"
        ] == "s-8"
        first, second, _ = await seen.wait(3)
        assert (first.correlation_id, first.data["sessionId"]) == ("s-7", "s-7")
        assert second.correlation_id is None and "sessionId" not in second.data


class Turn(Payload):
    """A dialogue turn whose payload requires a session (as Hermes's endSession does)."""

    session_id: str
    text: str = ""


class Dialogue(str, Enum):
    TURN = "test_turn"


def test_a_required_session_id_comes_from_the_correlation_id() -> None:
    route = Route(Dialogue.TURN, TopicTemplate("myapp/turn"), Turn)
    assert route.session
    event, message = encode(
        route, {"text": "ok"}, event_id="e", source=None, correlation_id="s-9", metadata=None
    )
    assert event.data["sessionId"] == "s-9"
    assert json.loads(message.payload) == {"siteId": "default", "sessionId": "s-9", "text": "ok"}
    with pytest.raises(PayloadValidationError, match="sessionId"):  # no session at all
        encode(route, {"text": "ok"}, event_id="e", source=None, correlation_id=None, metadata=None)


# --- binary audio ---------------------------------------------------------------------------


def _paho(broker: Mosquitto, protocol: paho.MQTTProtocolVersion) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, f"raw-{uuid.uuid4().hex}", protocol=protocol)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


async def test_frames_from_paho_reach_the_handler_as_bytes_in_order(mosquitto: Mosquitto) -> None:
    """100 frames from a plain MQTT 3.1.1 client, then one that is no WAV file."""
    frames = [wav(b"frame %03d\n" % i) for i in range(100)]
    async with EventBus(mosquitto.url()) as bus:
        seen = Collector()
        bus.subscribe(E.AUDIO_FRAME, seen)
        errors = Collector()
        bus.subscribe(E.ERROR_OCCURRED, errors)
        await bus.ready()
        client = _paho(mosquitto, paho.MQTTProtocolVersion.MQTTv311)
        try:
            for frame in frames:
                info = client.publish("hermes/audioServer/kitchen/audioFrame", frame, qos=1)
            await asyncio.to_thread(info.wait_for_publish, 10)
            client.publish("hermes/audioServer/kitchen/audioFrame", b'{"not": "wav"}', qos=1)
            events = await seen.wait(100)
            await errors.wait(1)
        finally:
            client.disconnect()
            client.loop_stop()
    assert [e.data["wav"] for e in events] == frames
    assert all(type(e.data["wav"]) is bytes for e in events)
    assert {e.data["siteId"] for e in events} == {"kitchen"}
    assert {e.topic for e in events} == {"hermes/audioServer/kitchen/audioFrame"}
    record = bus.get_dead_letter_queue()[-1]
    assert (record["reason"], record["payload"]) == ("not_wav", b'{"not": "wav"}')
    assert errors.events[0].data["context"] == "not_wav"
    assert len(seen.events) == 100  # the bad one never reached the handler


async def test_emitted_frame_is_byte_identical_for_mosquitto_sub(mosquitto: Mosquitto) -> None:
    frame = wav(b"\n\x00\xff{not json}\r\n", size=4000)
    sub = Background(
        [
            *("stdbuf", "-oL", "mosquitto_sub", "-V", "311", "-p", str(mosquitto.port)),
            *("-d", "-N", "-C", "1", "-W", "10", "-t", "hermes/audioServer/+/playBytes/+"),
        ]
    )
    with sub:
        sub.wait_for("received SUBACK")
        async with EventBus(mosquitto.url()) as bus:
            event = await bus.emit(
                E.PLAY_BYTES, {"siteId": "hall", "requestId": "r1", "wav": frame}
            )
        code, _, err = sub.finish()
    assert code == 0, err
    assert event.topic == "hermes/audioServer/hall/playBytes/r1"
    out = bytes(sub.buffers["stdout"])
    head = re.search(
        rb"received PUBLISH \([^\n]*'hermes/audioServer/hall/playBytes/r1'"
        rb"[^\n]*\((\d+) bytes\)\)\n",
        out,
    )
    assert head is not None, out[:500]
    size = int(head.group(1))
    assert size == len(frame)
    assert out[head.end() : head.end() + size] == frame


async def test_envelope_travels_in_properties_of_a_binary_message(mosquitto: Mosquitto) -> None:
    frame = wav(b"envelope")
    got: asyncio.Queue[paho.MQTTMessage] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        f"raw-{uuid.uuid4().hex}",
        protocol=paho.MQTTProtocolVersion.MQTTv5,
    )
    subscribed = asyncio.Event()
    client.on_message = lambda c, u, m: loop.call_soon_threadsafe(got.put_nowait, m)
    client.on_subscribe = lambda *a: loop.call_soon_threadsafe(subscribed.set)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        client.subscribe("hermes/audioServer/+/audioFrame", qos=1)
        await asyncio.wait_for(subscribed.wait(), 10)
        async with EventBus(mosquitto.url()) as bus:
            event = await bus.emit(
                E.AUDIO_FRAME, {"siteId": "kitchen", "wav": frame}, correlation_id="c-9"
            )
            message = await asyncio.wait_for(got.get(), 10)
    finally:
        client.disconnect()
        client.loop_stop()
    assert message.payload == frame
    props = message.properties
    assert props is not None
    assert props.ContentType == "audio/wav"
    assert props.CorrelationData == b"c-9"
    assert ("id", event.id) in props.UserProperty and ("type", "audio_frame") in props.UserProperty


async def test_binary_round_trip_between_buses(bus_url: str) -> None:
    frames = [wav(b"%d" % i, size=700) for i in range(20)]
    async with EventBus(bus_url) as sender, EventBus(bus_url) as receiver:
        seen = Collector()
        receiver.subscribe(E.AUDIO_FRAME, seen)
        plays = Collector()
        receiver.subscribe(E.PLAY_BYTES, plays)
        await receiver.ready()
        for frame in frames:
            await sender.emit(
                E.AUDIO_FRAME, {"siteId": "kitchen", "wav": bytearray(frame)}, correlation_id="mic"
            )
        await sender.emit(E.PLAY_BYTES, {"siteId": "hall", "requestId": "r-1", "wav": frames[0]})
        events = await seen.wait(20)
        (play,) = await plays.wait(1)
    assert [e.data["wav"] for e in events] == frames
    assert {e.correlation_id for e in events} == {"mic"}
    assert play.data == {"siteId": "hall", "requestId": "r-1", "wav": frames[0]}


class Snapshot(Payload):
    """A camera still (a user's binary route)."""

    camera: str = "door"
    jpeg: bytes


class Camera(str, Enum):
    SNAPSHOT = "camera_snapshot"


@pytest.fixture
def camera_route() -> Iterator[Route]:
    """A user's binary route, in the shared table for this test only (the committed
    contract is generated from that table: tests/test_contract.py)."""
    route = register_route(Camera.SNAPSHOT, "myapp/{camera}/snapshot", Snapshot, body="jpeg")
    yield route
    ROUTES.unregister(Camera.SNAPSHOT)


async def test_a_user_binary_route(camera_route: Route) -> None:
    route = camera_route
    assert route.binary and route.content_type == "application/octet-stream"
    assert route.topic_only == {"camera"} and not route.session
    image = b"\xff\xd8\xff\xe0 not a wav \x00\n"
    async with EventBus(f"memory://wire-{uuid.uuid4().hex[:8]}") as bus:
        seen = Collector()
        bus.subscribe(Camera.SNAPSHOT, seen)
        event = await bus.emit(Camera.SNAPSHOT, {"camera": "gate", "jpeg": image})
        (got,) = await seen.wait(1)
    assert event.topic == got.topic == "myapp/gate/snapshot"
    assert got.data == {"camera": "gate", "jpeg": image}


async def test_binary_payloads_are_checked_when_emitting() -> None:
    async with EventBus(f"memory://wire-{uuid.uuid4().hex[:8]}") as bus:
        for bad in (b"RIFF", b"RIFX\x00\x00\x00\x00WAVE", "RIFF....WAVE", None):
            with pytest.raises(PayloadValidationError, match="wav"):
                await bus.emit(E.AUDIO_FRAME, {"wav": bad})
        with pytest.raises(PayloadValidationError, match=r"sessionId.*correlation_id"):
            await bus.emit(E.AUDIO_FRAME, {"wav": wav(), "sessionId": "s"})
        with pytest.raises(PayloadValidationError, match="volume"):
            await bus.emit(E.PLAY_BYTES, {"requestId": "r", "wav": wav(), "volume": 1})
        with pytest.raises(PayloadValidationError, match="requestId"):
            await bus.emit(E.PLAY_BYTES, {"wav": wav()})
        assert bus.get_event_history() == []


async def test_binary_size_limit_and_handler_failure(mosquitto: Mosquitto) -> None:
    big = wav(size=3000)
    async with EventBus(mosquitto.url(), max_payload_size=2048) as bus:

        def boom(event: Any) -> None:
            raise RuntimeError("speaker on fire")

        bus.subscribe(E.AUDIO_FRAME, boom)
        await bus.ready()
        client = _paho(mosquitto, paho.MQTTProtocolVersion.MQTTv311)
        try:
            client.publish("hermes/audioServer/k/audioFrame", big, qos=1)
            client.publish("hermes/audioServer/k/audioFrame", wav(b"ok", size=100), qos=1)
            records = await eventually(
                lambda: len(bus.get_dead_letter_queue()) >= 2 and bus.get_dead_letter_queue()
            )
        finally:
            client.disconnect()
            client.loop_stop()
        too_large, failed = records
        assert too_large["reason"] == "payload_too_large"
        assert failed["reason"] == "handler_error" and failed["payload"] == wav(b"ok", size=100)
        document = record_document(failed, bus.client_id)
        assert document["payload_base64"] is not None and document["payload"] is None
        with pytest.raises(PayloadTooLargeError):
            await bus.emit(E.AUDIO_FRAME, {"wav": big})


def test_hermes_classes_accept_the_audio_topics() -> None:
    """rhasspy-hermes 0.6.2 ``AudioFrame`` / ``AudioPlayBytes`` ``TOPIC_PATTERN``s."""
    frame = r"^hermes/audioServer/([^/]+)/audioFrame$"
    play = r"^hermes/audioServer/([^/]+)/playBytes/([^/]+)$"
    assert ROUTES.get(E.AUDIO_FRAME).hermes == "AudioFrame"
    assert ROUTES.get(E.PLAY_BYTES).hermes == "AudioPlayBytes"
    from voicebus.wire.codec import topic_for

    topic = topic_for(E.AUDIO_FRAME, {"siteId": "kitchen", "wav": wav()})
    assert re.match(frame, topic) and topic == "hermes/audioServer/kitchen/audioFrame"
    topic = topic_for(E.PLAY_BYTES, {"siteId": "hall", "requestId": "r", "wav": wav()})
    assert re.match(play, topic)


# --- refused messages keep the sender's correlation -------------------------------------------


@pytest.mark.parametrize(
    ("payload", "correlation", "expected"),
    [
        (b'{"sessionId": "s-42"}', None, "s-42"),  # valid JSON, missing the required text
        (b"not json at all", b"c-42", "c-42"),
        (b'{"sessionId": "s-1", "text": 5}', b"c-43", "c-43"),  # Correlation Data first
    ],
    ids=["session-id", "correlation-data", "both"],
)
async def test_rejected_message_keeps_its_correlation(
    mosquitto: Mosquitto, payload: bytes, correlation: bytes | None, expected: str
) -> None:
    async with EventBus(mosquitto.url()) as bus:
        errors = Collector()
        bus.subscribe(E.ERROR_OCCURRED, errors)
        bus.subscribe(E.SPEECH_DETECTED, lambda e: None)
        await bus.ready()
        client = _paho(mosquitto, paho.MQTTProtocolVersion.MQTTv5)
        try:
            props = None
            if correlation is not None:
                props = Properties(PacketTypes.PUBLISH)
                props.CorrelationData = correlation
            info = client.publish("hermes/asr/textCaptured", payload, qos=1, properties=props)
            await asyncio.to_thread(info.wait_for_publish, 10)
            (error,) = await errors.wait(1)
        finally:
            client.disconnect()
            client.loop_stop()
        assert error.correlation_id == expected
        assert error.data["sessionId"] == expected
        (record,) = bus.get_dead_letter_queue()
        assert record["event"].correlation_id == expected
        assert record_document(record, bus.client_id)["envelope"]["correlation_id"] == expected
        await marker(bus)
        assert len(errors.events) == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe not utf-8",
        b'["sessionId", "x"]',
        b'{"sessionId": 42}',
        b'{"sessionId": ""}',
        b'{"sessionId": "\\ud800"}',  # a lone surrogate cannot be Correlation Data
        b'{"sessionId": "s\\u0001"}',  # a control character: no valid MQTT string
        b'{"sessionId": "' + b"x" * 70000 + b'"}',
        b'{"a": ' * 10000 + b"1" + b"}" * 10000,  # deep nesting
        b'{"sessionId": "s", "sessionId": "s2"' + b" " * 10 + b"}",
    ],
)
def test_sender_correlation_reads_hostile_payloads_defensively(payload: bytes) -> None:
    found = sender_correlation(payload, None, None, 256 * 1024)
    assert found in (None, "s2")  # duplicate keys: the last one, as JSON parsers do


def test_sender_correlation_respects_the_size_limit() -> None:
    payload = b'{"sessionId": "s-1"}'
    assert sender_correlation(payload, None, None, 1024) == "s-1"
    assert sender_correlation(payload, None, None, 10) is None  # over the limit: not read
    assert sender_correlation(payload, b"c-1", None, 10) == "c-1"  # Correlation Data first
