"""``protocol="3.1.1"``: the envelope without MQTT 5 properties, over a real Mosquitto.

Correlated `request` works for every event type in both modes; the 3.1.1
envelope (``_vb`` on voicebus/ topics, ``sessionId`` on Hermes ones) is checked
byte by byte; what 3.1.1 cannot carry is refused (``group=``) or counted
(overlapping subscriptions' copies).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from pydantic_core import from_json

from voicebus import (
    ConfigError,
    Event,
    EventBus,
    EventType,
    PayloadValidationError,
    RequestCancelled,
)
from voicebus.transport import Message, parse_url
from voicebus.transport.mqtt import MqttOptions, MqttTransport
from voicebus.wire.codec import encode
from voicebus.wire.envelope311 import fold, unfold
from voicebus.wire.routes import ROUTES

from .broker import Mosquitto
from .helpers import Collector, eventually

TYPES = [t for t in EventType if not ROUTES.get(t).binary and t is not EventType.CANCELLED]
"""Every JSON event type. Binary audio routes carry only WAV bytes: over 3.1.1 they
have no place for a correlation id (README table); over MQTT 5 their correlated
round trip is tested in tests/test_hermes_wire.py. CANCELLED is no request or
reply: it cancels its correlation id (its 3.1.1 round trip: `test_cancel_over_311`)."""
pytestmark = pytest.mark.asyncio(loop_scope="module")


NESTED: dict[str, Any] = {
    "init": {"type": "notification", "text": "x"},
    "termination": {"reason": "nominal"},
    "intent": {"intentName": "x", "confidenceScore": 1.0},
}
"""Valid values of the required object fields (Hermes dialogue messages and intents)."""


def sample(event_type: EventType, probe: str) -> dict[str, Any]:
    """A valid payload of `event_type` (every required field a string, or an object
    from `NESTED`) with `probe`. A required ``sessionId`` is left to the correlation
    id (the data's own would win, and over 3.1.1 it is the correlation)."""
    model = ROUTES.get(event_type).model
    data: dict[str, Any] = {
        (f.alias or name): NESTED.get(f.alias or name, "x")
        for name, f in model.model_fields.items()
        if f.is_required() and name != "session_id"
    }
    data["probe"] = probe
    return data


def _emit_writes_session_id() -> bool:
    """Does `emit` write ``sessionId`` from the correlation id on Hermes routes?
    (the Hermes wire rule, made on another branch; 3.1.1 relies on it there)."""
    route = ROUTES.get(EventType.SPEECH_DETECTED)
    _, message = encode(
        route, {"text": "x"}, event_id="i", source=None, correlation_id="c", metadata=None
    )
    return b'"sessionId"' in message.payload


def hermes(event_type: EventType) -> bool:
    return not ROUTES.get(event_type).template.template.startswith("voicebus/")


def url_for(broker: Mosquitto, protocol: str) -> str:
    return broker.url() + ("?protocol=3.1.1" if protocol == "3.1.1" else "")


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["5", "3.1.1"])
async def pair(
    request: pytest.FixtureRequest, mosquitto: Mosquitto
) -> AsyncIterator[tuple[str, EventBus, EventBus]]:
    """(protocol, service, asker): the service answers an ``ask`` of each type with
    the next type, same correlation id."""
    protocol: str = request.param
    url = url_for(mosquitto, protocol)
    service, asker = EventBus(url, component="svc"), EventBus(url)

    def replier(answer: EventType) -> Callable[[Event], Awaitable[None]]:
        async def reply(event: Event) -> None:
            if event.data.get("probe") == "ask":
                data = sample(answer, "answer")
                await service.emit(answer, data, correlation_id=event.correlation_id)

        return reply

    for i, event_type in enumerate(TYPES):
        service.subscribe(event_type, replier(TYPES[(i + 1) % len(TYPES)]))
    async with service, asker:
        await service.ready()
        yield protocol, service, asker


@pytest.mark.parametrize("event_type", TYPES, ids=[t.name for t in TYPES])
async def test_request_over_each_event_type(
    pair: tuple[str, EventBus, EventBus], event_type: EventType
) -> None:
    protocol, service, asker = pair
    answer = TYPES[(TYPES.index(event_type) + 1) % len(TYPES)]
    hermes_side = hermes(event_type) or hermes(answer)
    if protocol == "3.1.1" and hermes_side and not _emit_writes_session_id():
        pytest.xfail("Hermes correlation over 3.1.1 is sessionId, written by emit (hermes-wire)")
    cid = f"req-{uuid.uuid4().hex[:8]}"
    got = await asker.request(event_type, sample(event_type, "ask"), answer, 5, cid)
    assert got is not None, f"no {answer.name} answer over MQTT {protocol}"
    assert got.type is answer and got.correlation_id == cid
    assert got.data["probe"] == "answer" and "_vb" not in got.data
    if protocol == "5" or not hermes(answer):  # id and source travel in _vb
        assert got.source == service.source


