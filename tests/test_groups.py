"""Scale-out: `subscribe(..., group=...)` (MQTT 5 shared subscriptions) on both transports."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from tests.helpers import Collector, eventually, marker
from voicebus import EventBus, EventType


async def _wait_total(collectors: list[Collector], n: int, timeout: float = 10.0) -> None:
    await eventually(lambda: sum(len(c.events) for c in collectors) >= n, timeout)


async def test_three_workers_in_a_group_split_300_events(bus_url: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        workers = [await stack.enter_async_context(EventBus(bus_url)) for _ in range(3)]
        handled = [Collector(f"worker{i}") for i in range(3)]
        for bus, got in zip(workers, handled, strict=True):
            bus.subscribe(EventType.SPEECH_DETECTED, got, group="llm-workers")
            await bus.ready()
        monitor = Collector("monitor")  # a plain subscriber still sees every event
        pub = await stack.enter_async_context(EventBus(bus_url))
        pub.subscribe(EventType.SPEECH_DETECTED, monitor)
        await asyncio.gather(
            *(pub.emit(EventType.SPEECH_DETECTED, {"text": f"e{i}"}) for i in range(300))
        )
        await _wait_total(handled, 300)
        await monitor.wait(300)
        await marker(pub, *workers, pub)  # a duplicate would have come before it
        texts = Counter(e.data["text"] for got in handled for e in got.events)
        assert len(texts) == 300 and set(texts.values()) == {1}
        assert all(len(got.events) >= 50 for got in handled), [len(g.events) for g in handled]
        assert len(monitor.events) == 300


async def test_a_bus_with_a_group_and_a_plain_subscription_runs_both(bus_url: str) -> None:
    """One service both works in a group and logs every event: the plain handler
    sees all events, the group handlers of both instances split them."""
    async with EventBus(bus_url) as a, EventBus(bus_url) as b, EventBus(bus_url) as pub:
        log_a = Collector("log_a")
        work_a, work_b = Collector("work_a"), Collector("work_b")
        a.subscribe(EventType.SPEECH_DETECTED, log_a)
        a.subscribe(EventType.SPEECH_DETECTED, work_a, group="llm-workers")
        b.subscribe(EventType.SPEECH_DETECTED, work_b, group="llm-workers")
        await a.ready()
        await b.ready()
        for i in range(20):
            await pub.emit(EventType.SPEECH_DETECTED, {"text": f"e{i}"})
        await _wait_total([work_a, work_b], 20)
        await log_a.wait(20)
        await marker(pub, a, b)  # nothing more comes
        assert len(log_a.events) == 20
        assert len(work_a.events) + len(work_b.events) == 20
        assert work_a.events and work_b.events
