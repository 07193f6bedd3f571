"""Behaviour of the bus, run on memory:// and on a real Mosquitto alike."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.helpers import Collector, eventually, marker
from voicebus import (
    Event,
    EventBus,
    EventType,
    PayloadValidationError,
    TopicError,
    UnknownEventTypeError,
    VoicebusError,
    topic_for,
)
from voicebus.transport import Message


async def test_priorities_and_overlapping_filters_each_once(bus: EventBus) -> None:
    order: list[str] = []
    done = Collector()

    async def slow_high(event: Event) -> None:
        await asyncio.sleep(0.02)  # part of the test: slow, and still done before the rest
        order.append("high")

    bus.subscribe("hermes/#", lambda e: order.append("all-hermes"), priority=1)
    bus.subscribe("hermes/hotword/+/detected", lambda e: order.append("filter"), priority=5)
    bus.subscribe(EventType.WAKE_WORD_DETECTED, slow_high, priority=10)
    bus.subscribe(EventType.WAKE_WORD_DETECTED, lambda e: order.append("type-a"))
    bus.subscribe(EventType.WAKE_WORD_DETECTED, lambda e: order.append("type-b"))
    bus.subscribe("#", done, priority=-100)
    sent = await bus.emit(EventType.WAKE_WORD_DETECTED, {"confidence": 0.95})
    await done.wait(1)
    stop = await marker(bus)  # a second copy would have come before it (`done` sees both)
    assert order == ["high", "filter", "all-hermes", "type-a", "type-b"]
    assert [e.id for e in done.events] == [sent.id, stop.id]


async def test_sync_and_async_handlers_get_typed_events(bus: EventBus) -> None:
    seen: list[tuple[str, Any]] = []
    got = Collector()

    def sync_handler(event: Event) -> None:
        seen.append(("sync", event.data["text"]))

    async def async_handler(event: Event) -> None:
        seen.append(("async", event.data["confidence"]))

    bus.subscribe(EventType.SPEECH_DETECTED, sync_handler)
    bus.subscribe(EventType.SPEECH_DETECTED, async_handler)
    bus.subscribe(EventType.SPEECH_DETECTED, got)
    sent = await bus.emit(
        EventType.SPEECH_DETECTED,
        {"text": "Hello", "confidence": 0.9},
        source="stt",
        correlation_id="req-1",
        metadata={"user_id": "alice"},
    )
    (event,) = await got.wait(1)
    assert seen == [("sync", "Hello"), ("async", 0.9)]
    assert event.type is EventType.SPEECH_DETECTED
    assert event.id == sent.id
    assert event.source == "stt"
    assert event.correlation_id == "req-1"
    assert event.metadata == {"user_id": "alice"}
    assert event.topic == "hermes/asr/textCaptured"
    assert event.data["likelihood"] == 0.9  # Hermes default taken from confidence
    assert event.data["siteId"] == "default"
    assert "wakewordId" not in event.data and "lang" not in event.data  # None: never on the wire
    assert event.data["sessionId"] == "req-1"  # the correlation id, for peers without MQTT 5


async def test_filter_func_once_and_unsubscribe(bus: EventBus) -> None:
    high = Collector("high")
    first = Collector("first")
    every = Collector("every")
    bus.subscribe(
        EventType.SPEECH_DETECTED, high, filter_func=lambda e: e.data.get("confidence", 0) > 0.8
    )
    bus.once(EventType.SPEECH_DETECTED, first)
    handle = bus.subscribe(EventType.SPEECH_DETECTED, every)
    for confidence in (0.5, 0.9):
        await bus.emit(EventType.SPEECH_DETECTED, {"text": "x", "confidence": confidence})
    await every.wait(2)
    assert [e.data["confidence"] for e in high.events] == [0.9]
    assert [e.data["confidence"] for e in first.events] == [0.5]
    assert bus.unsubscribe(handle) == 1
    assert bus.unsubscribe(high) == 1
    await bus.emit(EventType.SPEECH_DETECTED, {"text": "y", "confidence": 0.99})
    await marker(bus)  # "y" came before it, if at all
    assert len(every.events) == 2 and len(high.events) == 1


async def test_wait_for_timeout_returns_none_and_cleans_up(bus: EventBus) -> None:
    assert await bus.wait_for(EventType.MODEL_LOADED, timeout=0.05) is None
    assert bus.get_stats()["pending_waits"] == 0


async def test_wait_for_is_registered_before_caller_continues(bus: EventBus) -> None:
    waiting = asyncio.ensure_future(bus.wait_for(EventType.MODEL_LOADED, timeout=5))
    await bus.emit(EventType.MODEL_LOADED, {"model": "llama"})
    event = await waiting
    assert event is not None and event.data["model"] == "llama"


async def test_concurrent_waits_get_their_own_correlated_events(
    bus: EventBus, peer: EventBus
) -> None:
    async def responder(event: Event) -> None:
        await peer.emit(
            EventType.MODEL_DOWNLOAD_COMPLETED,
            {"model": event.data["model"]},
            correlation_id=event.correlation_id,
        )

    peer.subscribe(EventType.MODEL_DOWNLOAD_STARTED, responder)
    await peer.ready()
    a = bus.wait_for(EventType.MODEL_DOWNLOAD_COMPLETED, timeout=5, correlation_id="a")
    b = bus.wait_for(EventType.MODEL_DOWNLOAD_COMPLETED, timeout=5, correlation_id="b")
    await bus.emit(EventType.MODEL_DOWNLOAD_STARTED, {"model": "B"}, correlation_id="b")
    await bus.emit(EventType.MODEL_DOWNLOAD_STARTED, {"model": "A"}, correlation_id="a")
    got_a, got_b = await asyncio.gather(a, b)
    assert got_a is not None and got_a.data["model"] == "A"
    assert got_b is not None and got_b.data["model"] == "B"
    reply = await bus.request(
        EventType.MODEL_DOWNLOAD_STARTED, {"model": "C"}, EventType.MODEL_DOWNLOAD_COMPLETED, 5
    )
    assert reply is not None and reply.data["model"] == "C"
    assert bus.get_stats()["pending_waits"] == 0


async def test_handler_may_await_wait_for_without_deadlock(bus: EventBus, peer: EventBus) -> None:
    answers = Collector()

    async def asks(event: Event) -> None:
        reply = await bus.request(
            EventType.RESPONSE_GENERATING,
            {"prompt": event.data["text"]},
            EventType.RESPONSE_GENERATED,
            timeout=5,
        )
        answers(reply)  # type: ignore[arg-type]

    async def llm(event: Event) -> None:
        await peer.emit(
            EventType.RESPONSE_GENERATED,
            {"response": event.data["prompt"].upper()},
            correlation_id=event.correlation_id,
        )

    peer.subscribe(EventType.RESPONSE_GENERATING, llm)
    bus.subscribe(EventType.SPEECH_DETECTED, asks)
    await peer.ready()
    await bus.emit(EventType.SPEECH_DETECTED, {"text": "hi"})
    (reply,) = await answers.wait(1)
    assert reply is not None and reply.data["response"] == "HI"


async def test_failing_handler_dead_letter_and_error_event(bus: EventBus) -> None:
    after = Collector("after")
    errors = Collector("errors")

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    def broken_error_monitor(event: Event) -> None:
        raise RuntimeError("monitor broke")

    bus.subscribe(EventType.TTS_STARTED, broken, priority=5)
    bus.subscribe(EventType.TTS_STARTED, after)
    bus.subscribe(EventType.ERROR_OCCURRED, errors)
    bus.subscribe(EventType.ERROR_OCCURRED, broken_error_monitor)
    await bus.emit(EventType.TTS_STARTED, {"text": "hi", "sessionId": "s1"})
    await after.wait(1)
    (error,) = await errors.wait(1)
    await eventually(lambda: len(bus.get_dead_letter_queue()) == 2)  # the monitor failed
    await marker(bus)  # an ERROR_OCCURRED about it would have come before it
    assert len(errors.events) == 1  # no ERROR_OCCURRED for a failing ERROR_OCCURRED handler
    assert error.topic == "voicebus/error/bus"
    assert error.data["error"] == "boom"
    assert error.data["handler"].endswith("broken")
    assert error.data["context"] == "tts_started"
    assert error.data["sessionId"] == "s1"
    letters = bus.get_dead_letter_queue()
    assert [d["error"] for d in letters] == ["boom", "monitor broke"]
    first = letters[0]
    assert first["event"].type is EventType.TTS_STARTED
    assert first["handler"].endswith("broken") and first["time"] > 0
    assert bus.get_stats()["metrics"]["total_errors"] == 2


async def test_invalid_emit_raises_naming_the_field_and_publishes_nothing(bus: EventBus) -> None:
    everything = Collector()
    bus.subscribe("#", everything)
    with pytest.raises(PayloadValidationError) as info:
        await bus.emit(EventType.SPEECH_DETECTED, {"confidence": 0.9})
    assert "text" in str(info.value) and info.value.fields == ["text"]
    assert isinstance(info.value, VoicebusError)
    with pytest.raises(PayloadValidationError, match="likelihood"):
        await bus.emit(EventType.SPEECH_DETECTED, {"text": "x", "likelihood": "very"})
    with pytest.raises(UnknownEventTypeError, match="did you mean 'speech_detected'"):
        await bus.emit("speech_detectd", {"text": "x"})
    with pytest.raises(TopicError):
        await bus.emit(EventType.WAKE_WORD_DETECTED, {"wakewordId": "a/b"})
    stop = await marker(bus)  # anything published would have come before it
    assert [e.id for e in everything.events] == [stop.id]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "invalid_json"),
        (b"\xff\xfe", "invalid_utf8"),
        (b"[1, 2]", "not_an_object"),
        (b'{"confidence": 0.9}', "validation"),
    ],
)
async def test_invalid_inbound_message_is_a_dead_letter(
    bus: EventBus, payload: bytes, reason: str
) -> None:
    handler = Collector()
    bus.subscribe(EventType.SPEECH_DETECTED, handler)
    await bus.publish_message(Message("hermes/asr/textCaptured", payload))
    await eventually(bus.get_dead_letter_queue)
    (letter,) = bus.get_dead_letter_queue()
    assert letter["reason"] == reason
    assert letter["topic"] == "hermes/asr/textCaptured"
    assert letter["payload"] == payload
    assert letter["handler"] is None
    assert letter["event"].type is EventType.SPEECH_DETECTED
    await bus.emit(EventType.SPEECH_DETECTED, {"text": "still running"})
    (event,) = await handler.wait(1)
    assert event.data["text"] == "still running"


async def test_unknown_topics_outside_and_inside_our_prefix(bus: EventBus) -> None:
    bus.subscribe("#", Collector())
    await bus.publish_message(Message("zigbee2mqtt/lamp", b'{"state": "ON"}'))
    await bus.publish_message(Message("voicebus/nothing/here", b"{}"))
    await eventually(bus.get_dead_letter_queue)
    await marker(bus)  # a second dead letter would have come before it
    letters = bus.get_dead_letter_queue()
    assert [(d["topic"], d["reason"], d["event"]) for d in letters] == [
        ("voicebus/nothing/here", "unknown_topic", None)
    ]
    assert bus.get_stats()["metrics"]["unrouted_messages"] == 1


async def test_middleware_pre_enriches_or_drops_post_runs_after(bus: EventBus) -> None:
    calls: list[str] = []
    got = Collector()

    async def enrich(event: Event) -> None:
        calls.append("pre")
        event.metadata["received_at"] = 1.0

    def drop_health(event: Event) -> bool:
        return event.type is not EventType.HEALTH_CHECK

    def after(event: Event) -> None:
        calls.append("post")

    def handler(event: Event) -> None:
        calls.append("handler")
        got(event)

    bus.add_middleware(enrich, pre=True)
    bus.add_middleware(drop_health)
    bus.add_middleware(after, post=True)
    bus.subscribe("#", handler)
    await bus.emit(EventType.HEALTH_CHECK, {"status": "ok"})
    await bus.emit(EventType.SYSTEM_STARTED)
    (event,) = await got.wait(1)
    stop = await marker(bus)  # a second copy would have come before it (`handler` sees both)
    assert [e.id for e in got.events] == [event.id, stop.id]
    assert event.type is EventType.SYSTEM_STARTED
    assert event.metadata["received_at"] == 1.0
    assert calls == ["pre", "pre", "handler", "post", "pre", "handler", "post"]  # + the marker


async def test_history_and_stats_count_each_event_once(bus: EventBus) -> None:
    got = Collector()
    bus.subscribe(EventType.SPEECH_DETECTED, got)
    for i in range(3):
        await bus.emit(EventType.SPEECH_DETECTED, {"text": str(i)})
    await bus.emit(EventType.MODEL_LOADED, {"model": "m"})  # no subscriber: counted on emit
    await got.wait(3)
    await marker(bus)  # a copy counted twice would have come before it; the marker counts too
    stats = bus.get_stats()
    assert stats["metrics"]["total_events"] == 4 + 1
    assert stats["metrics"]["events_by_type"] == {
        "speech_detected": 3,
        "model_loaded": 1,
        "system_stopped": 1,
    }
    handler_stat, marker_stat = stats["handler_stats"]
    assert marker_stat["handler"] == "marker"
    assert handler_stat["call_count"] == 3 and handler_stat["average_duration"] >= 0
    history = bus.get_event_history()
    assert [e.type for e in history].count(EventType.SPEECH_DETECTED) == 3
    only = bus.get_event_history(EventType.SPEECH_DETECTED, limit=2)
    assert [e.data["text"] for e in only] == ["1", "2"]


async def test_two_services_talk_and_topic_params_round_trip(bus: EventBus, peer: EventBus) -> None:
    got = Collector()
    peer.subscribe(EventType.WAKE_WORD_DETECTED, got)
    await peer.ready()
    await bus.emit(EventType.WAKE_WORD_DETECTED, {"wakewordId": "porcupine", "siteId": "kitchen"})
    (event,) = await got.wait(1)
    assert event.topic == "hermes/hotword/porcupine/detected"
    assert event.data["wakewordId"] == "porcupine"
    assert event.data["modelId"] == "porcupine"
    assert event.data["siteId"] == "kitchen"
    assert topic_for(EventType.WAKE_WORD_DETECTED, {"modelId": "jarvis"}) == (
        "hermes/hotword/jarvis/detected"
    )


async def test_backpressure_delivers_everything_in_order(bus_url: str) -> None:
    async with EventBus(bus_url, max_queue_size=5) as bus:
        got: list[int] = []
        done = asyncio.Event()

        async def slow(event: Event) -> None:
            await asyncio.sleep(0.001)  # part of the test: a slow handler fills the queue
            got.append(event.data["progress"])
            if len(got) == 200:
                done.set()

        bus.subscribe(EventType.MODEL_DOWNLOAD_PROGRESS, slow)
        for i in range(200):
            await bus.emit(EventType.MODEL_DOWNLOAD_PROGRESS, {"model": "m", "progress": i})
        await asyncio.wait_for(done.wait(), 10)
        assert got == list(range(200))
        assert bus.get_stats()["queue_size"] == 0


async def test_subscribe_before_start_and_stop_is_clean(bus_url: str) -> None:
    bus = EventBus(bus_url)
    got = Collector()
    bus.subscribe(EventType.SYSTEM_STARTED, got)
    await bus.start()
    await bus.start()  # idempotent
    await bus.emit(EventType.SYSTEM_STARTED)
    await got.wait(1)
    await bus.stop()
    assert not bus.is_running
    await bus.stop()


async def test_request_with_invalid_payload_leaves_no_pending_wait(bus: EventBus) -> None:
    with pytest.raises(PayloadValidationError):
        await bus.request(EventType.SPEECH_DETECTED, {}, EventType.RESPONSE_GENERATED, 1)
    assert bus.get_stats()["pending_waits"] == 0


async def test_handlers_may_emit_while_stop_drains(bus_url: str) -> None:
    bus = EventBus(bus_url)
    replies = Collector()
    answering = asyncio.Event()

    async def answer(event: Event) -> None:
        answering.set()
        await asyncio.sleep(0.05)  # part of the test: still running when stop() begins
        await bus.emit(EventType.RESPONSE_GENERATED, {"response": "late"})

    bus.subscribe(EventType.RESPONSE_GENERATING, answer)
    bus.subscribe(EventType.RESPONSE_GENERATED, replies)
    await bus.start()
    await bus.emit(EventType.RESPONSE_GENERATING, {"prompt": "p"})
    await asyncio.wait_for(answering.wait(), 5)
    await bus.stop()
    assert not bus.is_running
    assert bus.transport is None
    assert [e.data["response"] for e in replies.events] == ["late"]


async def test_handler_stats_stay_one_entry_per_handler_for_repeated_once(bus: EventBus) -> None:
    got = Collector("one_shot")
    for i in range(3):
        bus.once(EventType.HEALTH_CHECK, got)
        await bus.emit(EventType.HEALTH_CHECK, {"status": str(i)})
        await got.wait(i + 1)
    (entry,) = [h for h in bus.get_stats()["handler_stats"] if h["handler"] == "one_shot"]
    assert entry["call_count"] == 3


async def test_a_wait_cancelled_before_it_starts_leaves_nothing_behind(bus: EventBus) -> None:
    task = asyncio.ensure_future(bus.wait_for(EventType.MODEL_LOADED, timeout=5))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del task
    import gc

    def collected() -> bool:  # once the loop drops its last references to the task
        gc.collect()
        return bool(bus.get_stats()["pending_waits"] == 0)

    await eventually(collected)
    assert bus.get_stats()["pending_waits"] == 0
    assert await asyncio.wait_for(bus.wait_for(EventType.MODEL_LOADED, timeout=0.01), 1) is None
    assert bus.get_stats()["pending_waits"] == 0


async def test_same_id_from_two_sources_is_two_events(bus: EventBus) -> None:
    got = Collector()
    bus.subscribe(EventType.HEALTH_CHECK, got)
    for source in ("sensor-a", "sensor-b", "sensor-a"):  # the last one is a repeat
        props = (("id", "1"), ("source", source), ("type", "health_check"))
        await bus.publish_message(Message("voicebus/system/health", b"{}", 1, False, None, props))
    await got.wait(2)
    await marker(bus)  # the repeat would have come before it
    assert [e.source for e in got.events] == ["sensor-a", "sensor-b"]
