"""Time and causality in one process: expiry, causality, cancellation, deadlines.

The same behaviour on ``memory://`` and a real Mosquitto (`bus_url`); the
broker-restart and offline-subscriber cases stop their own Mosquitto. Across
processes: tests/test_time_processes.py.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from pathlib import Path

import pytest

from tests.broker import Mosquitto
from tests.helpers import Collector, eventually, marker
from voicebus import Event, EventBus, EventType, RequestCancelled
from voicebus.transport import Message
from voicebus.wire.routes import DEFAULT_TTLS, ROUTES

FAST = {"reconnect_delay": 0.02, "reconnect_max_delay": 0.2}
WAKE = EventType.WAKE_WORD_DETECTED
SPEECH = EventType.SPEECH_DETECTED
REPLY = EventType.RESPONSE_GENERATED


# --- causality ---------------------------------------------------------------------------


async def test_an_emit_in_a_handler_inherits_correlation_and_records_its_parent(
    bus: EventBus, peer: EventBus
) -> None:
    replies = Collector("replies")

    async def llm(event: Event) -> None:
        await peer.emit(REPLY, {"response": "inline"})
        # a task made by the handler carries the context on, even after it returned
        asyncio.get_running_loop().create_task(peer.emit(REPLY, {"response": "task"}))
        await peer.emit(REPLY, {"response": "own"}, correlation_id="other")

    peer.subscribe(SPEECH, llm)
    bus.subscribe(REPLY, replies)
    await peer.ready()
    await bus.ready()
    speech = await bus.emit(SPEECH, {"text": "hi"}, correlation_id="utt-1")
    orphan = await bus.emit(REPLY, {"response": "no handler running"})
    events = {e.data["response"]: e for e in await replies.wait(4)}
    assert events["inline"].correlation_id == "utt-1"
    assert events["inline"].parent_id == speech.id
    assert events["task"].correlation_id == "utt-1"
    assert events["task"].parent_id == speech.id
    assert events["own"].correlation_id == "other"  # a given correlation id wins
    assert events["own"].parent_id == speech.id
    assert orphan.parent_id is None and events["no handler running"].parent_id is None


# --- handler deadlines ----------------------------------------------------------------


async def test_a_handler_past_its_timeout_is_cancelled_dead_lettered_and_dispatch_goes_on(
    bus: EventBus,
) -> None:
    errors = Collector("errors")
    handled: list[str] = []
    cancelled: list[str] = []

    async def slow(event: Event) -> None:
        if event.data["text"] == "slow":
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled.append(event.data["text"])
                raise
        handled.append(event.data["text"])

    bus.subscribe(SPEECH, slow, timeout=0.2)
    bus.subscribe(EventType.ERROR_OCCURRED, errors)
    await bus.ready()
    began = time.monotonic()
    await bus.emit(SPEECH, {"text": "slow"})
    for i in range(10):
        await bus.emit(SPEECH, {"text": f"next{i}"})
    await eventually(lambda: len(handled) == 10, timeout=4)
    assert time.monotonic() - began < 3  # not after the 5 s sleep
    assert handled == [f"next{i}" for i in range(10)] and cancelled == ["slow"]
    (letter,) = bus.get_dead_letter_queue()
    assert letter["reason"] == "handler_timeout" and letter["exception"] == "HandlerTimeout"
    assert letter["event"].data["text"] == "slow"
    (error,) = await errors.wait(1)
    assert error.data["context"] == "speech_detected" and "timeout" in error.data["error"]
    stats = {s["handler"]: s for s in bus.get_stats()["handler_stats"]}
    assert stats[slow.__qualname__]["error_count"] == 1
    assert stats[slow.__qualname__]["call_count"] == 11


async def test_once_takes_a_timeout_and_bad_values_are_refused(bus: EventBus) -> None:
    async def hang(event: Event) -> None:
        await asyncio.sleep(5)

    bus.once(SPEECH, hang, timeout=0.05)
    await bus.emit(SPEECH, {"text": "x"})
    await eventually(lambda: bus.get_dead_letter_queue())
    assert bus.get_dead_letter_queue()[0]["reason"] == "handler_timeout"
    for bad in (0, -1.0, math.nan):
        with pytest.raises(ValueError, match="timeout must be"):
            bus.subscribe(SPEECH, hang, timeout=bad)
        with pytest.raises(ValueError, match="ttl must be"):
            await bus.emit(SPEECH, {"text": "x"}, ttl=bad)


# --- cancellation ------------------------------------------------------------------------


async def test_cancel_ends_the_running_handler_skips_queued_and_late_events_and_waits(
    bus: EventBus, peer: EventBus
) -> None:
    started = asyncio.Event()
    outcome: list[str] = []
    handled: list[str] = []

    async def llm(event: Event) -> None:
        if event.data["text"] == "long":
            started.set()
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise
        handled.append(event.data["text"])

    after = Collector("after")  # a second handler: skipped for the cancelled event
    peer.subscribe(SPEECH, llm)
    peer.subscribe(SPEECH, after, priority=-1)
    await peer.ready()
    await bus.ready()
    waiting = asyncio.ensure_future(peer.wait_for(REPLY, timeout=5, correlation_id="u1"))
    await bus.emit(SPEECH, {"text": "long"}, correlation_id="u1")
    await asyncio.wait_for(started.wait(), 5)
    await bus.emit(SPEECH, {"text": "queued"}, correlation_id="u1")
    await bus.emit(SPEECH, {"text": "other"}, correlation_id="u2")
    await eventually(lambda: peer.get_stats()["queue_size"] == 2)
    await bus.cancel("u1", reason="barge_in")
    with pytest.raises(RequestCancelled, match="barge_in"):
        await waiting
    await bus.emit(SPEECH, {"text": "late"}, correlation_id="u1")
    await marker(bus, peer)
    assert outcome == ["cancelled"]
    assert handled == ["other"] and [e.data["text"] for e in after.events] == ["other"]
    assert peer.get_dead_letter_queue() == []  # cancelled is no failure
    metrics = peer.get_stats()["metrics"]
    assert metrics["handlers_cancelled"] == 1
    assert metrics["events_cancelled"] == 2  # "queued" skipped, "late" dropped
    assert metrics["waits_cancelled"] == 1
    assert metrics["cancellations_received"] == 1
    # the canceller applies it at once, then its own echo (once, idempotent)
    assert bus.get_stats()["metrics"]["cancellations_received"] == 1


async def test_cancel_window_ends_and_cancelled_ids_are_bounded() -> None:
    from voicebus.receive.cancellation import CancelledIds

    ids = CancelledIds(0.05, max_ids=3, max_bytes=1000)
    for n in range(5):
        ids.add(f"c{n}")
    assert "c0" not in ids and "c1" not in ids and "c4" in ids and len(ids) == 3
    ids.add("x" * 999)
    assert len(ids) == 1  # bytes bound
    await asyncio.sleep(0.06)  # the window itself is what is tested
    assert "x" * 999 not in ids and len(ids) == 0
    async with EventBus(f"memory://{uuid.uuid4().hex}", cancel_window=0.2) as bus:
        got = Collector()
        bus.subscribe(SPEECH, got)
        await bus.cancel("u9")
        await bus.emit(SPEECH, {"text": "dropped"}, correlation_id="u9")
        with pytest.raises(RequestCancelled, match="u9"):
            await bus.wait_for(REPLY, timeout=5, correlation_id="u9")  # fails at once
        await asyncio.sleep(0.21)
        await bus.emit(SPEECH, {"text": "after the window"}, correlation_id="u9")
        (event,) = await got.wait(1)
        assert event.data["text"] == "after the window"


# --- expiry ------------------------------------------------------------------------------


def test_route_ttls_default_and_travel_as_message_expiry() -> None:
    from voicebus.transport.mqtt.properties import (
        pack_message_properties,
        unpack_publish_properties,
    )
    from voicebus.wire.codec import encode

    assert ROUTES.get(WAKE).ttl == DEFAULT_TTLS[WAKE] == 5.0
    assert ROUTES.get(EventType.MODEL_LOADED).ttl is None and ROUTES.get(SPEECH).ttl is None

    def message(event_type: EventType, ttl: float | None) -> Message:
        route = ROUTES.get(event_type)
        data = {"text": "x"} if event_type is SPEECH else {}
        kw = {"source": "s", "correlation_id": None, "metadata": None}
        return encode(route, data, event_id="i", ttl=ttl, **kw)[1]  # type: ignore[arg-type]

    def expiry(m: Message) -> int | None:
        return unpack_publish_properties(pack_message_properties(m).pack(), 0)[0].message_expiry

    assert expiry(message(WAKE, None)) == 5
    assert expiry(message(WAKE, 0.3)) == 1  # whole seconds, rounded up
    assert expiry(message(WAKE, math.inf)) is None  # never
    assert expiry(message(SPEECH, None)) is None
    assert expiry(message(SPEECH, 90.5)) == 91


async def test_memory_drops_stale_retained_messages() -> None:
    url = f"memory://{uuid.uuid4().hex}"
    async with EventBus(url) as pub, EventBus(url) as sub:
        stale = Message("test/x/stale", b"{}", 1, True, expires=time.monotonic() + 0.05)
        fresh = Message("test/x/fresh", b"{}", 1, True, expires=time.monotonic() + 60)
        await pub.publish_message(stale)
        await pub.publish_message(fresh)
        await asyncio.sleep(0.06)  # the expiry itself is what is tested
        sub.subscribe("test/x/#", Collector())
        await sub.ready()
        # test/x/ is no route: the fresh one is counted as unrouted, the stale one expired
        await eventually(lambda: sub.get_stats()["metrics"]["unrouted_messages"] == 1)
        assert sub.get_stats()["metrics"]["expired_messages"] == 1


async def test_memory_drops_messages_that_go_stale_while_the_receiver_is_paused() -> None:
    url = f"memory://{uuid.uuid4().hex}"
    gate = asyncio.Event()
    handled: list[str] = []

    async def blocked(event: Event) -> None:
        await gate.wait()
        handled.append(event.type.value)

    async with EventBus(url, max_queue_size=1) as sub, EventBus(url) as pub:
        sub.subscribe("#", blocked)
        await sub.ready()
        await pub.emit(SPEECH, {"text": "first"})  # being handled
        await eventually(lambda: sub.get_stats()["queue_size"] == 0)
        filling = asyncio.ensure_future(pub.emit(SPEECH, {"text": "fills the queue"}))
        await eventually(lambda: sub.get_stats()["queue_size"] == 1)  # and pauses
        stale = asyncio.ensure_future(pub.emit(WAKE, {}, ttl=0.05))  # into the backlog
        await asyncio.sleep(0.1)  # goes stale in the backlog: that is the test
        gate.set()
        await filling
        await stale
        await pub.emit(SPEECH, {"text": "last"})
        await eventually(lambda: len(handled) == 3)
        assert WAKE.value not in handled
        assert sub.get_stats()["metrics"]["expired_messages"] == 1


async def test_the_outbox_drops_a_wake_word_that_went_stale_while_the_broker_was_down(
    fresh_mosquitto: Mosquitto,
) -> None:
    broker = fresh_mosquitto
    got = Collector()
    async with EventBus(broker.url(), **FAST) as bus:
        bus.subscribe(WAKE, got)
        bus.subscribe(SPEECH, got)
        await bus.ready()
        await asyncio.to_thread(broker.stop)
        await eventually(lambda: bus.transport is not None and not bus.transport.connected)  # type: ignore[attr-defined]
        await bus.emit(WAKE, {"siteId": "kitchen"}, ttl=1)
        await bus.emit(SPEECH, {"text": "kept"})
        await asyncio.sleep(1.5)  # down longer than the ttl: that is the test
        await asyncio.to_thread(broker.start)
        (event,) = await got.wait(1, timeout=10)
        await marker(bus)
        assert bus.get_stats()["metrics"]["expired_messages"] == 1
    assert event.type is SPEECH and [e.type for e in got.events] == [SPEECH]
    assert bus.get_stats()["metrics"]["expired_messages"] == 1  # also once stopped


async def test_a_persistent_subscriber_offline_past_the_ttl_gets_no_stale_message(
    mosquitto: Mosquitto,
) -> None:
    url = mosquitto.url()
    client_id = f"offline-{uuid.uuid4().hex[:8]}"
    got = Collector()
    async with EventBus(url, client_id=client_id, session_expiry=60) as sub:
        sub.subscribe(WAKE, got)
        sub.subscribe(SPEECH, got)
        await sub.ready()
    async with EventBus(url) as pub:
        await pub.emit(WAKE, {"siteId": "kitchen"}, ttl=1)
        await pub.emit(WAKE, {"siteId": "hall"}, ttl=30)
        await pub.emit(SPEECH, {"text": "kept"})
    # offline longer than the ttl: that is the test. Mosquitto keeps expiry in whole
    # seconds and drops a message only once "now > received + interval": up to 2 s
    await asyncio.sleep(2.5)
    back = EventBus(url, client_id=client_id, session_expiry=60)
    back.subscribe(WAKE, got)  # before start: the session's messages arrive at once
    back.subscribe(SPEECH, got)
    async with back:
        await got.wait(2)
        await marker(back)
    assert [(e.type, e.data.get("siteId")) for e in got.events] == [
        (WAKE, "hall"),
        (SPEECH, "default"),
    ]


def test_the_readme_ttl_table_is_the_route_table() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
    table = readme.split("| event type | ttl | why |")[1].split("\n\n")[0]
    documented: dict[str, float] = {}
    for row in table.splitlines()[2:]:
        names, ttl = row.split(" | ")[:2]
        for name in names.strip("| ").split(", "):
            documented[name.strip("`")] = float(ttl)
    assert documented == {t.name: ttl for t, ttl in DEFAULT_TTLS.items()}
    assert {r.event_type.name: r.ttl for r in ROUTES if r.ttl is not None} == documented


async def test_a_handler_that_swallows_the_cancellation_does_not_stop_dispatch(
    bus: EventBus,
) -> None:
    handled: list[str] = []
    started = asyncio.Event()

    async def stubborn(event: Event) -> None:
        if event.data["text"] in ("slow", "cancel me"):
            started.set()
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                handled.append("swallowed " + event.data["text"])
                return  # swallowed: the deadline or the cancellation still counts
        handled.append(event.data["text"])

    bus.subscribe(SPEECH, stubborn, timeout=0.3)
    await bus.ready()
    await bus.emit(SPEECH, {"text": "slow"})
    await eventually(lambda: handled, timeout=5)
    started.clear()
    await bus.emit(SPEECH, {"text": "cancel me"}, correlation_id="c1")
    await asyncio.wait_for(started.wait(), 5)
    await bus.cancel("c1")
    await bus.emit(SPEECH, {"text": "after"})
    await eventually(lambda: len(handled) == 3, timeout=5)
    assert handled == ["swallowed slow", "swallowed cancel me", "after"]
    assert [d["reason"] for d in bus.get_dead_letter_queue()] == ["handler_timeout"]
    assert bus.get_stats()["metrics"]["handlers_cancelled"] == 1
    assert bus.is_running


async def test_a_handler_may_cancel_its_own_utterance_and_finish(
    bus: EventBus, peer: EventBus
) -> None:
    finished: list[str] = []
    cancels = Collector("cancels")

    async def barge_in(event: Event) -> None:
        assert event.correlation_id is not None
        await bus.cancel(event.correlation_id, reason="barge_in")
        await asyncio.sleep(0.01)  # still running: it asked, it is not interrupted
        finished.append(event.data["text"])

    bus.subscribe(SPEECH, barge_in)
    peer.subscribe(EventType.CANCELLED, cancels)
    await bus.ready()
    await peer.ready()
    await peer.emit(SPEECH, {"text": "stop"}, correlation_id="u5")
    (cancel,) = await cancels.wait(1)
    await marker(peer, bus)
    assert finished == ["stop"] and cancel.correlation_id == "u5"
    assert bus.get_stats()["metrics"]["handlers_cancelled"] == 0
