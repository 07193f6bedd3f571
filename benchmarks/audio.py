#!/usr/bin/env python
"""Audio frames over MQTT: voicebus against raw aiomqtt on one Mosquitto this starts.

    python benchmarks/audio.py              # 20 sites x 50 frames/s, 10 s, 3 rounds
    python benchmarks/audio.py --seconds 3 --rounds 1   # a quick look

20 sites each send one frame every 20 ms (20 ms of 16 kHz mono 16-bit audio: a
684-byte WAV file) on ``hermes/audioServer/<site>/audioFrame`` to one
subscriber, paced by the clock as a microphone is, for ``--seconds``:

- voicebus: 20 buses ``emit(EventType.AUDIO_FRAME, {"siteId": ..., "wav": ...})``,
  one bus subscribed with a handler (the route's QoS 1, envelope in MQTT 5
  properties);
- aiomqtt (MQTT 5, the baseline): 20 clients publish the same bytes at QoS 1, one
  client subscribed reads ``client.messages``.

Everything runs in this process on one asyncio loop (no uvloop), as
``benchmarks/bench.py`` does. Printed per side (median of the interleaved rounds):
frames/s received against the 1,000 frames/s offered, CPU µs per frame (this
process, senders and receiver together; the broker is not included), the frame
latency p50/p99 (send -> handler, from a timestamp inside the frame) and the
backlog: frames sent but not yet handled when the senders stop, and how long the
receiver took to drain it. "backlog: no" means at most one tick of frames (20)
was outstanding and p99 stayed under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

import voicebus
from voicebus import Event, EventBus, EventType

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SITES = 20
RATE = 50  # frames per second per site
TICK = 1.0 / RATE
SAMPLES = 320  # 20 ms at 16 kHz
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
QUIET = logging.getLogger("bench.audio")
QUIET.setLevel(logging.ERROR)


def frame(site: int, seq: int) -> bytes:
    """A 684-byte WAV file; its first samples hold site, seq and the send time."""
    stamp = struct.pack("<IId", site, seq, time.perf_counter())
    data = stamp + bytes(SAMPLES * 2 - len(stamp))
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    return header + b"data" + struct.pack("<I", len(data)) + data


def stamp_of(wav: bytes) -> tuple[int, int, float]:
    site, seq, sent = struct.unpack_from("<IId", wav, 44)
    return site, seq, sent


@dataclass
class Result:
    frames: int
    seconds: float
    cpu: float
    latencies: list[float]
    backlog: int
    drain: float
    in_order: bool

    @property
    def rate(self) -> float:
        return self.frames / self.seconds

    @property
    def cpu_per_frame(self) -> float:
        return self.cpu / max(self.frames, 1) * 1e6

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    @property
    def backlogged(self) -> bool:
        return self.backlog > SITES or self.p(0.99) >= 50.0


class Receiver:
    """Counts frames, checks per-site order, notes latencies."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.latencies: list[float] = []
        self.last = [-1] * SITES
        self.in_order = True
        self.done = asyncio.get_running_loop().create_future()

    def got(self, wav: bytes) -> None:
        site, seq, sent = stamp_of(wav)
        self.latencies.append(time.perf_counter() - sent)
        if seq != self.last[site] + 1:
            self.in_order = False
        self.last[site] = seq
        self.count += 1
        if self.count >= self.expected and not self.done.done():
            self.done.set_result(None)


async def paced(send: Callable[[int, int], Awaitable[None]], seconds: float) -> None:
    """Every site sends one frame per tick, on the clock (a late tick catches up)."""
    frames = int(seconds * RATE)
    start = time.perf_counter() + 0.05

    async def site(n: int) -> None:
        for seq in range(frames):
            delay = start + seq * TICK - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await send(n, seq)

    await asyncio.gather(*(site(n) for n in range(SITES)))


async def measure(
    receiver: Receiver, send: Callable[[int, int], Awaitable[None]], seconds: float
) -> Result:
    cpu0, t0 = time.process_time(), time.perf_counter()
    await paced(send, seconds)
    backlog = receiver.expected - receiver.count
    stopped = time.perf_counter()
    await asyncio.wait_for(receiver.done, 60)
    end = time.perf_counter()
    return Result(
        receiver.count,
        end - t0,
        time.process_time() - cpu0,
        receiver.latencies,
        backlog,
        end - stopped,
        receiver.in_order,
    )