async def test_the_311_wire_bytes(mosquitto: Mosquitto) -> None:
    """What a plain 3.1.1 client sees: ``_vb`` on voicebus/ topics, nothing on Hermes."""
    seen: list[Message] = []
    watcher = MqttTransport(
        parse_url(url_for(mosquitto, "3.1.1")),
        MqttOptions(client_id=f"w-{uuid.uuid4().hex[:6]}", status=False, protocol="3.1.1"),
    )
    await watcher.connect(seen.append)
    try:
        await watcher.subscribe("voicebus/emotion/#", 1)
        await watcher.subscribe("hermes/asr/#", 2)
        async with EventBus(mosquitto.url(), protocol="3.1.1") as bus:
            await bus.emit(EventType.EMOTION_CHANGED, {"emotion": "calm"}, correlation_id="c1")
            await bus.emit(EventType.SPEECH_DETECTED, {"text": "hi"}, correlation_id="c2")
            await eventually(lambda: len(seen) == 2)
        emotion, speech = sorted(seen, key=lambda m: m.topic, reverse=True)
        assert emotion.user_properties and emotion.correlation_data == b"c1"  # unfolded
        assert dict(emotion.user_properties)["source"] == bus.source
        assert b"_vb" not in emotion.payload and b"_vb" not in speech.payload
        assert speech.user_properties == () and b"source" not in speech.payload
    finally:
        await watcher.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestWarning")
def test_fold_and_unfold() -> None:
    props = (("id", "e1"), ("source", "svc"), ("metadata", '{"k":1}'))
    folded = fold("voicebus/emotion/changed", b'{"emotion":"calm"}', b"\xff\x00", props)
    assert from_json(folded)["_vb"]["id"] == "e1"
    assert unfold("voicebus/emotion/changed", folded) == (
        b'{"emotion":"calm"}',
        b"\xff\x00",
        props,
    )
    hermes_payload = b'{"text":"hi","sessionId":"c"}'
    assert fold("hermes/asr/textCaptured", hermes_payload, b"c", props) == hermes_payload
    assert unfold("hermes/asr/textCaptured", b'{"_vb":{"id":"x"}}') is None  # not ours there
    with pytest.raises(PayloadValidationError, match="reserved"):
        fold("voicebus/emotion/changed", b'{"_vb":1}', None, props)
    # hostile envelopes: dropped, never trusted
    for bad in (b'{"_vb":"x","a":1}', b'{"_vb":{"id":"\\u0001","source":7,"k":"\\ufffe"},"a":1}'):
        assert unfold("voicebus/x", bad) == (b'{"a":1}', None, ())


async def test_group_needs_mqtt5(mosquitto: Mosquitto) -> None:
    bus = EventBus(url_for(mosquitto, "3.1.1"))
    with pytest.raises(ConfigError, match="MQTT 5"):
        bus.subscribe(EventType.SPEECH_DETECTED, lambda e: None, group="workers")
    with pytest.raises(ConfigError, match="not supported"):
        EventBus(mosquitto.url(), protocol="4")


async def test_overlapping_filters_count_copies_over_311(mosquitto: Mosquitto) -> None:
    """Mosquitto sends a 3.1.1 client one copy of a message however many of its
    filters match (measured; an MQTT 5 client gets one per filter): each handler
    runs once, also for an id-less Hermes message, and a real repeat is no copy."""
    wide, narrow = Collector("wide"), Collector("narrow")
    async with EventBus(url_for(mosquitto, "3.1.1")) as bus:
        bus.subscribe("hermes/#", wide)
        bus.subscribe("hermes/asr/+", narrow)
        await bus.ready()
        raw = MqttTransport(
            parse_url(mosquitto.url()), MqttOptions(client_id=f"r-{uuid.uuid4().hex[:6]}")
        )
        await raw.connect(lambda m: None)
        try:
            for text in ("one", "one", "two"):  # a real repeat is not a copy
                await raw.publish(
                    Message("hermes/asr/textCaptured", b'{"text":"%s"}' % text.encode())
                )
        finally:
            await raw.close()
        await wide.wait(3)
        await narrow.wait(3)
        await asyncio.sleep(0)  # nothing further is queued behind: checked by count
        assert [e.data["text"] for e in wide.events] == ["one", "one", "two"]
        assert [e.data["text"] for e in narrow.events] == ["one", "one", "two"]


async def test_cancel_over_311(mosquitto: Mosquitto) -> None:
    """CANCELLED's correlation id travels in ``_vb`` over 3.1.1: a request is cancelled."""
    url = url_for(mosquitto, "3.1.1")
    async with EventBus(url) as asker, EventBus(url) as canceller:
        waiting = asyncio.ensure_future(
            asker.request(EventType.DECISION_MADE, {}, EventType.TTS_COMPLETED, 5, "u311")
        )
        await eventually(lambda: asker.get_stats()["pending_waits"] == 1)
        await canceller.cancel("u311", reason="barge_in")
        with pytest.raises(RequestCancelled, match="barge_in"):
            await waiting
