"""The processes of the flood tests (`tests/test_floods.py`), run as
``python -m tests.flood_peers <role> ...``.

- ``victim URL CLIENT_ID VALID``: a bus that counts `SPEECH_DETECTED` events and
  emits events of its own in a loop, awaiting each, while a flood goes on. It prints
  one JSON line when subscribed (``{"rss": ...}``), then one with what it saw once
  it has handled VALID events and seen the flooder's end marker (a
  `SYSTEM_STOPPED` event).
- ``flood URL TOPIC COUNT SIZE``: a raw paho client (no voicebus) that publishes
  COUNT payloads of SIZE bytes that are not JSON on TOPIC at QoS 0, as fast as it
  can, then the end marker on the same connection (the broker keeps one client's
  order), and waits for its PUBACK.

- ``receiver URL COUNT``: a bus that handles `WAKE_WORD_DETECTED` and
  `SPEECH_DETECTED` events; it prints its RSS when subscribed, then what it saw once
  it has handled COUNT of them and the end marker.
- ``send URL KIND COUNT``: the raw client sends COUNT valid events whose envelope
  is huge (KIND ``long-topics``: each on its own 60 KB topic; ``long-ids``: each
  with its own 60 KB id and 60 KB source), then the end marker.
- ``retain URL COUNT``: the same raw client leaves COUNT records retained on
  ``voicebus/deadLetter/flood-<n>`` (as many buses over time would), then waits for
  the PUBACK of a marker sent after them.

RSS is measured in the victim's own process, so nothing the test process or the
flooder holds counts.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

MARKER_TOPIC = "voicebus/system/stopped"


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def victim(url: str, client_id: str, valid: int) -> None:
    from voicebus import EventBus, EventType, VoicebusError

    bus = EventBus(url, client_id=client_id)
    handled = 0
    most_tasks = 0  # asyncio tasks of the victim, sampled through the flood
    done = asyncio.Event()
    marker = asyncio.Event()

    def on_speech(_event: Any) -> None:
        nonlocal handled, most_tasks
        handled += 1
        most_tasks = max(most_tasks, len(asyncio.all_tasks()))
        if handled >= valid and marker.is_set():
            done.set()

    def on_marker(_event: Any) -> None:
        marker.set()
        if handled >= valid:
            done.set()

    bus.subscribe(EventType.SPEECH_DETECTED, on_speech)
    bus.subscribe(EventType.SYSTEM_STOPPED, on_marker)
    await bus.ready()
    await bus.emit(EventType.EMOTION_CHANGED, {"emotion": "warm-up"})
    gc.collect()
    before = rss_bytes()
    print(json.dumps({"rss": before}), flush=True)

    emits = 0
    errors: list[str] = []
    slowest = 0.0

    async def emit_loop() -> None:
        nonlocal emits, slowest, most_tasks
        while not done.is_set():
            started = time.perf_counter()
            try:
                await bus.emit(EventType.EMOTION_CHANGED, {"emotion": f"calm-{emits}"})
            except VoicebusError as exc:
                errors.append(type(exc).__name__)
            slowest = max(slowest, time.perf_counter() - started)
            emits += 1
            most_tasks = max(most_tasks, len(asyncio.all_tasks()))

    emitting = asyncio.create_task(emit_loop())
    started = time.perf_counter()
    try:
        await asyncio.wait_for(done.wait(), 45)
    except TimeoutError:
        pass
    flood_seconds = time.perf_counter() - started
    done.set()
    await emitting
    drained_by = time.monotonic() + 10
    while bus._failures.tasks and time.monotonic() < drained_by:
        await asyncio.sleep(0.01)
    gc.collect()
    after = rss_bytes()
    stats = bus.get_stats()
    print(
        json.dumps(
            {
                "rss_before": before,
                "rss_after": after,
                "handled": handled,
                "marker": marker.is_set(),
                "seconds": flood_seconds,
                "emits": emits,
                "emit_errors": errors,
                "slowest_emit": slowest,
                "most_tasks": most_tasks,
                "metrics": stats["metrics"],
                "dead_letter_queue_size": stats["dead_letter_queue_size"],
            }
        ),
        flush=True,
    )
    await bus.stop()


async def receiver(url: str, count: int) -> None:
    from voicebus import EventBus, EventType

    bus = EventBus(url)
    handled = 0
    done = asyncio.Event()
    marker = asyncio.Event()

    def on_event(_event: Any) -> None:
        nonlocal handled
        handled += 1
        if handled >= count and marker.is_set():
            done.set()

    def on_marker(_event: Any) -> None:
        marker.set()
        if handled >= count:
            done.set()

    bus.subscribe(EventType.WAKE_WORD_DETECTED, on_event)
    bus.subscribe(EventType.SPEECH_DETECTED, on_event)
    bus.subscribe(EventType.SYSTEM_STOPPED, on_marker)
    await bus.ready()
    gc.collect()
    before = rss_bytes()
    print(json.dumps({"rss": before}), flush=True)
    started = time.perf_counter()
    try:
        await asyncio.wait_for(done.wait(), 45)
    except TimeoutError:
        pass
    seconds = time.perf_counter() - started
    gc.collect()
    after = rss_bytes()
    stats = bus.get_stats()
    print(
        json.dumps(
            {
                "rss_before": before,
                "rss_after": after,
                "handled": handled,
                "marker": marker.is_set(),
                "seconds": seconds,
                "metrics": stats["metrics"],
            }
        ),
        flush=True,
    )
    await bus.stop()


def send(url: str, kind: str, count: int) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    parts = urlsplit(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_queued_messages_set(0)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    for n in range(count):
        if kind == "long-topics":
            topic = f"hermes/hotword/{n:06d}{'w' * 60_000}/detected"
            info = client.publish(topic, b"{}", qos=1)
        else:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            event_id, source = f"{n:06d}{'i' * 60_000}", f"{n:06d}{'s' * 60_000}"
            props.UserProperty = [("id", event_id), ("source", source)]
            payload = b'{"text": "hi"}'
            info = client.publish("hermes/asr/textCaptured", payload, qos=1, properties=props)
        if n % 100 == 99:
            info.wait_for_publish(60)  # keep the sender's own memory small
    client.publish(MARKER_TOPIC, b"{}", qos=1).wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def flood(url: str, topic: str, count: int, size: int) -> None:
    import paho.mqtt.client as mqtt

    parts = urlsplit(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    payload = (b"not json " * (size // 9 + 1))[:size]
    for _ in range(count):
        client.publish(topic, payload, qos=0)
    client.publish(MARKER_TOPIC, b"{}", qos=1).wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def retain(url: str, count: int) -> None:
    import paho.mqtt.client as mqtt

    parts = urlsplit(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    stamp = time.time()
    for n in range(count):
        record = {"id": f"flood-{n}", "reason": "invalid_json", "time": stamp, "error": "x"}
        client.publish(f"voicebus/deadLetter/flood-{n}", json.dumps(record), qos=0, retain=True)
    client.publish("flood/retained/done", b"", qos=1).wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def main(argv: list[str]) -> None:
    role = argv[0]
    if role == "victim":
        asyncio.run(victim(argv[1], argv[2], int(argv[3])))
    elif role == "flood":
        flood(argv[1], argv[2], int(argv[3]), int(argv[4]))
    elif role == "receiver":
        asyncio.run(receiver(argv[1], int(argv[2])))
    elif role == "send":
        send(argv[1], argv[2], int(argv[3]))
    elif role == "retain":
        retain(argv[1], int(argv[2]))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
