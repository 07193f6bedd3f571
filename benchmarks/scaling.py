"""How voicebus's cost per event grows: distinct topics, matching wildcard filters,
handlers on one type; and its memory over a million ``memory://`` events.

Every cell is this process's CPU µs per event (sender and receiver buses in one
process; the broker not counted), N events emitted one after the other with at
most `WINDOW` not yet handled (an end-to-end window: at QoS 0 nothing else stops
a sender from outrunning a receiver that gets 100 copies per event, and the
broker then drops messages). The handlers are trivial sync functions; the one
that counts is subscribed last (equal priorities run in subscription order), so
all have run when it reaches N.
"""

from __future__ import annotations

import gc
import os
import time
from enum import Enum
from typing import Any

from common import (
    DEEP_TOPIC,
    PING,
    BenchEvents,
    Counter,
    Throughput,
    vb_data,
    wildcard_filters,
)

import voicebus
from voicebus import Event, EventBus

WINDOW = 100
"""Events emitted but not yet handled, at most (see the module doc)."""


class SiteEvents(str, Enum):
    SITE = "bench_site"


def register_site_route() -> None:
    if SiteEvents.SITE not in voicebus.ROUTES:
        from common import Ping

        voicebus.register_route(SiteEvents.SITE, "bench/vb/{siteId}/site", Ping, qos=0)


async def scaled(url: str, n: int, kind: str, k: int) -> Throughput:
    """CPU per event with `k` of `kind`: ``topics`` (distinct topics, one
    subscription), ``filters`` (matching wildcard filters, a subscription each) or
    ``handlers`` (subscriptions on one event type)."""
    counter = Counter()
    calls = [0]

    def other(event: Event) -> None:
        calls[0] += 1

    def counting(event: Event) -> None:
        counter.hit()

    receiver = EventBus(url)
    event_type: Enum
    if kind == "filters":
        event_type = BenchEvents.DEEP
        for topic_filter in wildcard_filters(k)[1:]:
            receiver.subscribe(topic_filter, other)
        receiver.subscribe(DEEP_TOPIC, counting)
    elif kind == "topics":
        event_type = SiteEvents.SITE
        receiver.subscribe(event_type, counting)
    else:
        event_type = PING[0]
        for _ in range(k - 1):
            receiver.subscribe(event_type, other)
        receiver.subscribe(event_type, counting)
    sites = [f"site{i}" for i in range(k)]

    def data(seq: int) -> dict[str, Any]:
        if kind == "topics":
            return {**vb_data(seq), "siteId": sites[seq % k]}
        return vb_data(seq)

    async with receiver, EventBus(url) as sender:
        await receiver.ready()
        warmup = min(500, max(n // 10, 1))
        for count, start in ((warmup, 0), (n, warmup)):
            counter.reset(count)
            cpu = time.process_time()
            for seq in range(count):
                if seq - counter.count >= WINDOW and not await counter.until(seq - WINDOW // 2):
                    return Throughput(0.0, 0.0, counter.count, count)
                await sender.emit(event_type, data(start + seq))
            if not await counter.wait():
                return Throughput(0.0, 0.0, counter.count, count)
            cpu = time.process_time() - cpu
        return Throughput(n / cpu if cpu else 0.0, cpu / n * 1e6, n, n)


def rss_mb() -> float:
    """This process's resident set size in MB (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


async def memory_rss(first: int, total: int) -> tuple[float, float, float]:
    """RSS (MB) before, after `first` and after `total` memory:// events, one bus
    emitting to its own async handler (history, stats and de-dup caches filling up)."""
    counter = Counter()

    async def handler(event: Event) -> None:
        counter.hit()

    bus = EventBus("memory://rss")
    bus.subscribe(BenchEvents.PING1, handler)
    samples: list[float] = []
    async with bus:
        gc.collect()
        samples.append(rss_mb())
        counter.reset(total)
        began = time.perf_counter()
        for seq in range(total):
            await bus.emit(BenchEvents.PING1, vb_data(seq))
            if seq + 1 == first:
                gc.collect()
                samples.append(rss_mb())
        await counter.wait()
        gc.collect()
        samples.append(rss_mb())
    del began
    return samples[0], samples[1], samples[2]
