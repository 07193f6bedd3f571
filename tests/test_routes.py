"""The route table: every seed event type routed, user routes in the same table."""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum

import pytest

from tests.helpers import Collector
from voicebus import (
    ROUTES,
    EventBus,
    EventType,
    Payload,
    TopicError,
    UnknownEventTypeError,
    register_route,
    topic_for,
)


class DoorEvents(str, Enum):
    DOORBELL_RANG = "doorbell_rang"
    DOOR_OPENED = "door_opened"


class Doorbell(Payload):
    """Someone rang at a door."""

    door: str = "front"


def test_every_event_type_has_one_route() -> None:
    # the seed's, the Hermes commands and dialogue messages, the binary Hermes audio
    # types, CANCELLED
    assert len(EventType) == 28 + 13 + 2 + 1
    topics = [ROUTES.get(t).template.template for t in EventType]
    assert len(set(topics)) == 28 + 13 + 2 + 1
    assert EventType.SPEECH_DETECTED.value == "speech_detected"
    assert topic_for(EventType.SPEECH_DETECTED, {"text": "x"}) == "hermes/asr/textCaptured"
    assert topic_for(EventType.AUDIO_PLAYBACK_ENDED, {"siteId": "kitchen"}) == (
        "hermes/audioServer/kitchen/playFinished"
    )
    assert topic_for(EventType.ERROR_OCCURRED, {"error": "x", "component": "stt"}) == (
        "voicebus/error/stt"
    )
    # seed payloads validate as written
    for event_type, data in [
        (EventType.SPEECH_DETECTED, {"text": "Hello world"}),
        (EventType.WAKE_WORD_DETECTED, {"confidence": 0.95}),
        (EventType.MODEL_LOADED, {"model": "llama"}),
        (EventType.TTS_COMPLETED, {"duration": 1.5}),
        (EventType.RESPONSE_GENERATED, {"response": "hi", "prompt": "hello"}),
    ]:
        topic_for(event_type, data)


@pytest.fixture
def doorbell_route() -> Iterator[None]:
    """A user's route in the shared table for this test only."""
    register_route(DoorEvents.DOORBELL_RANG, "home/door/{door}/rang", Doorbell)
    yield
    ROUTES.unregister(DoorEvents.DOORBELL_RANG)
    assert DoorEvents.DOORBELL_RANG not in ROUTES


async def test_user_routes_travel_like_ours(bus: EventBus, doorbell_route: None) -> None:
    got = Collector()
    bus.subscribe(DoorEvents.DOORBELL_RANG, got)
    await bus.emit(DoorEvents.DOORBELL_RANG, {"door": "back", "visitor": "postman"})
    (event,) = await got.wait(1)
    assert event.type is DoorEvents.DOORBELL_RANG
    assert event.topic == "home/door/back/rang"
    assert event.data == {"siteId": "default", "door": "back", "visitor": "postman"}


def test_route_conflicts_are_refused() -> None:
    with pytest.raises(UnknownEventTypeError, match="already has a route"):
        register_route(EventType.SPEECH_DETECTED, "somewhere/else", Doorbell)
    with pytest.raises(TopicError, match="already used by speech_detected"):
        register_route(DoorEvents.DOOR_OPENED, "hermes/asr/textCaptured", Doorbell)
    with pytest.raises(TopicError, match="whole level"):
        register_route(DoorEvents.DOOR_OPENED, "home/door-{door}/opened", Doorbell)
    with pytest.raises(UnknownEventTypeError, match="no route"):
        topic_for(DoorEvents.DOOR_OPENED)
