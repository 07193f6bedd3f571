#!/usr/bin/env python
"""voicebus beside its peers, in one run, on one Mosquitto this script starts.

    python benchmarks/bench.py            # full run (~4 min)
    python benchmarks/bench.py --quick    # a smoke run (~15 s; CI runs it)
    python benchmarks/bench.py --profile  # also cProfile the voicebus paths

In-process (emit -> one async handler): voicebus ``memory://`` beside pyee,
bubus and a bare ``asyncio.Queue``. MQTT (end to end, QoS 0 and 1): voicebus
beside raw aiomqtt, FastStream and paho on two threads; request round trip
p50/p99 beside paho's two-thread ping-pong and raw aiomqtt. Every metric runs
once per round, the rounds interleaved (so load drifts hit every peer alike);
ratios are taken within a round, then the median over rounds is printed with
its spread. Then a scaling table and the RSS over 1,000,000 ``memory://`` events.
The peers come from the ``bench`` extra (``pip install -e '.[bench]'``); a
missing one is reported, not fatal. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import peers_memory as mem
import peers_mqtt as mq
import scaling
from common import Throughput, register_routes
from report import Results, print_done_when, print_results, print_scaling, scale_key

import voicebus

PARTS = ("memory", "mqtt", "rtt", "scaling", "rss")
"""What `--only` can pick: in-process peers, MQTT end to end, round trips, the
scaling table, the RSS over a million memory:// events."""


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} {five:.2f} ({os.cpu_count()} cores)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="messages per MQTT run")
    parser.add_argument("--memory-count", type=int, default=200_000, help="memory:// events")
    parser.add_argument("--bubus-count", type=int, default=2000, help="bubus events (slow)")
    parser.add_argument(
        "--memory-pairs", type=int, default=5, help="voicebus/pyee pairs per round, back to back"
    )
    parser.add_argument("--round-trips", type=int, default=1000, help="per QoS and peer")
    parser.add_argument("--scale-count", type=int, default=None, help="events per scaling cell")
    parser.add_argument("--rss-events", type=int, default=1_000_000, help="memory:// events")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default: all of {','.join(PARTS)})",
    )
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="a smoke run (~15 s)")
    parser.add_argument("--profile", action="store_true", help="cProfile the voicebus paths")
    args = parser.parse_args()
    if args.quick:
        args.count, args.memory_count, args.bubus_count = 1000, 5000, 100
        args.round_trips, args.scale_count, args.rss_events = 50, 200, 20_000
        args.repeat, args.memory_pairs = 1, 1
    if args.scale_count is None:
        args.scale_count = max(args.count // 4, 1)
    args.only = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = args.only - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    return args


def attempt(results: Results, key: str, run: Callable[[], Any]) -> None:
    """Run one measurement into `results`; a peer that is not installed (or fails)
    is noted, not fatal."""
    try:
        value = run()
    except ImportError as exc:
        results.missing[key.split(" ")[0]] = (
            f"not installed ({exc.name}): pip install -e '.[bench]'"
        )
        return
    except Exception as exc:  # a peer failing must not hide the others' figures
        results.failed[key] = f"{type(exc).__name__}: {exc}"[:200]
        print(f"  {key:<28} FAILED {results.failed[key]}", flush=True)
        return
    results.add(key, value)
    if isinstance(value, Throughput):
        note = f"  LOST {value.lost} of {value.sent}" if value.lost else ""
        print(f"  {key:<28} {value.rate:>11,.0f} /s {value.cpu_us:8.1f} µs CPU{note}", flush=True)
    else:
        note = f"  LOST {value.lost}" if value.lost else ""
        print(f"  {key:<28} p50 {value.p50_us:7.0f} µs  p99 {value.p99_us:7.0f} µs{note}")


def one_round(args: argparse.Namespace, results: Results, port: int, url: str) -> None:
    n, m, w = args.count, args.memory_count, min(500, max(args.count // 10, 1))
    rt, rw = args.round_trips, min(100, max(args.round_trips // 10, 1))
    pairs = args.memory_pairs
    for key, make in (
        ()
        if "memory" not in args.only
        else (
            # voicebus and pyee back to back `pairs` times, m/pairs events each: the
            # ratio is taken per pair, so load that drifts within a round hits both.
            *[
                cell
                for _ in range(pairs)
                for cell in (
                    ("voicebus memory://", lambda: mem.voicebus_memory(m // pairs)),
                    ("pyee memory", lambda: mem.pyee_memory(m // pairs)),
                )
            ],
            ("bubus memory", lambda: mem.bubus_memory(args.bubus_count)),
            ("asyncio.Queue memory", lambda: mem.queue_memory(m)),
        )
    ):
        attempt(results, key, lambda make=make: asyncio.run(make()))
    for qos in (0, 1) if "mqtt" in args.only else ():
        attempt(
            results,
            f"voicebus e2e q{qos}",
            lambda q=qos: asyncio.run(mq.voicebus_e2e(url, q, n, w)),
        )
        attempt(
            results, f"aiomqtt e2e q{qos}", lambda q=qos: asyncio.run(mq.aiomqtt_e2e(port, q, n, w))
        )
        attempt(
            results,
            f"faststream e2e q{qos}",
            lambda q=qos: asyncio.run(mq.faststream_e2e(port, q, n, w)),
        )
        attempt(results, f"paho e2e q{qos}", lambda q=qos: mq.paho_e2e(port, q, n, w))
    for qos in (0, 1) if "rtt" in args.only else ():
        attempt(
            results,
            f"voicebus rtt q{qos}",
            lambda q=qos: asyncio.run(mq.voicebus_rtt(url, q, rt, rw)),
        )
        attempt(results, f"paho rtt q{qos}", lambda q=qos: mq.paho_rtt(port, q, rt, rw))
        attempt(
            results,
            f"aiomqtt rtt q{qos}",
            lambda q=qos: asyncio.run(mq.aiomqtt_rtt(port, q, rt, rw)),
        )


SCALES = {"topics": (1, 10, 100, 1000), "filters": (1, 10, 100), "handlers": (1, 10, 100)}


def run_scaling(args: argparse.Namespace, url: str, results: Results, index: int) -> None:
    """One round of the scaling table: every cell once, into `results` (`scale_key`)."""
    print(
        f"scaling round {index + 1}/{args.repeat}: {args.scale_count} events per cell; {load()}",
        flush=True,
    )
    for kind, values in SCALES.items():
        for k in values:
            for transport, bus_url in (("memory://", "memory://scale"), ("MQTT", url)):
                result = asyncio.run(scaling.scaled(bus_url, args.scale_count, kind, k))
                value = result.cpu_us if not result.lost else float("nan")
                results.add(scale_key(transport, kind, k), value)
                note = f"  LOST {result.lost} of {result.sent}" if result.lost else ""
                print(
                    f"  {transport:<9} {kind:<8} {k:>5}: {result.cpu_us:8.1f} µs CPU/event{note}",
                    flush=True,
                )


def rss_in_fresh_process(total: int) -> tuple[float, float, float]:
    """`scaling.memory_rss` (after `total` // 10 and `total` events) in a process of
    its own: it then finds the growth of voicebus's memory, not this process's
    earlier peak (whose freed arenas would hide it)."""
    child = subprocess.run(
        [sys.executable, __file__, "--rss-child", "--rss-events", str(total)],
        capture_output=True,
        text=True,
        check=True,
    )
    before, after_first, after_all = json.loads(child.stdout.strip().splitlines()[-1])
    return before, after_first, after_all


def profile(label: str, coro: Any, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(coro)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    body = text[text.find("   ncalls") :].rstrip()
    print(f"\n--- cProfile {label}, top {top} by tottime ---\n{body}")


def main() -> int:
    args = parse_args()
    if args.rss_child:
        register_routes()
        first = max(args.rss_events // 10, 1)
        print(json.dumps(asyncio.run(scaling.memory_rss(first, args.rss_events))))
        return 0
    from tests.broker import Mosquitto

    register_routes()
    scaling.register_site_route()
    started = time.perf_counter()
    results = Results()
    with tempfile.TemporaryDirectory(prefix="voicebus-bench-") as tmp:
        broker = Mosquitto(Path(tmp) / "broker")
        if broker.port == 1883:
            raise SystemExit("refusing to use port 1883")
        broker.start()
        try:
            port, url = broker.port, broker.url()
            print(
                f"mosquitto {url}; Python {sys.version.split()[0]}, voicebus "
                f"{voicebus.__version__}; {args.repeat} interleaved round(s); {load()}",
                flush=True,
            )
            for index in range(args.repeat):
                print(f"round {index + 1}/{args.repeat}; {load()}", flush=True)
                one_round(args, results, port, url)
            if "scaling" in args.only:  # its cells interleaved: each round has them all
                for index in range(args.repeat):
                    run_scaling(args, url, results, index)
            first = max(args.rss_events // 10, 1)
            rss = (float("nan"),) * 3
            if "rss" in args.only:
                print(f"RSS: {args.rss_events:,} memory:// events; {load()}", flush=True)
                rss = rss_in_fresh_process(args.rss_events)
            print_results(results)
            print_scaling(results, SCALES)
            print_done_when(results, rss, first, args.rss_events, load())
            if args.profile:
                profile("voicebus e2e QoS 1", mq.voicebus_e2e(url, 1, args.count, 0), 25)
                profile("voicebus memory://", mem.voicebus_memory(args.memory_count), 25)
        finally:
            broker.stop()
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
