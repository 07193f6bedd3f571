#!/usr/bin/env python
"""voicebus against raw aiomqtt (MQTT 5) on one Mosquitto this script starts.

    python benchmarks/bench.py            # full run (--count 20000, 3 repeats)
    python benchmarks/bench.py --quick    # a short run (well under a minute)
    python benchmarks/bench.py --profile  # also cProfile the voicebus paths

Measures, in one process on one asyncio loop:

1. end-to-end events/s at QoS 0 and QoS 1: a publisher connection with 100
   publishes in flight, a subscriber connection counting until it has N;
2. request/response round trip p50/p99 (sequential, after a warm-up);
3. ``memory://`` events/s against a plain ``asyncio.Queue`` -> handler loop
   and against the 250,000 events/s target.

The broker comes from ``mosquitto/mosquitto.conf`` via ``tests/broker.py``
(127.0.0.1, a free port, never 1883).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import pstats
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import voicebus
from voicebus import Event, EventBus
from voicebus.wire.models import Payload

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
INFLIGHT = 100
TARGET_MEMORY_RATE = 250_000
STALL_SECONDS = 5.0
TEXT = "x" * 58  # makes the JSON payload 100 bytes for a 5-digit seq

# --- user routes (QoS 0 needs one: the built-in routes are QoS 1) ---------------------


class BenchEvents(str, Enum):
    PING0 = "bench_ping0"
    PING1 = "bench_ping1"
    REQUEST0 = "bench_request0"
    REPLY0 = "bench_reply0"
    REQUEST1 = "bench_request1"
    REPLY1 = "bench_reply1"


class Ping(Payload):
    """A benchmark message."""

    seq: int = 0
    text: str = ""


TOPICS = {
    BenchEvents.PING0: ("bench/vb/ping0", 0),
    BenchEvents.PING1: ("bench/vb/ping1", 1),
    BenchEvents.REQUEST0: ("bench/vb/request0", 0),
    BenchEvents.REPLY0: ("bench/vb/reply0", 0),
    BenchEvents.REQUEST1: ("bench/vb/request1", 1),
    BenchEvents.REPLY1: ("bench/vb/reply1", 1),
}
REQUEST_REPLY = {
    0: (BenchEvents.REQUEST0, BenchEvents.REPLY0),
    1: (BenchEvents.REQUEST1, BenchEvents.REPLY1),
}
# aiomqtt logs a warning per publish once more than 10 are pending: 100 are, on purpose.
QUIET = logging.getLogger("bench.aiomqtt")
QUIET.setLevel(logging.ERROR)


def register_routes() -> None:
    for event_type, (topic, qos) in TOPICS.items():
        if event_type not in voicebus.ROUTES:
            voicebus.register_route(event_type, topic, Ping, qos=qos)


def raw_payload(seq: int) -> bytes:
    """The same JSON voicebus puts on the wire for ``{"seq": seq, "text": TEXT}``."""
    data = {"siteId": "default", "seq": seq, "text": TEXT}
    return json.dumps(data, separators=(",", ":")).encode()


def vb_data(seq: int) -> dict[str, Any]:
    return {"seq": seq, "text": TEXT}


# --- measuring helpers -------------------------------------------------------------------


class Counter:
    """Counts received messages; remembers when the target was reached."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.reached_at = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

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
    elapsed = counter.reached_at - began
    return Throughput(n / elapsed, cpu / n * 1e6, n, n)


NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def raw_client(port: int) -> aiomqtt.Client:
    """A raw aiomqtt client set up as voicebus sets up its own: MQTT 5, TCP_NODELAY.

    Without TCP_NODELAY a QoS 1 request/response hop waits ~40 ms for a delayed
    ACK; voicebus sets it, so the baseline does too (otherwise the round-trip
    ratio would measure a socket option, not the library).
    """
    return aiomqtt.Client(
        HOST, port, protocol=aiomqtt.ProtocolVersion.V5, logger=QUIET, socket_options=NODELAY
    )


# --- 1. end to end ---------------------------------------------------------------------------


