"""De-duplication that a peer cannot poison and that never drops a reply.

Only the same message twice (same topic, same source, same id) is a duplicate;
messages without an id are never duplicates; emitted ids are not guessable.
Before, the key was (source, id) on any topic and ids counted up
(``<prefix>-<n>``, id-less messages got ``<prefix>.<n>``): a second client could
make a bus drop another service's next events, or every later Rhasspy message.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.broker import Mosquitto
from tests.helpers import Collector, marker
from voicebus import Event, EventBus, EventType
from voicebus.transport import Message
from voicebus.wire.codec import encode
from voicebus.wire.routes import ROUTES

SPEECH = "hermes/asr/textCaptured"
REPLY = "voicebus/dialogueManager/responseGenerated"


def _message(topic: str, data: dict[str, Any], props: tuple[tuple[str, str], ...]) -> Message:
    return Message(topic, json.dumps(data).encode(), 1, False, None, props)


def _guesses(seen_id: str, count: int) -> list[str]:
    """What a peer that saw `seen_id` would try as the next ids: counting up, in
    decimal (the old ``<prefix>-<n>``) and in hex."""
    prefix, _, tail = seen_id.rpartition("-")
    base = int(tail, 16)
    half = count // 2
    return [f"{prefix}-{k}" for k in range(1, half + 1)] + [
        f"{prefix}-{base + k:0{len(tail)}x}" for k in range(1, count - half + 1)
    ]


async def test_emitted_ids_are_not_guessable_from_earlier_ones(bus_url: str) -> None:
    async with EventBus(bus_url) as bus:
        ids = [(await bus.emit(EventType.HEALTH_CHECK, {})).id for _ in range(200)]
    assert len(set(ids)) == len(ids)
    prefixes = {i.rpartition("-")[0] for i in ids}
    assert len(prefixes) == 1  # the bus prefix stays (a readable origin, not a key)
    tails = [i.rpartition("-")[2] for i in ids]
    assert all(len(t) == 16 for t in tails)  # 64 random bits each
    steps = {int(b, 16) - int(a, 16) for a, b in itertools.pairwise(tails)}
    assert len(steps) > 100  # no fixed stride
    assert not set(_guesses(ids[0], 400)) & set(ids[1:])


async def test_a_peer_spoofing_source_and_next_ids_on_another_topic_suppresses_nothing(
    bus_url: str,
) -> None:
    """A second client sends 200 valid events with stt's source and guesses of its
    next ids on another topic; the victim still handles stt's next 10 events."""
    speech = Collector("speech")
    spoofed = Collector("spoofed")
    stt_id = f"stt-{uuid.uuid4().hex[:8]}"
    async with (
        EventBus(bus_url) as victim,
        EventBus(bus_url, client_id=stt_id) as stt,
        EventBus(bus_url) as attacker,
    ):
        victim.subscribe(EventType.SPEECH_DETECTED, speech)
        victim.subscribe(EventType.RESPONSE_GENERATED, spoofed)
        await victim.ready()
        first = await stt.emit(EventType.SPEECH_DETECTED, {"text": "first"})
        await speech.wait(1)

        guesses = _guesses(first.id, 200)
        for n, guess in enumerate(guesses):
            props = (("id", guess), ("source", stt.source), ("type", "response_generated"))
            await attacker.publish_message(_message(REPLY, {"response": f"spoof {n}"}, props))
        await spoofed.wait(200)  # all of them reached the victim first

        sent = [await stt.emit(EventType.SPEECH_DETECTED, {"text": f"real {n}"}) for n in range(10)]
        await speech.wait(11)
        assert [e.data["text"] for e in speech.events[1:]] == [f"real {n}" for n in range(10)]
        assert not {e.id for e in sent} & set(guesses)


async def test_only_the_same_topic_source_and_id_is_a_duplicate(bus_url: str) -> None:
    """The exact ids of stt's next events, sent first on another topic, suppress
    nothing; stt's own resends of the same messages are dropped."""
    speech = Collector("speech")
    other = Collector("other")
    stt_id = f"stt-{uuid.uuid4().hex[:8]}"
    route = ROUTES.get(EventType.SPEECH_DETECTED)
    real = [
        encode(
            route,
            {"text": f"real {n}"},
            event_id=f"known-{n}",
            source=stt_id,
            correlation_id=None,
            metadata=None,
        )[1]
        for n in range(10)
    ]
    async with (
        EventBus(bus_url) as victim,
        EventBus(bus_url, client_id=stt_id) as stt,
        EventBus(bus_url) as attacker,
    ):
        victim.subscribe(EventType.SPEECH_DETECTED, speech)
        victim.subscribe(EventType.RESPONSE_GENERATED, other)
        await victim.ready()
        for n in range(10):
            props = (("id", f"known-{n}"), ("source", stt_id))
            await attacker.publish_message(_message(REPLY, {"response": f"copy {n}"}, props))
        await other.wait(10)
        for message in real:
            await stt.publish_message(message)
        await speech.wait(10)
        for message in real:  # the same messages again (a resend): duplicates
            await stt.publish_message(message)
        await stt.emit(EventType.SPEECH_DETECTED, {"text": "marker"})
        await speech.wait(11)
        assert [e.data["text"] for e in speech.events] == [f"real {n}" for n in range(10)] + [
            "marker"
        ]
        assert len(other.events) == 10


