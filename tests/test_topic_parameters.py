"""Topic parameters: filled from the payload, parsed back from the topic, bad values refused.

A parameter value that is empty or contains ``/``, ``+``, ``#`` or NUL cannot be
one topic level: `emit` refuses it with a `TopicError` that names the parameter
and the reason, before anything reaches the transport.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from enum import Enum
from typing import Any

import aiomqtt
import pytest

from tests.broker import Mosquitto
from tests.helpers import Collector
from voicebus import EventBus, EventType, PayloadValidationError, TopicError, topic_for
from voicebus.wire.codec import decode, encode
from voicebus.wire.routes import ROUTES, Route
from voicebus.wire.topics import TopicTemplate

BAD = {
    "slash": ("kitchen/left", "contains '/'"),
    "plus": ("kitchen+", "contains '\\+'"),
    "hash": ("#", "contains '#'"),
    "nul": ("kit\x00chen", "contains NUL"),
    "empty": ("", "is empty"),
}
GOOD = ["kitchen", "Küche 1", "sat.1-a_b", "$site", "x" * 200]

PARAM_ROUTES: list[tuple[Route, str]] = [
    (route, name) for route in ROUTES for name in route.template.parameters
]


def _ids(item: tuple[Route, str]) -> str:
    return f"{item[0].event_type.value}-{item[1]}"


def _data(route: Route, **values: Any) -> dict[str, Any]:
    """A valid payload of the route (required fields set) with `values` on top."""
    data: dict[str, Any] = {}
    for name, field in route.model.model_fields.items():
        if name == route.body:  # a binary route's payload: a whole WAV file
            data[name] = b"RIFF\x04\x00\x00\x00WAVE"
        elif field.is_required():
            data[field.alias or name] = "x"
    if route.event_type == EventType.INTENT_RECOGNIZED:  # intentName is intent.intentName
        data["intent"] = {"intentName": values.get("intentName", "x"), "confidenceScore": 1.0}
    data.update(values)
    return data


def test_every_parameterised_route_is_covered() -> None:
    covered = {(route.event_type, name) for route, name in PARAM_ROUTES}
    assert (EventType.WAKE_WORD_DETECTED, "wakewordId") in covered
    assert (EventType.AUDIO_PLAYBACK_ENDED, "siteId") in covered
    assert (EventType.SPEECH_ENDED, "siteId") in covered
    assert (EventType.ERROR_OCCURRED, "component") in covered
    assert len(covered) == len(PARAM_ROUTES) >= 8


# --- refused before anything is sent --------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("item", PARAM_ROUTES, ids=_ids)
async def test_bad_parameter_refused_before_publishing(item: tuple[Route, str], kind: str) -> None:
    route, param = item
    value, reason = BAD[kind]
    async with EventBus(f"memory://params-{uuid.uuid4().hex[:8]}") as bus:
        seen = Collector()
        bus.subscribe("#", seen)
        published: list[str] = []
        transport = bus.transport
        assert transport is not None
        original = transport.publish

        async def spy(message: Any) -> None:
            published.append(message.topic)
            await original(message)

        transport.publish = spy  # type: ignore[method-assign]
        with pytest.raises(TopicError, match=rf"{param}.*{reason}") as caught:
            await bus.emit(route.event_type, _data(route, **{param: value}))
        assert isinstance(caught.value, ValueError)
        assert published == []
        await bus.emit(EventType.HEALTH_CHECK, {"status": "sentinel"})
        events = await seen.wait(1)  # in order: a bad event would have come first
        assert events[0].type == EventType.HEALTH_CHECK
        assert bus.get_event_history(route.event_type) == []


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("item", PARAM_ROUTES, ids=_ids)
def test_topic_for_refuses_bad_parameter(item: tuple[Route, str], kind: str) -> None:
    route, param = item
    value, reason = BAD[kind]
    with pytest.raises(TopicError, match=rf"{param}.*{reason}"):
        topic_for(route.event_type, _data(route, **{param: value}))


@pytest.mark.parametrize("kind", sorted(BAD))
async def test_bad_parameter_never_reaches_mosquitto(mosquitto: Mosquitto, kind: str) -> None:
    """Over a real broker: a raw subscriber sees the next good event, never the bad one."""
    value, _ = BAD[kind]
    route = ROUTES.get(EventType.AUDIO_PLAYBACK_ENDED)
    async with (
        aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"raw-{uuid.uuid4().hex}") as raw,
        EventBus(mosquitto.url()) as bus,
    ):
        await raw.subscribe(route.filter, qos=1)
        with pytest.raises(TopicError):
            await bus.emit(route.event_type, {"siteId": value, "id": "bad"})
        good = f"good-{kind}"
        await bus.emit(route.event_type, {"siteId": good, "id": "good"})
        message = await asyncio.wait_for(anext(aiter(raw.messages)), 5)
        assert str(message.topic) == f"hermes/audioServer/{good}/playFinished"
        assert isinstance(message.payload, bytes)
        assert json.loads(message.payload) == {"id": "good"}


@pytest.mark.parametrize("value", [5, 1.5, True, ["a"]])
async def test_non_string_parameter_refused(value: object) -> None:
    async with EventBus(f"memory://params-{uuid.uuid4().hex[:8]}") as bus:
        with pytest.raises((PayloadValidationError, TopicError)):
            await bus.emit(EventType.AUDIO_PLAYBACK_ENDED, {"siteId": value})


def test_check_happens_in_the_template() -> None:
    template = TopicTemplate("a/{x}/b")
    assert template.format({"x": "ok"}) == "a/ok/b"
    for kind, (value, reason) in BAD.items():
        with pytest.raises(TopicError, match=reason):
            template.format({"x": value})
        assert kind
    with pytest.raises(TopicError, match="needs parameter 'x'"):
        template.format({})


# --- filled from the payload, parsed back from the topic ------------------------------


@pytest.mark.parametrize("value", GOOD)
@pytest.mark.parametrize("item", PARAM_ROUTES, ids=_ids)
def test_parameter_round_trip(item: tuple[Route, str], value: str) -> None:
    route, param = item
    data = _data(route, **{param: value})
    event, message = encode(
        route, data, event_id="e1", source=None, correlation_id=None, metadata=None
    )
    expected_topic = route.template.template.replace("{" + param + "}", value)
    for other in route.template.parameters:  # play_bytes: the other one as _data set it
        expected_topic = expected_topic.replace("{" + other + "}", data.get(other, "default"))
    assert message.topic == event.topic == expected_topic
    assert event.data[param] == value
    found = ROUTES.match(message.topic)
    assert found is not None and found[0] == route and found[1][param] == value
    if len(route.template.parameters) == 1:
        assert found[1] == {param: value}
    if route.body is not None:  # binary: the payload is the bytes, nothing else
        assert message.payload == data[route.body]
        payload = {}
    else:
        payload = json.loads(message.payload)
    if param in route.topic_only:
        assert param not in payload  # not duplicated where Hermes has no such key
    else:
        assert payload[param] == value
    back = decode(message, ROUTES, lambda: "fresh")
    assert back.type == route.event_type
    assert back.data[param] == value  # restored from the topic


def test_topic_value_wins_over_payload_value() -> None:
    """A peer's payload may carry a different siteId: the topic is authoritative."""
    route = ROUTES.get(EventType.SPEECH_ENDED)
    message_topic = "hermes/voiceActivity/kitchen/vadDown"
    from voicebus.transport.base import Message

    event = decode(
        Message(message_topic, b'{"siteId": "garage", "signalMs": 5}'), ROUTES, lambda: "x"
    )
    assert event.type == route.event_type
    assert event.data["siteId"] == "kitchen"