async def raw_e2e(port: int, qos: int, n: int, warmup: int) -> Throughput:
    topic = f"bench/raw/q{qos}"
    async with raw_client(port) as sub, raw_client(port) as pub:
        await sub.subscribe(topic, qos=qos)
        counter = Counter()

        async def consume() -> None:
            async for message in sub.messages:
                json.loads(message.payload)  # type: ignore[arg-type]
                counter.hit()

        consumer = asyncio.create_task(consume())

        async def publish(seq: int) -> None:
            await pub.publish(topic, raw_payload(seq), qos=qos)

        try:
            return await measure(n, warmup, counter, publish)
        finally:
            consumer.cancel()


async def vb_e2e(url: str, event_type: BenchEvents, n: int, warmup: int) -> Throughput:
    counter = Counter()

    async def handler(event: Event) -> None:
        counter.hit()

    receiver = EventBus(url)
    receiver.subscribe(event_type, handler)
    async with receiver, EventBus(url) as sender:

        async def publish(seq: int) -> None:
            await sender.emit(event_type, vb_data(seq))

        return await measure(n, warmup, counter, publish)


# --- 2. round trip ---------------------------------------------------------------------------


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


async def raw_rtt(port: int, qos: int, n: int, warmup: int) -> RoundTrip:
    request_topic, reply_topic = f"bench/raw/request{qos}", f"bench/raw/reply{qos}"
    async with raw_client(port) as responder, raw_client(port) as requester:
        await responder.subscribe(request_topic, qos=qos)
        await requester.subscribe(reply_topic, qos=qos)

        async def respond() -> None:
            async for message in responder.messages:
                props_in = message.properties
                assert props_in is not None
                data = json.loads(message.payload)  # type: ignore[arg-type]
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.CorrelationData = props_in.CorrelationData
                await responder.publish(
                    props_in.ResponseTopic,
                    json.dumps(data, separators=(",", ":")).encode(),
                    qos=qos,
                    properties=props,
                )

        task = asyncio.create_task(respond())
        samples: list[float] = []
        lost = 0
        try:
            for i in range(warmup + n):
                cid = f"req-{i}".encode()
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.ResponseTopic = reply_topic
                props.CorrelationData = cid
                began = time.perf_counter()
                await requester.publish(request_topic, raw_payload(i), qos=qos, properties=props)
                while True:
                    try:
                        reply = await asyncio.wait_for(anext(requester.messages), 5.0)
                    except TimeoutError:
                        lost += 1
                        break
                    json.loads(reply.payload)  # type: ignore[arg-type]
                    if reply.properties is not None and reply.properties.CorrelationData == cid:
                        if i >= warmup:
                            samples.append(time.perf_counter() - began)
                        break
        finally:
            task.cancel()
        return percentiles(samples, lost)


async def vb_rtt(url: str, qos: int, n: int, warmup: int, *, presubscribed: bool) -> RoundTrip:
    """`bus.request` round trips; `presubscribed` keeps a subscription on the reply topic,
    otherwise every request's `wait_for` subscribes and unsubscribes the reply filter."""
    request, reply = REQUEST_REPLY[qos]
    responder = EventBus(url)

    async def respond(event: Event) -> None:
        await responder.emit(reply, event.data, correlation_id=event.correlation_id)

    responder.subscribe(request, respond)
    requester = EventBus(url)
    if presubscribed:
        requester.subscribe(reply, lambda event: None)
    samples: list[float] = []
    lost = 0
    async with responder, requester:
        for i in range(warmup + n):
            began = time.perf_counter()
            answer = await requester.request(request, vb_data(i), reply, timeout=5.0)
            if answer is None:
                lost += 1
            elif i >= warmup:
                samples.append(time.perf_counter() - began)
    return percentiles(samples, lost)


# --- 3. memory:// ----------------------------------------------------------------------------


async def queue_baseline(n: int) -> float:
    """events/s of a plain asyncio.Queue(maxsize=1000) -> async handler loop."""
    counter = Counter()
    counter.reset(n)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)

    async def handler(item: dict[str, Any]) -> None:
        counter.hit()

    async def consume() -> None:
        while True:
            await handler(await queue.get())

    task = asyncio.create_task(consume())
    began = time.perf_counter()
    for seq in range(n):
        await queue.put(vb_data(seq))
    await counter.wait()
    task.cancel()
    return n / (counter.reached_at - began)


