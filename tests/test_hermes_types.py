"""The Hermes commands and dialogue messages as voicebus event types (issue 10, item 2).

Wire compatibility with rhasspy-hermes is in tests/test_hermes_compat.py (golden
fixtures); here: how the types behave on a bus, on both transports.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.broker import Mosquitto
from tests.helpers import Collector, eventually
from voicebus import EventBus, EventType, PayloadValidationError, hermes_models
from voicebus.wire.codec import topic_for

E = EventType
LIGHT_ON = {
    "input": "turn on the light",
    "intent": {"intentName": "LightOn", "confidenceScore": 0.9},
    "slots": [{"entity": "room", "value": {"kind": "Unknown", "value": "kitchen"}}],
    "sessionId": "sess-1",
}


async def test_one_subscription_receives_every_intent(bus: EventBus, peer: EventBus) -> None:
    got = Collector("intents")
    bus.subscribe(E.INTENT_RECOGNIZED, got)
    await bus.ready()
    await peer.emit(E.INTENT_RECOGNIZED, LIGHT_ON)
    await peer.emit(
        E.INTENT_RECOGNIZED,
        {"input": "what time", "intent": {"intentName": "GetTime", "confidenceScore": 1}},
    )
    first, second = await got.wait(2)
    assert (first.topic, second.topic) == ("hermes/intent/LightOn", "hermes/intent/GetTime")
    assert first.data["intentName"] == first.data["intent"]["intentName"] == "LightOn"
    assert second.data["intentName"] == "GetTime"
    # Hermes's defaults for a slot: slotName is the entity, rawValue the value
    assert first.data["slots"][0]["slotName"] == "room"
    assert first.data["slots"][0]["rawValue"] == "kitchen"
    assert first.correlation_id == "sess-1"


def test_the_intent_topic_comes_from_intent_name() -> None:
    assert topic_for(E.INTENT_RECOGNIZED, LIGHT_ON) == "hermes/intent/LightOn"
    same = {**LIGHT_ON, "intentName": "LightOn"}
    assert topic_for(E.INTENT_RECOGNIZED, same) == "hermes/intent/LightOn"
    with pytest.raises(PayloadValidationError, match=r"differs from intent\.intentName"):
        topic_for(E.INTENT_RECOGNIZED, {**LIGHT_ON, "intentName": "LightOff"})
    with pytest.raises(PayloadValidationError, match="intent"):
        topic_for(E.INTENT_RECOGNIZED, {"input": "x"})  # intent is required, as in Hermes


async def test_an_intent_whose_topic_and_payload_disagree_is_a_dead_letter(
    mosquitto: Mosquitto,
) -> None:
    async with EventBus(mosquitto.url()) as bus:
        got = Collector("intents")
        bus.subscribe(E.INTENT_RECOGNIZED, got)
        await bus.ready()
        argv = ["mosquitto_pub", "-V", "311", "-q", "1", "-p", str(mosquitto.port)]
        for topic in ("hermes/intent/LightOff", "hermes/intent/LightOn"):
            proc = await asyncio.create_subprocess_exec(
                *argv, "-t", topic, "-m", json.dumps(LIGHT_ON)
            )
            assert await proc.wait() == 0
        (event,) = await got.wait(1)  # the consistent one, sent second
        assert event.topic == "hermes/intent/LightOn"
        letters = await eventually(bus.get_dead_letter_queue)
        assert [d["topic"] for d in letters] == ["hermes/intent/LightOff"]
        assert "differs from intent.intentName" in letters[0]["error"]
        assert len(got.events) == 1


def test_session_init_is_an_action_or_a_notification() -> None:
    from voicebus.wire.codec import validate_payload
    from voicebus.wire.routes import ROUTES

    route = ROUTES.get(E.SESSION_START)
    note = validate_payload(route, {"init": {"text": "Ready"}})["init"]
    assert note == {"text": "Ready", "type": "notification"}  # Hermes always writes type
    action = validate_payload(route, {"init": {"canBeEnqueued": True}})["init"]
    assert action == {"canBeEnqueued": True, "type": "action", "sendIntentNotRecognized": False}
    with pytest.raises(PayloadValidationError, match="init"):
        validate_payload(route, {"init": {"type": "question", "text": "x"}})
    with pytest.raises(PayloadValidationError, match="init"):
        validate_payload(route, {"init": {"type": "notification"}})  # no text
    with pytest.raises(PayloadValidationError, match="reason"):
        validate_payload(ROUTES.get(E.HOTWORD_TOGGLE_OFF), {"reason": "because"})
    ended = ROUTES.get(E.SESSION_ENDED)
    with pytest.raises(PayloadValidationError, match="termination"):
        validate_payload(ended, {"sessionId": "s", "termination": {"reason": "bored"}})


@pytest.mark.parametrize(
    "event_type", [E.SESSION_STARTED, E.SESSION_CONTINUE, E.SESSION_END, E.SESSION_ENDED]
)
async def test_session_messages_need_a_session_id(event_type: EventType) -> None:
    async with EventBus("memory://hermes-types") as bus:
        with pytest.raises(PayloadValidationError, match="sessionId"):
            await bus.emit(event_type, {"termination": {"reason": "nominal"}})


async def test_the_correlation_id_is_the_required_session_id() -> None:
    async with EventBus("memory://hermes-session") as bus:
        event = await bus.emit(E.SESSION_END, {"text": "bye"}, correlation_id="s-9")
        assert event.data == {"sessionId": "s-9", "text": "bye"}
        assert event.correlation_id == "s-9"
        given = await bus.emit(E.SESSION_END, {"sessionId": "s-1"}, correlation_id="s-9")
        assert given.data["sessionId"] == "s-1"  # the data's own session wins


async def test_commands_travel_on_their_hermes_topics(bus: EventBus, peer: EventBus) -> None:
    got = Collector("commands")
    commands = {
        E.TTS_SAY: ({"text": "hello", "siteId": "kitchen"}, "hermes/tts/say"),
        E.ASR_START_LISTENING: ({"siteId": "kitchen"}, "hermes/asr/startListening"),
        E.HOTWORD_TOGGLE_OFF: ({"reason": "ttsSay"}, "hermes/hotword/toggleOff"),
        E.SESSION_END: ({"sessionId": "s-1", "text": "bye"}, "hermes/dialogueManager/endSession"),
        E.NLU_QUERY: ({"input": "turn on the light"}, "hermes/nlu/query"),
    }
    for event_type in commands:
        bus.subscribe(event_type, got)
    await bus.ready()
    for event_type, (data, _) in commands.items():
        await peer.emit(event_type, data)
    events = await got.wait(len(commands))
    assert [(e.type, e.topic) for e in events] == [(t, c[1]) for t, c in commands.items()]
    assert events[3].data == {"sessionId": "s-1", "text": "bye"}  # no siteId, as in Hermes


async def test_a_hermes_model_instance_can_be_emitted() -> None:
    async with EventBus("memory://hermes-model") as bus:
        say = hermes_models.TtsSay(text="hello", site_id="kitchen", id="say-1")
        event = await bus.emit(E.TTS_SAY, say)
        assert event.topic == "hermes/tts/say"
        assert event.data == {"siteId": "kitchen", "text": "hello", "id": "say-1"}