async def test_id_less_messages_are_never_duplicates(bus_url: str) -> None:
    """300 messages whose ids look like the ones the victim gives id-less messages
    (``<prefix>.<n>``) do not suppress 10 later id-less ones, identical or not."""
    speech = Collector("speech")
    async with EventBus(bus_url) as victim, EventBus(bus_url) as attacker:
        victim.subscribe(EventType.SPEECH_DETECTED, speech)
        await victim.ready()
        prefix = victim.client_id.removeprefix("voicebus-")
        for k in range(1, 301):
            props = (("id", f"{prefix}.{k}"),)
            await attacker.publish_message(_message(SPEECH, {"text": f"shaped {k}"}, props))
        await speech.wait(300)
        for n in range(10):  # like Rhasspy: no MQTT 5 properties at all
            text = "same" if n % 2 else f"idless {n}"  # five are the very same message
            await attacker.publish_message(_message(SPEECH, {"text": text}, ()))
        handled = await speech.wait(310)
        assert len([e for e in handled if not e.data["text"].startswith("shaped")]) == 10
        assert len({e.id for e in handled[300:]}) == 10  # each got an id of its own


async def test_a_node_red_style_reply_reaches_the_requester_and_a_bystander(
    mosquitto: Mosquitto,
) -> None:
    """Node-RED answers by passing the request ``msg`` to ``mqtt out``: the reply, on
    another topic, carries the request's user properties (id, source, type, time)
    and correlation data. It is not a duplicate of the request for anyone."""
    seen_request = Collector("requester-sees-request")
    bystander_requests = Collector("bystander-requests")
    bystander_replies = Collector("bystander-replies")
    async with aiomqtt.Client(
        "127.0.0.1", mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as flow:
        await flow.subscribe(SPEECH, qos=1)

        async def node_red() -> None:
            async for msg in flow.messages:
                request = msg.properties
                assert request is not None
                reply = Properties(PacketTypes.PUBLISH)
                reply.UserProperty = list(request.UserProperty)  # msg.userProperties
                if getattr(request, "CorrelationData", None) is not None:
                    reply.CorrelationData = request.CorrelationData  # msg.correlationData
                payload = json.dumps({"response": "It is noon"})
                await flow.publish(REPLY, payload, qos=1, properties=reply)

        responder = asyncio.create_task(node_red())
        try:
            async with (
                EventBus(mosquitto.url()) as requester,
                EventBus(mosquitto.url()) as bystander,
            ):
                requester.subscribe(EventType.SPEECH_DETECTED, seen_request)
                bystander.subscribe(EventType.SPEECH_DETECTED, bystander_requests)
                bystander.subscribe(EventType.RESPONSE_GENERATED, bystander_replies)
                await requester.ready()
                await bystander.ready()
                reply = await requester.request(
                    EventType.SPEECH_DETECTED,
                    {"text": "what time is it"},
                    EventType.RESPONSE_GENERATED,
                    timeout=5,
                )
                assert reply is not None and reply.data["response"] == "It is noon"
                (request,) = await seen_request.wait(1)
                assert (reply.id, reply.source) == (request.id, request.source)  # copied
                assert reply.correlation_id == request.correlation_id
                (copy,) = await bystander_replies.wait(1)
                assert copy.id == request.id and copy.data["response"] == "It is noon"
                assert [e.id for e in await bystander_requests.wait(1)] == [request.id]

                waited = requester.wait_for(EventType.RESPONSE_GENERATED, timeout=5)
                second = await requester.emit(EventType.SPEECH_DETECTED, {"text": "again"})
                answer: Event | None = await waited
                assert answer is not None and answer.id == second.id
        finally:
            responder.cancel()


async def test_a_peer_copying_this_bus_ids_is_still_counted(bus_url: str) -> None:
    """Own events are known by (topic, source, id) noted at emit, not by the id's
    prefix: a peer that gives its events ids shaped like this bus's cannot hide them
    from its history and stats, while the bus's own events are counted once."""
    async with EventBus(bus_url) as victim, EventBus(bus_url) as peer:
        got = Collector()
        victim.subscribe(EventType.SPEECH_DETECTED, got)
        await victim.ready()
        own = await victim.emit(EventType.SPEECH_DETECTED, {"text": "mine"})
        route = ROUTES.get(EventType.SPEECH_DETECTED)
        forged_id = own.id.rpartition("-")[0] + "-" + "0" * 16
        _, message = encode(
            route,
            {"text": "forged"},
            event_id=forged_id,
            source="peer",
            correlation_id=None,
            metadata=None,
        )
        await peer.publish_message(message)
        await got.wait(2)
        # a marker after both: once it is handled, both are recorded (in order)
        await marker(peer, victim)

        def texts() -> list[str]:
            history = victim.get_event_history(EventType.SPEECH_DETECTED)
            return sorted(e.data["text"] for e in history)

        assert texts() == ["forged", "mine"]
        assert victim.get_stats()["metrics"]["events_by_type"]["speech_detected"] == 2