async def run_raw(port: int, seconds: float) -> Result:
    receiver = Receiver(SITES * int(seconds * RATE))
    topics = [f"hermes/audioServer/site{n}/audioFrame" for n in range(SITES)]

    def client() -> aiomqtt.Client:
        return aiomqtt.Client(
            HOST, port, protocol=aiomqtt.ProtocolVersion.V5, logger=QUIET, socket_options=NODELAY
        )

    async with client() as sub:
        await sub.subscribe("hermes/audioServer/+/audioFrame", qos=1)

        async def read() -> None:
            async for message in sub.messages:
                assert isinstance(message.payload, bytes)
                receiver.got(message.payload)

        reader = asyncio.create_task(read())
        senders = [client() for _ in range(SITES)]
        for sender in senders:
            await sender.__aenter__()
        try:

            async def send(n: int, seq: int) -> None:
                await senders[n].publish(topics[n], frame(n, seq), qos=1)

            return await measure(receiver, send, seconds)
        finally:
            reader.cancel()
            for sender in senders:
                await sender.__aexit__(None, None, None)


async def run_voicebus(url: str, seconds: float) -> Result:
    receiver = Receiver(SITES * int(seconds * RATE))
    sites = [f"site{n}" for n in range(SITES)]
    async with EventBus(url) as sub:

        def handle(event: Event) -> None:
            receiver.got(event.data["wav"])

        sub.subscribe(EventType.AUDIO_FRAME, handle)
        await sub.ready()
        senders = [EventBus(url) for _ in range(SITES)]
        for sender in senders:
            await sender.start()
        try:

            async def send(n: int, seq: int) -> None:
                data = {"siteId": sites[n], "wav": frame(n, seq)}
                await senders[n].emit(EventType.AUDIO_FRAME, data)

            return await measure(receiver, send, seconds)
        finally:
            for sender in senders:
                await sender.stop()


def show(name: str, results: list[Result]) -> dict[str, float]:
    rate = statistics.median(r.rate for r in results)
    cpu = statistics.median(r.cpu_per_frame for r in results)
    p50 = statistics.median(r.p(0.5) for r in results)
    p99 = statistics.median(r.p(0.99) for r in results)
    backlog = max(r.backlog for r in results)
    drain = max(r.drain for r in results)
    order = all(r.in_order for r in results)
    verdict = "yes" if any(r.backlogged for r in results) else "no"
    print(
        f"{name:9} {rate:8,.0f} frames/s of {SITES * RATE:,} offered | CPU {cpu:6.1f} µs/frame | "
        f"latency p50 {p50:5.2f} ms p99 {p99:6.2f} ms | backlog: {verdict} "
        f"(at most {backlog} outstanding at stop, drained in {drain * 1000:.0f} ms) | "
        f"in order: {'yes' if order else 'NO'}"
    )
    return {"rate": rate, "cpu": cpu, "p50": p50, "p99": p99}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="sending time per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.broker import Mosquitto

    with tempfile.TemporaryDirectory(prefix="voicebus-audio-") as tmp:
        broker = Mosquitto(Path(tmp) / "broker")
        if broker.port == 1883:
            raise SystemExit("refusing to use port 1883")
        broker.start()
        try:
            print(
                f"mosquitto {broker.url()}; Python {sys.version.split()[0]}, aiomqtt "
                f"{aiomqtt.__version__}, voicebus {voicebus.__version__}; {SITES} sites x "
                f"{RATE} frames/s of {len(frame(0, 0))} bytes, {args.seconds:g} s, "
                f"median of {args.rounds} interleaved rounds",
                flush=True,
            )
            raw: list[Result] = []
            vb: list[Result] = []
            for _ in range(args.rounds):
                raw.append(asyncio.run(run_raw(broker.port, args.seconds)))
                vb.append(asyncio.run(run_voicebus(broker.url(), args.seconds)))
        finally:
            broker.stop()
    base = show("aiomqtt", raw)
    ours = show("voicebus", vb)
    print(
        f"ratio voicebus/aiomqtt: frames/s {ours['rate'] / base['rate']:.2f}x, CPU per frame "
        f"{ours['cpu'] / base['cpu']:.2f}x, p50 {ours['p50'] / base['p50']:.2f}x, "
        f"p99 {ours['p99'] / base['p99']:.2f}x (above 1: more CPU, slower)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
