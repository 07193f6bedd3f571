"""What every part of the benchmark shares: routes, payloads, counters, statistics."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import voicebus
from voicebus.wire.models import Payload

HOST = "127.0.0.1"
INFLIGHT = 100
STALL_SECONDS = 5.0
TEXT = "x" * 58  # makes the JSON payload 100 bytes for a 5-digit seq
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
QUIET = logging.getLogger("bench.quiet")
QUIET.setLevel(logging.CRITICAL)  # aiomqtt warns per publish past 10 pending: 100 are


class BenchEvents(str, Enum):
    PING0 = "bench_ping0"
    PING1 = "bench_ping1"
    REQUEST0 = "bench_request0"
    REPLY0 = "bench_reply0"
    REQUEST1 = "bench_request1"
    REPLY1 = "bench_reply1"
    DEEP = "bench_deep"


class Ping(Payload):
    """A benchmark message."""

    seq: int = 0
    text: str = ""


DEEP_TOPIC = "bench/vb/a/b/c/d/e/f/g"
"""Nine levels: room for 100 distinct wildcard filters that all match it."""
TOPICS = {
    BenchEvents.PING0: ("bench/vb/ping0", 0),
    BenchEvents.PING1: ("bench/vb/ping1", 1),
    BenchEvents.REQUEST0: ("bench/vb/request0", 0),
    BenchEvents.REPLY0: ("bench/vb/reply0", 0),
    BenchEvents.REQUEST1: ("bench/vb/request1", 1),
    BenchEvents.REPLY1: ("bench/vb/reply1", 1),
    BenchEvents.DEEP: (DEEP_TOPIC, 0),
}
REQUEST_REPLY = {
    0: (BenchEvents.REQUEST0, BenchEvents.REPLY0),
    1: (BenchEvents.REQUEST1, BenchEvents.REPLY1),
}
PING = {0: BenchEvents.PING0, 1: BenchEvents.PING1}


def register_routes() -> None:
    for event_type, (topic, qos) in TOPICS.items():
        if event_type not in voicebus.ROUTES:
            voicebus.register_route(event_type, topic, Ping, qos=qos)


def wildcard_filters(count: int, topic: str = DEEP_TOPIC) -> list[str]:
    """`count` distinct filters that all match `topic`: the topic itself first, then
    the one with ``+`` in every level after ``bench/vb`` (it covers all the others:
    a bus that sends the broker only a covering set can get each message once),
    then ``+`` in other combinations of those levels."""
    head, levels = topic.split("/")[:2], topic.split("/")[2:]
    top = (1 << len(levels)) - 1
    masks = [0, top, *range(1, top)]
    if count > len(masks):
        raise ValueError(f"only {len(masks)} filters for {topic}")
    return [
        "/".join(head + ["+" if mask >> i & 1 else level for i, level in enumerate(levels)])
        for mask in masks[:count]
    ]


def raw_payload(seq: int) -> bytes:
    """The same JSON voicebus puts on the wire for ``{"seq": seq, "text": TEXT}``."""
    data = {"siteId": "default", "seq": seq, "text": TEXT}
    return json.dumps(data, separators=(",", ":")).encode()


def vb_data(seq: int) -> dict[str, Any]:
    return {"seq": seq, "text": TEXT}


class Counter:
    """Counts received messages; remembers when the target was reached."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.reached_at = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.mark: tuple[int, asyncio.Future[None]] | None = None

    def reset(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.reached_at = 0.0
        self.done = asyncio.get_running_loop().create_future()

    def hit(self) -> None:
        self.count += 1
        if self.count == self.target:
            self.reached_at = time.perf_counter()
            if not self.done.done():
                self.done.set_result(None)
        mark = self.mark
        if mark is not None and self.count >= mark[0] and not mark[1].done():
            mark[1].set_result(None)

    async def until(self, count: int) -> bool:
        """Wait until `count` were received; False when counting stalls."""
        while self.count < count:
            future = asyncio.get_running_loop().create_future()
            self.mark = (count, future)
            try:
                await asyncio.wait_for(future, STALL_SECONDS)
            except TimeoutError:
                return False
            finally:
                self.mark = None
        return True

    async def wait(self) -> bool:
        """True once the target is reached; False when counting stalls for STALL_SECONDS."""
        last = -1
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(self.done), STALL_SECONDS)
                return True
            except TimeoutError:
                if self.count == last:
                    return False
                last = self.count


@dataclass
class Throughput:
    rate: float  # messages/s
    cpu_us: float  # process CPU µs per message
    received: int
    sent: int

    @property
    def lost(self) -> int:
        return self.sent - self.received


async def run_inflight(n: int, start: int, publish: Callable[[int], Awaitable[Any]]) -> None:
    """Publish `n` messages keeping INFLIGHT publishes outstanding."""
    seqs = iter(range(start, start + n))

    async def worker() -> None:
        for seq in seqs:
            await publish(seq)

    await asyncio.gather(*(worker() for _ in range(min(INFLIGHT, n))))


async def measure(
    n: int, warmup: int, counter: Counter, publish: Callable[[int], Awaitable[Any]]
) -> Throughput:
    """Warm up, then time from the first publish until the receiver counted `n`."""
    if warmup:
        counter.reset(warmup)
        await run_inflight(warmup, 0, publish)
        if not await counter.wait():
            return Throughput(0.0, 0.0, counter.count, warmup)
    counter.reset(n)
    cpu = time.process_time()
    began = time.perf_counter()
    await run_inflight(n, warmup, publish)
    ok = await counter.wait()
    cpu = time.process_time() - cpu
    if not ok:
        return Throughput(0.0, 0.0, counter.count, n)
    return Throughput(n / (counter.reached_at - began), cpu / n * 1e6, n, n)


@dataclass
class RoundTrip:
    p50_us: float
    p99_us: float
    lost: int


def percentiles(samples: list[float], lost: int) -> RoundTrip:
    if not samples:
        return RoundTrip(float("nan"), float("nan"), lost)
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return RoundTrip(statistics.median(ordered) * 1e6, p99 * 1e6, lost)


def spread(values: list[float]) -> str:
    """``median ±half-range%`` of one metric's rounds."""
    if not values:
        return "-"  # not measured in this run (`--only`)
    good = [v for v in values if v == v and v > 0]
    if not good:
        return "FAILED"
    mid = statistics.median(good)
    half = (max(good) - min(good)) / 2 / mid * 100 if mid else 0.0
    return f"±{half:.0f}%"


def median(values: list[float]) -> float:
    good = [v for v in values if v == v and v > 0]
    return statistics.median(good) if good else float("nan")
