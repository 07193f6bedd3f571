"""Poison strings: every string that goes on the wire is a valid MQTT 5 string before
anything is sent (MQTT 5 section 1.5.4).

Mosquitto closes the link on a topic or user property with a control character, a
non-character or a surrogate; an outbox that resends such a message after every
reconnect never gets past it. So `emit` refuses them (`TopicError` for topic
parameters, `PayloadValidationError` for source, metadata and correlation id, both
`VoicebusError`), names the field, publishes nothing, and the link stays up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from tests.broker import Mosquitto
from tests.helpers import Collector
from tests.test_cli import voicebus
from voicebus import (
    EventBus,
    EventType,
    PayloadValidationError,
    TopicError,
    VoicebusError,
)
from voicebus.transport.base import Message
from voicebus.transport.mqtt.transport import MqttTransport
from voicebus.wire.codec import encode
from voicebus.wire.routes import ROUTES
from voicebus.wire.status import status_topic
from voicebus.wire.strings import NON_CHARACTERS, mqtt_string_problem
from voicebus.wire.topics import TopicTemplate, check_filter, check_topic

BIG = "x" * 70_000
"""70 KB: more than the 65,535 bytes of an MQTT string."""

# the 20 poison values: (label, value, applies to a topic level only)
POISON: list[tuple[str, str, bool]] = [
    *(
        (f"U+{ord(c):04X}", f"kit{c}chen", False)
        for c in (
            "\x01",
            "\x1f",
            "\x7f",
            "\x80",
            "\x85",
            "\x9f",
            "\ufdd0",
            "\ufdef",
            "\ufffe",
            "\uffff",
            "\U0001fffe",
            "\U0010ffff",
            "\ud800",
            "\udfff",
            "\x00",
        )
    ),
    ("plus", "kit+chen", True),
    ("hash", "kit#chen", True),
    ("slash", "kit/chen", True),
    ("empty", "", True),
    ("70KB", BIG, False),
]
assert len(POISON) == 20

FIELDS = ["siteId", "wakewordId", "source", "metadata"]


def _forbidden(code: int) -> bool:
    """The MQTT 5 rule, written out independently of `voicebus.wire.strings`."""
    return (
        code <= 0x1F
        or 0x7F <= code <= 0x9F
        or 0xD800 <= code <= 0xDFFF
        or 0xFDD0 <= code <= 0xFDEF
        or (code & 0xFFFF) in (0xFFFE, 0xFFFF)
    )


# --- the check itself ------------------------------------------------------------------


def test_exactly_the_forbidden_code_points_are_refused() -> None:
    refused = {code for code in range(0x110000) if mqtt_string_problem(chr(code)) is not None}
    assert refused == {code for code in range(0x110000) if _forbidden(code)}
    assert len(NON_CHARACTERS) == 66 and refused >= NON_CHARACTERS
    assert len(refused) == 1 + 31 + 33 + 2048 + 66


@pytest.mark.parametrize(
    ("char", "named"),
    [
        ("\x00", "NUL (U+0000)"),
        ("\x01", "control character U+0001"),
        ("\x85", "control character U+0085"),
        ("\ufdd0", "non-character U+FDD0"),
        ("\U0010ffff", "non-character U+10FFFF"),
        ("\udfff", "lone surrogate U+DFFF"),
    ],
)
def test_the_problem_names_the_code_point_and_its_index(char: str, named: str) -> None:
    assert mqtt_string_problem(f"kit{char}chen") == f"contains {named} at index 3"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "kitchen",
        " ",
        "~",
        "Küche 1",
        "\xa0",  # no-break space: not printable for Python, fine for MQTT
        "\u200d",  # zero width joiner (emoji sequences)
        "👩\u200d🍳",
        "\ufdcf\ufdf0\ufffd",  # around the non-characters
        "\U0010fffd",
        "x" * 65535,
        "é" * 32767,  # 65,534 bytes
        "\U0001f600" * 16383,  # 65,532 bytes
    ],
)
def test_valid_strings_pass(value: str) -> None:
    assert mqtt_string_problem(value) is None


@pytest.mark.parametrize("value", ["x" * 65536, "é" * 32768, "\U0001f600" * 16384])
def test_more_than_65535_utf8_bytes_is_refused(value: str) -> None:
    assert mqtt_string_problem(value) == (
        "is 65536 bytes long in UTF-8, more than the 65535 of an MQTT string"
    )


def test_topics_filters_and_templates_are_checked() -> None:
    for bad in ("a/kit\x85chen", "a/\ufffe", "a/\ud800", "a/" + "x" * 65535):
        with pytest.raises(TopicError):
            check_topic(bad)
        with pytest.raises(TopicError):
            check_filter(bad)
        with pytest.raises(TopicError):
            check_filter(bad + "/#")
    assert check_filter("a/Küche/+/#") == "a/Küche/+/#"
    with pytest.raises(TopicError, match=r"U\+0085"):
        TopicTemplate("voicebus/kit\x85chen/{siteId}")
    with pytest.raises(TopicError, match=r"topic of 'a/\{x\}/\{y\}'.* is 70003 bytes long"):
        TopicTemplate("a/{x}/{y}").format({"x": "x" * 35000, "y": "y" * 35000})


# --- encode: every wire string, named ----------------------------------------------------


def _emit_args(field: str, value: str) -> tuple[EventType, dict[str, Any], dict[str, Any]]:
    """(event type, data, keyword arguments of emit) with `value` in `field`."""
    if field == "siteId":
        return EventType.AUDIO_PLAYBACK_STARTED, {"siteId": value, "id": "p1"}, {}
    if field == "wakewordId":
        return EventType.WAKE_WORD_DETECTED, {"wakewordId": value, "modelId": "m"}, {}
    text = {"text": "poison"}
    if field == "source":
        return EventType.SPEECH_DETECTED, text, {"source": value}
    return EventType.SPEECH_DETECTED, text, {"metadata": {"room": value}}


def _expected(field: str) -> type[VoicebusError]:
    return TopicError if field in ("siteId", "wakewordId") else PayloadValidationError


def _applies(field: str, topic_only: bool) -> bool:
    return field in ("siteId", "wakewordId") or not topic_only


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(("label", "value", "topic_only"), POISON, ids=[p[0] for p in POISON])
def test_encode_refuses_poison_naming_the_field(
    field: str, label: str, value: str, topic_only: bool
) -> None:
    event_type, data, kwargs = _emit_args(field, value)
    route = ROUTES.get(event_type)
    args: dict[str, Any] = {"source": None, "correlation_id": None, "metadata": None}
    args.update(kwargs)
    if not _applies(field, topic_only):  # '/', '+', '#' are fine outside a topic level
        _, message = encode(route, data, event_id="e1", **args)
        assert message.topic == route.topic(data)
        return
    with pytest.raises(_expected(field)) as caught:
        encode(route, data, event_id="e1", **args)
    text = str(caught.value)
    assert "metadata['room']" in text if field == "metadata" else field in text
    if label.startswith("U+"):
        assert label in text and "at index 3" in text
    assert "\n" not in text and len(text) < 400  # one short line, also for 70 KB
    assert text.isprintable()  # no raw control character in the message


@pytest.mark.parametrize("value", [p[1] for p in POISON if not p[2]])
def test_correlation_id_is_checked(value: str) -> None:
    route = ROUTES.get(EventType.SPEECH_DETECTED)
    with pytest.raises(PayloadValidationError, match="correlation_id"):
        encode(
            route, {"text": "x"}, event_id="e1", source=None, correlation_id=value, metadata=None
        )


@pytest.mark.parametrize(
    ("metadata", "where"),
    [
        ({"a\x01": 1}, "metadata key 'a\\x01'"),
        ({"a": [1, {"b": "\x85"}]}, "metadata['a'][1]['b']"),
        ({"a": ("ok", "\ufffe")}, "metadata['a'][1]"),
        ({"a": "\x01"}, "metadata['a']"),  # JSON would escape it: refused all the same
        ({"a": "x" * 40_000, "b": "y" * 40_000}, "metadata"),  # each fits, together not
    ],
)
def test_metadata_strings_are_checked_at_any_depth(metadata: dict[str, Any], where: str) -> None:
    route = ROUTES.get(EventType.SPEECH_DETECTED)
    with pytest.raises(PayloadValidationError) as caught:
        encode(
            route, {"text": "x"}, event_id="e1", source=None, correlation_id=None, metadata=metadata
        )
    assert caught.value.fields == [where]


def test_metadata_with_escaped_but_valid_strings_passes() -> None:
    route = ROUTES.get(EventType.SPEECH_DETECTED)
    metadata = {"quote": 'say "hi"', "path": "C:\\voice", "zwj": "👩\u200d🍳", "n": [1, None]}
    _, message = encode(
        route, {"text": "x"}, event_id="e1", source=None, correlation_id=None, metadata=metadata
    )
    (value,) = [v for k, v in message.user_properties if k == "metadata"]
    assert json.loads(value) == metadata


def test_payload_strings_may_hold_control_characters_but_not_surrogates() -> None:
    """The payload is binary (JSON escapes what it must): only a string without a
    UTF-8 form is refused, naming the field, as a `PayloadValidationError`."""
    route = ROUTES.get(EventType.SPEECH_DETECTED)
    _, message = encode(
        route,
        {"text": "a\x01\x85\ufdd0"},
        event_id="e1",
        source=None,
        correlation_id=None,
        metadata=None,
    )
    assert json.loads(message.payload)["text"] == "a\x01\x85\ufdd0"
    with pytest.raises(PayloadValidationError) as caught:
        encode(
            route,
            {"text": "a\ud800"},
            event_id="e1",
            source=None,
            correlation_id=None,
            metadata=None,
        )
    assert caught.value.fields == ["text"]


# --- publish_message and the subscribe side, both transports ------------------------------


async def test_publish_message_refuses_a_bad_topic_or_property(bus: EventBus) -> None:
    seen = Collector()
    bus.subscribe(EventType.EMOTION_CHANGED, seen)
    await bus.ready()
    topic = ROUTES.get(EventType.EMOTION_CHANGED).filter
    payload = b'{"emotion": "calm"}'
    for bad in (f"{topic}/kit\x85chen", f"{topic}/\uffff", f"{topic}/{BIG}"):
        with pytest.raises(TopicError):
            await bus.publish_message(Message(bad, payload))
    with pytest.raises(PayloadValidationError, match=r"user_properties\[1\]\.value"):
        await bus.publish_message(
            Message(topic, payload, user_properties=(("a", "b"), ("k", "\x01")))
        )
    with pytest.raises(PayloadValidationError, match=r"user_properties\[0\]\.key"):
        await bus.publish_message(Message(topic, payload, user_properties=(("\ufdd0", "v"),)))
    await bus.publish_message(Message(topic, payload, user_properties=(("id", "good"),)))
    (event,) = await seen.wait(1)  # in order: nothing bad went first
    assert event.id == "good"
    assert bus.get_dead_letter_queue() == []


async def test_subscribe_and_wait_for_refuse_bad_filters(bus: EventBus) -> None:
    for bad in ("voicebus/kit\x85chen/#", "voicebus/\ufdd0/+", "voicebus/\ud800"):
        with pytest.raises(TopicError):
            bus.subscribe(bad, Collector())
        with pytest.raises(TopicError):
            bus.wait_for(bad, timeout=0.1)
    assert bus.get_stats()["broker_filters"] == ["voicebus/cancelled"]  # only the built-in one


# --- over a real Mosquitto: nothing sent, the link stays up ------------------------------


class LinkWatch:
    """What would show a dropped link: the transport's "connection ... lost" log
    records, its reconnect count, and the retained status (the broker publishes the
    offline Last Will at once when it closes the link)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.statuses: list[str] = []

    @property
    def lost(self) -> list[str]:
        return [
            r.getMessage()
            for r in self.caplog.records
            if r.name.startswith("voicebus") and " lost" in r.getMessage()
        ]

    async def watch(self, port: int, client_id: str, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as c:
            await c.subscribe(status_topic(client_id), qos=1)
            ready.set()
            async for message in c.messages:
                assert isinstance(message.payload, bytes)
                self.statuses.append(message.payload.decode())

    async def until_online(self) -> None:
        async def poll() -> None:
            while not self.statuses:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(poll(), 5)

    def assert_kept(self, bus: EventBus) -> None:
        transport = bus.transport
        assert isinstance(transport, MqttTransport)
        assert self.lost == []
        assert transport.reconnects == 0
        assert transport.connected
        assert self.statuses == ["online"]


@pytest.fixture
async def watched(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[tuple[EventBus, LinkWatch]]:
    """A bus on Mosquitto with a fixed client id, its link watched."""
    caplog.set_level(logging.INFO, logger="voicebus")
    client_id = f"poison-{uuid.uuid4().hex[:8]}"
    watch = LinkWatch(caplog)
    ready = asyncio.Event()
    watcher = asyncio.create_task(watch.watch(mosquitto.port, client_id, ready))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        async with EventBus(mosquitto.url(), client_id=client_id) as bus:
            await watch.until_online()
            yield bus, watch
    finally:
        watcher.cancel()


def _spy_publishes(bus: EventBus) -> list[str]:
    """Record the topic of everything the bus hands to its transport."""
    transport = bus.transport
    assert transport is not None
    sent: list[str] = []
    original = transport.publish

    async def spy(message: Message) -> None:
        sent.append(message.topic)
        await original(message)

    transport.publish = spy  # type: ignore[method-assign]
    return sent


@pytest.mark.parametrize("field", FIELDS)
async def test_twenty_poison_values_then_ten_valid_events_over_mosquitto(
    mosquitto: Mosquitto, watched: tuple[EventBus, LinkWatch], field: str
) -> None:
    bus, watch = watched
    event_type, _, _ = _emit_args(field, "x")
    async with EventBus(mosquitto.url()) as receiver:
        got = Collector()
        receiver.subscribe(event_type, got)
        await receiver.ready()
        sent = _spy_publishes(bus)
        valid_outside_topics = 0
        for label, value, topic_only in POISON:
            _, data, kwargs = _emit_args(field, value)
            if not _applies(field, topic_only):  # '/', '+', '#', '' in source or metadata
                await bus.emit(event_type, data, **kwargs)
                valid_outside_topics += 1
                continue
            with pytest.raises(_expected(field)) as caught:
                await bus.emit(event_type, data, **kwargs)
            assert isinstance(caught.value, VoicebusError), label
            assert len(sent) == valid_outside_topics, label  # the poison one: nothing sent
        assert len(sent) == valid_outside_topics
        for n in range(10):
            _, data, kwargs = _emit_args(field, f"valid{n}")
            await bus.emit(event_type, data, **kwargs)
        events = await got.wait(valid_outside_topics + 10)
        assert len(events) == valid_outside_topics + 10
        last = events[valid_outside_topics:]
        if field == "source":
            assert [e.source for e in last] == [f"valid{n}" for n in range(10)]
        elif field == "metadata":
            assert [e.metadata["room"] for e in last] == [f"valid{n}" for n in range(10)]
        else:
            assert [e.data[field] for e in last] == [f"valid{n}" for n in range(10)]
        watch.assert_kept(bus)


async def test_a_copied_site_id_from_a_peer_becomes_a_dead_letter(
    mosquitto: Mosquitto, watched: tuple[EventBus, LinkWatch]
) -> None:
    """The Hermes pattern: a service copies a received siteId into its next topic. A
    peer's siteId with U+0085 (valid JSON, and payloads are binary: it arrives) makes
    that emit raise inside the handler: a dead letter, and the service goes on."""
    service, watch = watched

    async def play(event: Any) -> None:
        await service.emit(
            EventType.AUDIO_PLAYBACK_STARTED, {"siteId": event.data["siteId"], "id": "say"}
        )

    service.subscribe(EventType.RESPONSE_GENERATED, play)
    await service.ready()
    async with EventBus(mosquitto.url()) as speaker:
        played = Collector()
        speaker.subscribe(EventType.AUDIO_PLAYBACK_STARTED, played)
        await speaker.ready()
        topic = ROUTES.get(EventType.RESPONSE_GENERATED).filter
        async with aiomqtt.Client(
            "127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as peer:
            sites = ["kit\u0085chen"] + [f"kitchen{n}" for n in range(10)]
            for site in sites:
                payload = json.dumps({"response": "hello", "siteId": site})
                await peer.publish(topic, payload.encode(), qos=1)
        events = await played.wait(10)
        assert [e.topic for e in events] == [
            f"voicebus/audioServer/kitchen{n}/playStarted" for n in range(10)
        ]
        (dead,) = service.get_dead_letter_queue()
        assert dead["reason"] == "handler_error"
        assert dead["exception"] == "TopicError"
        assert "siteId" in dead["error"] and "U+0085 at index 3" in dead["error"]
        assert dead["event"].data["siteId"] == "kit\u0085chen"
    watch.assert_kept(service)


# --- the CLI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["audio_playback_started", "--data", '{"siteId": "kit\\u0085chen"}'], "siteId"),
        (["wake_word_detected", "--data", '{"wakewordId": "\\ufdd0"}'], "wakewordId"),
        (["speech_detected", "text=hi", "--source", "stt\x01"], "source"),
        (["speech_detected", "text=hi", "--source", BIG], "source"),
        (["speech_detected", "text=hi", "--correlation-id", "s\x7f"], "correlation_id"),
    ],
    ids=["siteId", "wakewordId", "source", "source-70KB", "correlation-id"],
)
def test_cli_publish_exits_2_with_one_line(
    mosquitto: Mosquitto, args: list[str], names: str
) -> None:
    result = voicebus("publish", *args, url=mosquitto.url())
    assert result.returncode == 2, result.stderr
    assert "published" not in result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voicebus: error: ")
    assert names in lines[0]
    assert len(lines[0]) < 400


def test_cli_publish_checks_before_connecting() -> None:
    """Exit 2 (bad input), not 3 (no broker): nothing listens on that port."""
    result = voicebus(
        "publish",
        "audio_playback_started",
        "--data",
        '{"siteId": "a\\u0001"}',
        url="mqtt://127.0.0.1:9",
    )
    assert result.returncode == 2, result.stderr
    assert "U+0001" in result.stderr


async def test_strings_found_valid_are_remembered_bounded_and_admit_no_bad_one() -> None:
    """`prepare` skips the scan of an event type or source it found valid before
    (`envelope_checks.KNOWN_VALID`): a long source is not remembered, and a bad
    source is refused however many good ones came first."""
    from voicebus.wire import envelope_checks

    long_source = "s" * (envelope_checks.KNOWN_LONGEST + 1)
    async with EventBus("memory://known-valid") as bus:
        for source in ("kitchen", long_source, "kitchen", long_source):
            event = await bus.emit(EventType.RESPONSE_GENERATED, {"response": "x"}, source)
            assert event.source == source
        assert "kitchen" in envelope_checks.KNOWN_VALID
        assert long_source not in envelope_checks.KNOWN_VALID
        for bad in ("kit\x00chen", "kitchen\ud800", long_source + "\x07"):
            with pytest.raises(PayloadValidationError) as caught:
                await bus.emit(EventType.RESPONSE_GENERATED, {"response": "x"}, bad)
            assert caught.value.fields == ["source"]
            assert bad not in envelope_checks.KNOWN_VALID