async def vb_memory(n: int) -> Throughput:
    counter = Counter()
    counter.reset(n)

    async def handler(event: Event) -> None:
        counter.hit()

    bus = EventBus("memory://bench")
    bus.subscribe(BenchEvents.PING1, handler)
    async with bus:
        cpu = time.process_time()
        began = time.perf_counter()
        for seq in range(n):
            await bus.emit(BenchEvents.PING1, vb_data(seq))
        ok = await counter.wait()
        cpu = time.process_time() - cpu
    if not ok:
        return Throughput(0.0, 0.0, counter.count, n)
    return Throughput(n / (counter.reached_at - began), cpu / n * 1e6, n, n)


# --- running and reporting -------------------------------------------------------------------


def median_run(
    label: str, repeats: int, make: Callable[[], Coroutine[Any, Any, Throughput]]
) -> Throughput:
    runs = [asyncio.run(make()) for _ in range(repeats)]
    for r in runs:
        note = f"  LOST {r.lost} of {r.sent}" if r.lost else ""
        print(f"  {label:<26} {r.rate:>11,.0f} msg/s  {r.cpu_us:6.1f} µs CPU/msg{note}", flush=True)
    lost = max(r.lost for r in runs)
    ok = [r for r in runs if not r.lost]
    if not ok:
        return Throughput(0.0, 0.0, 0, lost)
    rate = statistics.median(r.rate for r in ok)
    cpu = statistics.median(r.cpu_us for r in ok)
    return Throughput(rate, cpu, runs[0].sent - lost, runs[0].sent)


def ratio(a: float, b: float) -> str:
    return f"{b / a:.2f}" if a and b and a == a and b == b else "-"


