"""Overlapping filters at flat cost: the broker is subscribed only to a covering set
of a bus's filters (`transport/mqtt/session_filters.py`), the bus matches locally.

Counted on a real Mosquitto: with 100 overlapping filters that all match, the
broker sends one PUBLISH per event, and every handler still runs once, in
priority order. Retained messages, adding and removing a cover while events
flow, and a persistent session across a broker restart.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from enum import Enum

import pytest

from tests.broker import Mosquitto
from tests.helpers import Collector, eventually, marker
from voicebus import EventBus
from voicebus.transport import Message, parse_url
from voicebus.transport.mqtt import MqttOptions
from voicebus.transport.mqtt.transport import MqttTransport
from voicebus.wire.models import Payload
from voicebus.wire.routes import ROUTES, register_route
from voicebus.wire.topics import covers, subsumes

TOPIC = "vbtest/a/b/c/d/e/f"


class Deep(str, Enum):
    EVENT = "covering_test_event"


class Seq(Payload):
    seq: int = 0


@pytest.fixture(autouse=True)
def deep_route() -> Iterator[None]:
    register_route(Deep.EVENT, TOPIC, Seq)
    yield
    ROUTES.unregister(Deep.EVENT)


def overlapping(count: int) -> list[str]:
    """`count` distinct filters that all match `TOPIC`, the widest (``vbtest/#``) last."""
    levels = TOPIC.split("/")[1:]
    found: list[str] = []
    for size in range(len(levels), -1, -1):
        for wild in itertools.product((False, True), repeat=size):
            head = ["+" if w else lv for w, lv in zip(wild, levels[:size], strict=True)]
            if size == len(levels):
                found.append("/".join(["vbtest", *head]))
            found.append("/".join(["vbtest", *head, "#"]))
    found.remove("vbtest/#")
    return [*found[: count - 1], "vbtest/#"]


def _transport(bus: EventBus) -> MqttTransport:
    transport = bus.transport
    assert isinstance(transport, MqttTransport)
    return transport


def _wire(bus: EventBus) -> set[str]:
    """The filters the broker is subscribed to (voicebus's own ones left out)."""
    return {f for f in _transport(bus)._subscriber.filters.wire if not f.startswith("voicebus/")}


@pytest.fixture
async def peer_of(mosquitto: Mosquitto) -> AsyncIterator[EventBus]:
    async with EventBus(mosquitto.url()) as peer:
        yield peer


def test_subsumes_and_covers() -> None:
    assert subsumes("a/#", "a") and subsumes("a/#", "a/+/c") and subsumes("a/+", "a/b")
    assert not subsumes("a/+", "a/#") and not subsumes("a/b/#", "a/#")
    assert not subsumes("#", "$SYS/#") and not subsumes("a/+/c", "a/b/+")
    assert subsumes("#", "+/#") and subsumes("+/#", "#")  # the same topics ...
    assert covers("#", "+/#") != covers("+/#", "#")  # ... exactly one of them is needed
    assert not covers("a/#", "a/#")
    assert len(set(overlapping(100))) == 100


async def test_100_overlapping_filters_cost_one_publish_per_event(
    mosquitto: Mosquitto, peer_of: EventBus
) -> None:
    log: list[str] = []
    handlers = [Collector(f"h{i}", log) for i in range(100)]
    async with EventBus(mosquitto.url()) as bus:
        for priority, (topic_filter, handler) in enumerate(
            zip(overlapping(100), handlers, strict=True)
        ):
            bus.subscribe(topic_filter, handler, priority=priority)
        await bus.ready()
        assert _wire(bus) == {"vbtest/#"}
        assert len([f for f in bus.get_stats()["broker_filters"] if f.startswith("vbtest")]) == 100
        before = _transport(bus).publishes_received
        for seq in range(20):
            await peer_of.emit(Deep.EVENT, {"seq": seq})
        await marker(peer_of, bus)  # nothing more comes
        assert _transport(bus).publishes_received - before == 20 + 1  # + the marker
        for handler in handlers:
            assert [e.data["seq"] for e in handler.events] == list(range(20))
        assert log == [f"h{i}" for i in range(99, -1, -1)] * 20  # priority order, each once


async def test_a_covered_filter_still_gets_the_retained_messages(bus_url: str) -> None:
    """As a subscription to a filter of its own would: a new covered filter gets the
    retained messages it matches; one put back on the wire when its cover goes gets
    none again (it had them)."""
    async with EventBus(bus_url) as bus, EventBus(bus_url) as peer:
        retained = Message(TOPIC, b'{"seq": 7}', retain=True)
        await peer.publish_message(retained)
        try:
            wide, narrow = Collector("wide"), Collector("narrow")
            cover = bus.subscribe("vbtest/#", wide)
            await wide.wait(1)
            bus.subscribe("vbtest/a/+/c/d/e/f", narrow)
            (event,) = await narrow.wait(1)
            assert event.data["seq"] == 7
            bus.unsubscribe(cover)
            await bus.ready()
            await marker(peer, bus)
            assert len(narrow.events) == 1
        finally:
            await peer.publish_message(Message(TOPIC, b"", retain=True))


async def test_removing_and_adding_a_cover_while_events_flow_loses_nothing(
    mosquitto: Mosquitto, peer_of: EventBus
) -> None:
    wide, narrow = Collector("wide"), Collector("narrow")
    async with EventBus(mosquitto.url()) as bus:
        bus.subscribe("vbtest/a/+/c/d/e/f", narrow)
        cover = bus.subscribe("vbtest/#", wide)
        await bus.ready()
        assert _wire(bus) == {"vbtest/#"}

        async def publish() -> None:
            for seq in range(600):
                await peer_of.emit(Deep.EVENT, {"seq": seq})

        publishing = asyncio.ensure_future(publish())
        await narrow.wait(20, timeout=10)
        bus.unsubscribe(cover)  # the narrow filter is subscribed before the cover goes
        await bus.ready()
        assert _wire(bus) == {"vbtest/a/+/c/d/e/f"}
        seen = len(narrow.events)
        await narrow.wait(seen + 20, timeout=10)
        cover = bus.subscribe("vbtest/#", wide)  # subscribed before the narrow one goes
        await bus.ready()
        assert _wire(bus) == {"vbtest/#"}
        await publishing
        await marker(peer_of, bus)
        assert [e.data["seq"] for e in narrow.events] == list(range(600))
        assert not publishing.exception()


async def test_a_persistent_session_keeps_the_covering_set_across_a_restart(
    fresh_mosquitto: Mosquitto,
) -> None:
    broker = fresh_mosquitto
    url = broker.url()
    wide, narrow = Collector("wide"), Collector("narrow")
    bus = EventBus(url, client_id=f"cover-{uuid.uuid4().hex[:8]}", session_expiry=3600)
    async with bus:
        bus.subscribe("vbtest/a/+/c/d/e/f", narrow)
        cover = bus.subscribe("vbtest/#", wide)
        await bus.ready()
        transport = _transport(bus)
        await asyncio.to_thread(broker.stop)
        await eventually(lambda: not transport.connected)
        bus.unsubscribe(cover)  # no link: owed to the persistent session
        await bus.ready()
        await asyncio.to_thread(broker.start)
        await eventually(lambda: transport.reconnects == 1 and transport.online, 15)
        assert transport.session_present
        assert _wire(bus) == {"vbtest/a/+/c/d/e/f"}
        assert not transport._subscriber.filters.dropped
        async with EventBus(url) as peer:
            before = transport.publishes_received
            for seq in range(5):
                await peer.emit(Deep.EVENT, {"seq": seq})
            await marker(peer, bus)
            # one copy each: the broker no longer has the cover the bus dropped offline
            assert transport.publishes_received - before == 5 + 1
        assert [e.data["seq"] for e in narrow.events] == list(range(5))
        assert wide.events == []

        cover = bus.subscribe("vbtest/#", wide)
        await bus.ready()
        await asyncio.to_thread(broker.restart)
        await eventually(lambda: transport.reconnects == 2 and transport.online, 15)
        assert _wire(bus) == {"vbtest/#"}
        async with EventBus(url) as peer:
            before = transport.publishes_received
            for seq in range(5, 10):
                await peer.emit(Deep.EVENT, {"seq": seq})
            await marker(peer, bus)
            assert transport.publishes_received - before == 5 + 1
        assert [e.data["seq"] for e in narrow.events] == list(range(10))
        assert [e.data["seq"] for e in wide.events] == list(range(5, 10))


async def test_a_group_is_neither_covered_nor_a_cover(mosquitto: Mosquitto) -> None:
    """A shared subscription hands each message to one member of the group: a plain
    cover of the same topics does not stand in for it, nor it for a plain filter."""
    url = mosquitto.url()
    async with EventBus(url) as a, EventBus(url) as b, EventBus(url) as pub:
        log_a, work_a, work_b = Collector("log_a"), Collector("work_a"), Collector("work_b")
        a.subscribe("vbtest/#", log_a)
        a.subscribe(Deep.EVENT, work_a, group="deep-workers")
        b.subscribe(Deep.EVENT, work_b, group="deep-workers")
        await a.ready()
        await b.ready()
        assert _wire(a) == {"vbtest/#", f"$share/deep-workers/{TOPIC}"}
        for seq in range(20):
            await pub.emit(Deep.EVENT, {"seq": seq})
        await eventually(lambda: len(work_a.events) + len(work_b.events) == 20)
        await log_a.wait(20)
        await marker(pub, a, b)
        assert [e.data["seq"] for e in log_a.events] == list(range(20))
        assert sorted(e.data["seq"] for e in work_a.events + work_b.events) == list(range(20))
        assert work_a.events and work_b.events


async def test_a_covered_filter_added_offline_gets_the_retained_messages_on_reconnect(
    fresh_mosquitto: Mosquitto,
) -> None:
    """A persistent session keeps the cover on the broker, so re-subscribing it brings
    no retained messages: the covered filter added while offline fetches its own."""
    broker = fresh_mosquitto
    url = broker.url()
    bus = EventBus(url, client_id=f"fetch-{uuid.uuid4().hex[:8]}", session_expiry=3600)
    async with bus, EventBus(url) as peer:
        await peer.publish_message(Message(TOPIC, b'{"seq": 3}', retain=True))
        wide, narrow = Collector("wide"), Collector("narrow")
        bus.subscribe("vbtest/#", wide)
        await wide.wait(1)
        transport = _transport(bus)
        await asyncio.to_thread(broker.stop)
        await eventually(lambda: not transport.connected)
        bus.subscribe("vbtest/a/+/c/d/e/f", narrow)  # covered, no link
        await asyncio.to_thread(broker.start)
        await eventually(lambda: transport.reconnects == 1 and transport.online, 15)
        assert transport.session_present
        (event,) = await narrow.wait(1)
        assert event.data["seq"] == 3
        assert _wire(bus) == {"vbtest/#"}


async def test_filters_subscribed_before_start_send_the_covers_first(
    mosquitto: Mosquitto, peer_of: EventBus
) -> None:
    got = Collector("narrowest")
    bus = EventBus(mosquitto.url())
    bus.subscribe(TOPIC, got)  # the narrowest first, the widest last
    for topic_filter in overlapping(100)[:-1]:
        bus.subscribe(topic_filter, lambda e: None)
    bus.subscribe("vbtest/#", lambda e: None)
    async with bus:
        await bus.ready()
        assert _wire(bus) == {"vbtest/#"}
        before = _transport(bus).publishes_received
        await peer_of.emit(Deep.EVENT, {"seq": 1})
        await marker(peer_of, bus)
        assert _transport(bus).publishes_received - before == 1 + 1
        assert [e.data["seq"] for e in got.events] == [1]


def test_the_wire_stays_a_minimal_covering_set_through_any_adds_and_removes() -> None:
    """A pure check of `SessionFilters`: after every add and remove, each wanted plain
    filter is on the wire or covered by a wire filter, no wire filter covers another,
    groups are always on the wire, and each filter is delivered at its QoS by at
    least one wire filter."""
    import random

    from voicebus.transport.mqtt.session_filters import SessionFilters

    rng = random.Random(13)
    pool = [*overlapping(40), "#", "+/#", "other/+", "$share/g/vbtest/#", "vbtest/+/x"]
    for _ in range(30):
        filters = SessionFilters()
        wanted: dict[str, int] = {}
        for step in range(60):
            topic_filter = rng.choice(pool)
            if topic_filter in wanted and rng.random() < 0.5:
                change = filters.remove(topic_filter)
                del wanted[topic_filter]
                assert topic_filter not in change.subscribe
            elif topic_filter not in wanted:
                wanted[topic_filter] = qos = rng.choice((0, 1))
                change = filters.add(topic_filter, step + 1, qos)
                assert not set(change.subscribe) & set(change.unsubscribe)
            for gone in change.unsubscribe:
                filters.gone(gone)
            wire = filters.wire
            assert set(wire) <= set(wanted)
            plain = [f for f in wanted if not f.startswith("$share/")]
            for f in wanted:
                if f.startswith("$share/"):
                    assert f in wire
                elif f not in wire:
                    assert any(covers(w, f) for w in wire if not w.startswith("$share/"))
            for w in wire:
                assert not any(covers(v, w) for v in wire if v != w and w in plain)
            for f in plain:  # delivered at its QoS by at least one wire filter
                assert max(wire[w] for w in wire if w == f or covers(w, f)) >= wanted[f]


async def test_overlaps_no_filter_covers_still_reach_each_handler_once(
    mosquitto: Mosquitto,
) -> None:
    """``vbtest/+/b/...`` and ``vbtest/a/+/...`` both stay on the wire (neither covers
    the other): the broker sends two copies, told apart by subscription identifiers,
    also for a message without an id (a peer without MQTT 5 properties)."""
    left, right = Collector("left"), Collector("right")
    async with EventBus(mosquitto.url()) as bus:
        bus.subscribe("vbtest/+/b/c/d/e/f", left)
        bus.subscribe("vbtest/a/+/c/d/e/f", right)
        bus.subscribe("vbtest/a/+/c/d/e/+", lambda e: None)  # covers the one above
        await bus.ready()
        assert _wire(bus) == {"vbtest/+/b/c/d/e/f", "vbtest/a/+/c/d/e/+"}
        raw = MqttTransport(
            parse_url(mosquitto.url()), MqttOptions(client_id=f"raw-{uuid.uuid4().hex[:6]}")
        )
        await raw.connect(lambda m: None)
        try:
            for seq in (1, 1, 2):  # a real repeat is not a copy
                await raw.publish(Message(TOPIC, b'{"seq": %d}' % seq))
        finally:
            await raw.close()
        await left.wait(3)
        await right.wait(3)
        async with EventBus(mosquitto.url()) as peer:
            await marker(peer, bus)
        assert [e.data["seq"] for e in left.events] == [1, 1, 2]
        assert [e.data["seq"] for e in right.events] == [1, 1, 2]
