"""In-process buses: emit -> one async handler, N events, one loop.

Each returns a `Throughput` (events/s from the first emit until the handler saw
the last one; this process's CPU µs per event). Peers run as their authors show
them: pyee's ``AsyncIOEventEmitter`` (a task per async handler call) yielding to
the loop every 10 emits (its best here: 1, 100 and 1000 were slower, never
yielding slower still); bubus awaiting each dispatch (it keeps its own history;
unawaited dispatches made it slower per event); a bare ``asyncio.Queue`` ->
handler loop (no validation, no envelope: the floor). voicebus validates every
payload with its pydantic model, checks the envelope strings and JSON-encodes the
payload (the MQTT message is made only for a receiver that needs one).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common import BenchEvents, Counter, Throughput, vb_data

from voicebus import Event, EventBus

YIELD_EVERY = 10


async def timed(counter: Counter, n: int, send_all: Callable[[int], Awaitable[None]]) -> Throughput:
    """Run `send_all(n)` (a peer's own loop sending `n` events) and wait until its
    handler saw them all: events/s from the first send until the last was handled,
    and this process's CPU µs per event (zero rate when counting stalled)."""
    counter.reset(n)
    cpu = time.process_time()
    began = time.perf_counter()
    await send_all(n)
    ok = await counter.wait()
    cpu = time.process_time() - cpu
    if not ok:
        return Throughput(0.0, 0.0, counter.count, n)
    return Throughput(n / (counter.reached_at - began), cpu / n * 1e6, n, n)


def warmup(n: int) -> int:
    """Events each peer handles before its timed run (imports, caches, first tasks)."""
    return min(1000, max(n // 10, 1))


async def voicebus_memory(n: int) -> Throughput:
    counter = Counter()
    counter.reset(n)

    async def handler(event: Event) -> None:
        counter.hit()

    async def emit_all(count: int) -> None:
        for seq in range(count):
            await bus.emit(BenchEvents.PING1, vb_data(seq))

    bus = EventBus("memory://bench")
    bus.subscribe(BenchEvents.PING1, handler)
    async with bus:
        await timed(counter, warmup(n), emit_all)
        return await timed(counter, n, emit_all)


async def pyee_memory(n: int) -> Throughput:
    from pyee.asyncio import AsyncIOEventEmitter

    counter = Counter()
    counter.reset(n)
    emitter = AsyncIOEventEmitter()

    async def handler(data: dict[str, Any]) -> None:
        counter.hit()

    emitter.on("ping", handler)

    async def emit_all(count: int) -> None:
        for seq in range(count):
            emitter.emit("ping", vb_data(seq))
            if seq % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)

    await timed(counter, warmup(n), emit_all)
    return await timed(counter, n, emit_all)


async def bubus_memory(n: int) -> Throughput:
    from bubus import BaseEvent
    from bubus import EventBus as BubusBus

    logging.getLogger("bubus").setLevel(logging.ERROR)

    class BubusPing(BaseEvent):  # type: ignore[type-arg]
        seq: int = 0
        text: str = ""

    counter = Counter()
    counter.reset(n)
    bus = BubusBus(name="bench")

    async def handler(event: BubusPing) -> None:
        counter.hit()

    async def dispatch_all(count: int) -> None:
        for seq in range(count):
            await bus.dispatch(BubusPing(**vb_data(seq)))

    bus.on(BubusPing, handler)
    try:
        counter.reset(warmup(n))
        await dispatch_all(warmup(n))
        return await timed(counter, n, dispatch_all)
    finally:
        await bus.stop()


async def queue_memory(n: int) -> Throughput:
    """A plain asyncio.Queue(maxsize=1000) -> async handler loop."""
    counter = Counter()
    counter.reset(n)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)

    async def handler(item: dict[str, Any]) -> None:
        counter.hit()

    async def consume() -> None:
        while True:
            await handler(await queue.get())

    async def put_all(count: int) -> None:
        for seq in range(count):
            await queue.put(vb_data(seq))

    task = asyncio.create_task(consume())
    await put_all(warmup(n))
    while queue.qsize():  # the warm-up handled, then the timed run
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    try:
        return await timed(counter, n, put_all)
    finally:
        task.cancel()
