"""memory://: an emitted event is handed over without its MQTT message
(`InProcessTransport.publish_local`); the message is made only for a receiver
that needs it, and every receiver sees the same event either way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import voicebus.wire.handover as handover
from tests.helpers import Collector
from voicebus import Event, EventBus, EventType
from voicebus.wire.events import ReadOnlyEvent
from voicebus.wire.routes import ROUTES, RouteTable

DATA = {"text": "lights on", "confidence": 0.5, "siteId": "kitchen"}


def _seen(event: Event) -> tuple[Any, ...]:
    return (
        type(event), event.type, event.data, event.id, event.source, event.timestamp,
        event.correlation_id, event.metadata, event.topic, event.parent_id,
    )  # fmt: skip


def _no_message(*args: object) -> None:
    raise AssertionError("no receiver here needs the MQTT message")


async def test_no_message_is_made_when_every_receiver_takes_the_hand_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handover, "to_message", _no_message)
    got = Collector()
    async with EventBus("memory://handover-none") as bus:
        bus.subscribe(EventType.SPEECH_DETECTED, got)
        await bus.ready()  # (while a subscription is pending, emit waits for it: a message)
        sent = await bus.emit(EventType.SPEECH_DETECTED, DATA, correlation_id="c1")
        (event,) = await got.wait(1)
    assert type(event) is ReadOnlyEvent and event.data == sent.data
    assert (event.id, event.source, event.correlation_id) == (sent.id, sent.source, "c1")


async def test_a_paused_receiver_gets_the_message_in_turn_with_the_same_events() -> None:
    url = "memory://handover-paused"
    gate = asyncio.Event()
    slow: list[Event] = []
    quick = Collector()

    async def blocked(event: Event) -> None:
        await gate.wait()
        slow.append(event)

    async with (
        EventBus(url, max_queue_size=2) as paused,
        EventBus(url) as free,
        EventBus(url) as sender,
    ):
        paused.subscribe(EventType.SPEECH_DETECTED, blocked)
        free.subscribe(EventType.SPEECH_DETECTED, quick)
        await paused.ready()
        await free.ready()
        emitting = asyncio.gather(
            *[sender.emit(EventType.SPEECH_DETECTED, {**DATA, "n": n}) for n in range(8)]
        )
        await quick.wait(3)
        assert not emitting.done()  # the sender waits for room in the paused receiver
        gate.set()
        await asyncio.wait_for(emitting, 5)
        await quick.wait(8)
        for _ in range(100):
            if len(slow) == 8:
                break
            await asyncio.sleep(0.01)
    assert [e.data["n"] for e in slow] == list(range(8))
    assert [_seen(e) for e in slow] == [_seen(e) for e in quick.events]


async def test_a_bus_with_another_route_table_decodes_the_message_to_the_same_event() -> None:
    url = "memory://handover-routes"
    table = RouteTable([ROUTES.get(EventType.CANCELLED), ROUTES.get(EventType.SPEECH_DETECTED)])
    same, other = Collector(), Collector()
    async with EventBus(url) as sender, EventBus(url, routes=table) as decoding:
        sender.subscribe(EventType.SPEECH_DETECTED, same)
        decoding.subscribe(EventType.SPEECH_DETECTED, other)
        await decoding.ready()
        await sender.emit(
            EventType.SPEECH_DETECTED, DATA, correlation_id="c2", metadata={"k": [1, "v"]}
        )
        (a,) = await same.wait(1)
        (b,) = await other.wait(1)
    assert _seen(a) == _seen(b)


async def test_a_publisher_waiting_for_a_paused_receiver_is_freed_when_it_stops() -> None:
    """The receiver's bus stops while a publisher waits for room in it: the
    publisher goes on (it used to spin, the CPU at 100%, waiting for a resume that
    could not come)."""
    url = "memory://handover-stopped"
    gate = asyncio.Event()

    async def blocked(event: Event) -> None:
        await gate.wait()

    async with EventBus(url) as sender:
        receiver = EventBus(url, max_queue_size=2)
        receiver.subscribe(EventType.SPEECH_DETECTED, blocked)
        await receiver.ready()
        emitting = asyncio.gather(
            *[sender.emit(EventType.SPEECH_DETECTED, {**DATA, "n": n}) for n in range(6)]
        )
        await asyncio.sleep(0.05)
        assert not emitting.done()
        await receiver.stop(drain_timeout=0.05)
        await asyncio.wait_for(emitting, 5)


async def test_a_publisher_that_never_waits_gives_the_receivers_a_turn() -> None:
    """Every `TURN_EVERY` hand-overs the emit yields once: the receiving dispatcher
    keeps up (its queue stays ~64 deep) instead of waiting for `max_queue_size`."""
    from voicebus.transport.memory import TURN_EVERY

    handled: list[int] = []
    deepest = 0
    async with EventBus("memory://handover-turns") as sender, EventBus(
        "memory://handover-turns"
    ) as receiver:
        receiver.subscribe(EventType.SPEECH_DETECTED, lambda e: handled.append(1))
        await receiver.ready()
        for number in range(1, 5 * TURN_EVERY + 1):
            await sender.emit(EventType.SPEECH_DETECTED, {"text": str(number)})
            deepest = max(deepest, number - len(handled))
        assert receiver.get_stats()["max_queue_size"] > 5 * TURN_EVERY  # never paused
    assert len(handled) >= 4 * TURN_EVERY  # it ran while the publisher went on
    assert deepest <= TURN_EVERY
