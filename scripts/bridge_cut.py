"""Measure what a satellite bridge loses or doubles when the central broker goes
away mid-stream (README, "Satellites", "What a bridge can lose or double").

A central Mosquitto and a satellite Mosquitto bridged by ``voicebus
satellite-config`` (started by tests/broker.py on free loopback ports). A bus on
the satellite emits `--count` QoS 1 events on a bridged topic (``playFinished``
of site A); a bus on the central broker (persistent session) handles them, and a
raw subscriber there (persistent session) counts every copy by event id. After
`--cut-at` events the central broker is stopped with `--signal` and started again
2 s later on the same port, while the satellite keeps emitting::

    python scripts/bridge_cut.py --runs 3 --signal TERM
    python scripts/bridge_cut.py --runs 3 --signal KILL [--autosave-on-changes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.broker import Mosquitto
from tests.test_satellites import Wire
from voicebus import EventBus, EventType
from voicebus.cli.satellite import satellite_config
from voicebus.config import BusConfig
from voicebus.transport import open_transport, parse_url

E = EventType
FAST = {"reconnect_delay": 0.05, "reconnect_max_delay": 0.5}


async def run(
    sig: signal.Signals, count: int, cut_at: int, outage: float, autosave_changes: int
) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="bridge-cut-"))
    extra = ""
    if autosave_changes:  # save after this many changes, not every 30 s
        extra = f"autosave_on_changes true\nautosave_interval {autosave_changes}\n"
    central = Mosquitto(tmp / "central", extra=extra).start()
    satellite = Mosquitto(tmp / "A", extra=satellite_config("A", central.url())).start()
    hub = EventBus(central.url(), client_id="bridge-cut-hub", session_expiry=300, **FAST)
    handled: Counter[str] = Counter()
    hub.subscribe(E.AUDIO_PLAYBACK_ENDED, lambda e: handled.update([e.id]))
    publisher = EventBus(satellite.url(), client_id="bridge-cut-publisher")
    wire = Wire()
    settings = BusConfig(status=False, session_expiry=300, **FAST)
    raw = open_transport(parse_url(central.url()), client_id="bridge-cut-wire", settings=settings)
    await raw.connect(wire)
    await raw.subscribe("#", 1)
    try:
        async with hub, publisher:
            while True:  # the bridge links on its own schedule
                probe = await publisher.emit(E.AUDIO_PLAYBACK_ENDED, {"siteId": "A", "id": "p"})
                await asyncio.sleep(0.2)
                if probe.id in handled:
                    break
            handled.clear()
            wire.copies.clear()
            sent: list[str] = []
            down = 0.0
            for i in range(count):
                event = await publisher.emit(E.AUDIO_PLAYBACK_ENDED, {"siteId": "A", "id": f"n{i}"})
                sent.append(event.id)
                if i == cut_at:
                    central.stop(sig)
                    down = time.monotonic()
                if i == cut_at + 500:
                    await asyncio.sleep(max(0.0, outage - (time.monotonic() - down)))
                    central.start()
                if i % 10 == 0:
                    await asyncio.sleep(0.001)  # a stream, not one burst
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not set(sent) <= set(handled):
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)  # late copies
    finally:
        await raw.close()
        satellite.stop()
        central.stop()
    on_wire: Counter[str] = Counter()
    for (_, event_id), copies in wire.copies.items():
        on_wire[event_id] += copies
    lost = [i for i in sent if i not in handled]
    return (
        f"SIG{sig.name.removeprefix('SIG')}: sent {len(sent)}, handled {len(handled)} "
        f"(twice: {sum(handled[i] > 1 for i in sent)}), lost {len(lost)}; on the central "
        f"broker's wire: twice {sum(on_wire[i] > 1 for i in sent)}, "
        f"never {sum(on_wire[i] == 0 for i in sent)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--cut-at", type=int, default=1000)
    parser.add_argument("--outage", type=float, default=2.0)
    parser.add_argument("--signal", default="TERM", choices=["TERM", "KILL"])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--autosave-on-changes",
        type=int,
        default=0,
        metavar="N",
        help="the central broker saves its state after N changes (default: every 30 s)",
    )
    args = parser.parse_args()
    sig = signal.Signals[f"SIG{args.signal}"]
    for _ in range(args.runs):
        result = run(sig, args.count, args.cut_at, args.outage, args.autosave_on_changes)
        print(asyncio.run(result))


if __name__ == "__main__":
    main()