def test_wake_word_id_from_the_topic_with_or_without_the_payload_key() -> None:
    """``wakewordId`` is in the topic and (for Home Assistant) the payload: decoding
    takes a Hermes peer's payload without it, and the topic wins when they differ."""
    from voicebus.transport.base import Message

    topic = "hermes/hotword/porcupine/detected"
    for payload in (b'{"modelId": "p"}', b'{"modelId": "p", "wakewordId": "other"}'):
        event = decode(Message(topic, payload), ROUTES, lambda: "x")
        assert event.type is EventType.WAKE_WORD_DETECTED
        assert event.data["wakewordId"] == "porcupine"


def test_parameter_defaults_fill_the_topic() -> None:
    assert topic_for(EventType.WAKE_WORD_DETECTED) == "hermes/hotword/default/detected"
    assert (
        topic_for(EventType.WAKE_WORD_DETECTED, {"modelId": "porcupine"})
        == "hermes/hotword/porcupine/detected"
    )
    assert (
        topic_for(EventType.WAKE_WORD_DETECTED, {"wakewordId": "jarvis", "modelId": "p"})
        == "hermes/hotword/jarvis/detected"
    )
    assert topic_for(EventType.AUDIO_PLAYBACK_ENDED) == "hermes/audioServer/default/playFinished"
    assert topic_for(EventType.ERROR_OCCURRED, {"error": "x"}) == "voicebus/error/bus"


@pytest.mark.parametrize(
    "topic",
    [
        "hermes/hotword//detected",
        "hermes/hotword/a/b/detected",
        "hermes/audioServer//playFinished",
        "voicebus/error/",
        "hermes/voiceActivity/kitchen/vadDown/extra",
    ],
)
def test_topics_that_do_not_fit_are_not_parsed(topic: str) -> None:
    assert ROUTES.match(topic) is None


def _routes_by_type() -> dict[Enum, Route]:
    return {route.event_type: route for route in ROUTES}


def test_topic_only_keys_are_the_documented_ones() -> None:
    routes = _routes_by_type()
    # in the payload too: Home Assistant templates see only the payload
    assert routes[EventType.WAKE_WORD_DETECTED].topic_only == frozenset()
    assert routes[EventType.AUDIO_PLAYBACK_ENDED].topic_only == {"siteId"}
    assert routes[EventType.SPEECH_ENDED].topic_only == frozenset()  # Snips VAD has siteId
    for route in ROUTES:
        assert route.topic_only <= set(route.template.parameters), route.event_type