def profile(label: str, coro: Coroutine[Any, Any, Any], top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(coro)
    profiler.disable()
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(key)
        stats.print_stats(top)
        text = out.getvalue()
        body = text[text.find("   ncalls") :]
        print(f"\n--- cProfile {label}, top {top} by {key} ---\n{body.rstrip()}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20_000, help="messages per MQTT run")
    parser.add_argument("--memory-count", type=int, default=200_000, help="memory:// events")
    parser.add_argument("--round-trips", type=int, default=1000, help="per QoS 0 variant")
    parser.add_argument(
        "--round-trips-qos1", type=int, default=None, help="per QoS 1 variant (default: same)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per throughput metric")
    parser.add_argument("--quick", action="store_true", help="small N, under a minute")
    parser.add_argument("--profile", action="store_true", help="cProfile the voicebus paths")
    args = parser.parse_args()
    if args.quick:
        args.count, args.memory_count, args.round_trips = 2000, 20_000, 200
        args.round_trips_qos1 = 25 if args.round_trips_qos1 is None else args.round_trips_qos1
    if args.round_trips_qos1 is None:
        args.round_trips_qos1 = args.round_trips
    return args


Row = tuple[str, str, str, str]


def bench_e2e(args: argparse.Namespace, port: int, url: str) -> list[Row]:
    n = args.count
    warmup = min(500, max(n // 10, 1))
    print(f"end to end: N={n} after {warmup} warm-up, {INFLIGHT} in flight", flush=True)
    rows: list[Row] = []
    for qos, event_type in ((0, BenchEvents.PING0), (1, BenchEvents.PING1)):
        raw = median_run(
            f"aiomqtt QoS {qos}", args.repeat, lambda q=qos: raw_e2e(port, q, n, warmup)
        )
        vb = median_run(
            f"voicebus QoS {qos}", args.repeat, lambda e=event_type: vb_e2e(url, e, n, warmup)
        )
        rows.append((f"e2e events/s, QoS {qos}", _rate(raw), _rate(vb), ratio(raw.rate, vb.rate)))
        rows.append(
            (
                f"  CPU µs per event, QoS {qos}",
                f"{raw.cpu_us:.1f}",
                f"{vb.cpu_us:.1f}",
                ratio(raw.cpu_us, vb.cpu_us),
            )
        )
    return rows


def bench_rtt(args: argparse.Namespace, port: int, url: str) -> list[Row]:
    rows: list[Row] = []
    for qos, count in ((0, args.round_trips), (1, args.round_trips_qos1)):
        warmup = min(100, max(count // 10, 1))
        print(f"round trips QoS {qos}: {count} sequential after {warmup} warm-up", flush=True)
        raw = asyncio.run(raw_rtt(port, qos, count, warmup))
        cold = asyncio.run(vb_rtt(url, qos, count, warmup, presubscribed=False))
        warm = asyncio.run(vb_rtt(url, qos, count, warmup, presubscribed=True))
        for name, r in (("aiomqtt", raw), ("voicebus", cold), ("voicebus, reply subscribed", warm)):
            note = f"  LOST {r.lost}" if r.lost else ""
            print(f"  {name:<26} p50 {r.p50_us:8.0f} µs  p99 {r.p99_us:8.0f} µs{note}")
        for q in ("p50", "p99"):
            base = getattr(raw, f"{q}_us")
            for label, r in (("", cold), (", reply subscribed", warm)):
                value = getattr(r, f"{q}_us")
                lost = f" (lost {r.lost})" if r.lost else ""
                rows.append(
                    (
                        f"round trip {q} µs, QoS {qos}{label}",
                        f"{base:.0f}",
                        f"{value:.0f}{lost}",
                        ratio(base, value),
                    )
                )
    return rows


def bench_memory(args: argparse.Namespace) -> list[Row]:
    n = args.memory_count
    print(f"memory://: {n} events", flush=True)
    queue_rates = [asyncio.run(queue_baseline(n)) for _ in range(args.repeat)]
    for rate in queue_rates:
        print(f"  {'asyncio.Queue -> handler':<26} {rate:>11,.0f} msg/s", flush=True)
    mem = median_run("voicebus memory://", args.repeat, lambda: vb_memory(n))
    queue_rate = statistics.median(queue_rates)
    return [
        (
            "memory:// events/s vs asyncio.Queue",
            f"{queue_rate:,.0f}",
            _rate(mem),
            ratio(queue_rate, mem.rate),
        ),
        (
            "memory:// events/s vs target",
            f"{TARGET_MEMORY_RATE:,}",
            _rate(mem),
            ratio(TARGET_MEMORY_RATE, mem.rate),
        ),
        ("  CPU µs per event, memory://", "", f"{mem.cpu_us:.1f}", ""),
    ]


def main() -> int:
    args = parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.broker import Mosquitto

    register_routes()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="voicebus-bench-") as tmp:
        broker = Mosquitto(Path(tmp) / "broker")
        if broker.port == 1883:
            raise SystemExit("refusing to use port 1883")
        broker.start()
        try:
            port, url = broker.port, broker.url()
            print(
                f"mosquitto {url} (mosquitto/mosquitto.conf); "
                f"Python {sys.version.split()[0]}, aiomqtt {aiomqtt.__version__}, "
                f"voicebus {voicebus.__version__}, median of {args.repeat}",
                flush=True,
            )
            rows = bench_e2e(args, port, url) + bench_rtt(args, port, url) + bench_memory(args)
            print_table(rows)
            print(
                "ratio = voicebus / baseline: above 1 is faster for events/s, "
                "slower for CPU and round-trip times."
            )
            if args.profile:
                n = args.count
                profile("voicebus e2e QoS 1", vb_e2e(url, BenchEvents.PING1, n, 0), 25)
                profile("voicebus memory://", vb_memory(args.memory_count), 25)
        finally:
            broker.stop()
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


def _rate(t: Throughput) -> str:
    if not t.rate:
        return f"FAILED (lost {t.lost})"
    return f"{t.rate:,.0f}" + (f" (lost {t.lost})" if t.lost else "")


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    header = ("metric", "aiomqtt / baseline", "voicebus", "ratio")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print()
    print(line)
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print(" | ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
