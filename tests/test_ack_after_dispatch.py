"""QoS 1 messages are acknowledged (PUBACK) once dispatched, in receive order.

A subscriber that dies between receiving an event and handling it gets the event
again from its persistent session; PUBACKs go out in the order the PUBLISH
packets came, and never on a connection other than the one they belong to.

About internals: PUBACKs are observed where paho sends them (its private
`_send_puback`), the ack tokens where the transport hands them to the bus, and the
link is broken through paho's socket.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho_mqtt
import pytest

from tests.broker import Mosquitto
from tests.helpers import Collector, eventually, marker
from voicebus import Event, EventBus, EventType
from voicebus.transport import Message
from voicebus.transport.mqtt import receiver
from voicebus.transport.mqtt.paho_internals import PUBACK
from voicebus.transport.mqtt.receiver import Acks, PendingAck
from voicebus.transport.mqtt.transport import MqttTransport
from voicebus.wire.codec import encode
from voicebus.wire.routes import ROUTES

SUBSCRIBER = """
import asyncio, sys
from voicebus import EventBus, EventType

async def main(url, client_id, block_at, last):
    bus = EventBus(url, client_id=client_id, session_expiry=3600)
    # resolved on receipt, before the handler (blocked at block_at) gets to it
    received = bus.wait_for(EventType.SPEECH_DETECTED, filter_func=lambda e: e.data["text"] == last)

    async def handler(event):
        text = event.data["text"]
        print("start", text, flush=True)
        if text == block_at:
            await asyncio.Event().wait()
        print("done", text, flush=True)

    bus.subscribe(EventType.SPEECH_DETECTED, handler)
    await bus.start()
    await bus.ready()
    print("ready", flush=True)
    await received
    print("received", last, flush=True)
    await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


async def _lines(proc: asyncio.subprocess.Process, *expected: str, timeout: float = 10.0) -> None:
    """Read the subscriber's output until it has printed every line in `expected`."""
    assert proc.stdout is not None
    missing = set(expected)
    while missing:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise AssertionError(f"subscriber exited before printing {sorted(missing)}")
        missing.discard(line.decode().strip())


async def test_events_whose_handlers_had_not_finished_come_back_after_a_crash(
    mosquitto: Mosquitto,
) -> None:
    """A persistent subscriber is SIGKILLed while its handler is stuck on e2 (e3..e5
    received, queued): a new process with its client id gets e2..e5, not e0, e1."""
    url = mosquitto.url()
    client_id = f"crash-{uuid.uuid4().hex[:8]}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SUBSCRIBER,
        url,
        client_id,
        "e2",
        "e5",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        await _lines(proc, "ready")
        async with EventBus(url) as pub:
            for i in range(6):
                await pub.emit(EventType.SPEECH_DETECTED, {"text": f"e{i}"})
        await _lines(proc, "start e2", "received e5")  # e3..e5 in the subscriber's queue
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()

    got = Collector()
    back = EventBus(url, client_id=client_id, session_expiry=3600)
    back.subscribe(EventType.SPEECH_DETECTED, got)
    async with back:
        await marker(back)  # queued after what the session holds
    assert [e.data["text"] for e in got.events] == ["e2", "e3", "e4", "e5"]


@pytest.fixture
def pubacks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[paho_mqtt.Client, int]]:
    """Every PUBACK sent in this process: (paho client, packet id).

    Spied where PUBACKs are written: the transport's own writer (`write_packet`,
    as the receiver calls it) and paho's private ``_send_puback``, so one paho
    sent on its own (manual acknowledgement off) would be recorded too.
    """
    sent: list[tuple[paho_mqtt.Client, int]] = []
    original = paho_mqtt.Client._send_puback  # an internal: where paho sends a PUBACK
    write = receiver.write_packet

    def record(self: paho_mqtt.Client, mid: int) -> Any:
        sent.append((self, mid))
        return original(self, mid)

    def record_written(paho: paho_mqtt.Client, packet: bytes, command: int = 0x30) -> bool:
        if command == PUBACK:
            sent.extend(
                (paho, (packet[i + 2] << 8) | packet[i + 3]) for i in range(0, len(packet), 4)
            )
        return write(paho, packet, command)

    monkeypatch.setattr(paho_mqtt.Client, "_send_puback", record)
    monkeypatch.setattr(receiver, "write_packet", record_written)
    return sent


def _spy(bus: EventBus) -> list[PendingAck]:
    """The ack tokens of the messages `bus` receives, in receive order."""
    tokens: list[PendingAck] = []
    on_message = bus._side.inbound.on_message  # an internal: the ack tokens the transport hands in

    def spy(message: Message) -> None:
        assert isinstance(message.ack, PendingAck)
        tokens.append(message.ack)
        on_message(message)

    bus._side.inbound.on_message = spy  # type: ignore[method-assign]
    return tokens


def _paho(bus: EventBus) -> paho_mqtt.Client:
    """The paho client of `bus`'s link (an internal: PUBACKs are counted per client)."""
    transport = bus.transport
    assert isinstance(transport, MqttTransport) and transport._paho is not None
    return transport._paho


def _blocking(release: asyncio.Event, handled: list[str]) -> Callable[[Event], Any]:
    async def handler(event: Event) -> None:
        handled.append(event.data["text"])
        if event.data["text"] == "slow":
            await release.wait()

    return handler


async def test_pubacks_wait_for_an_earlier_message_still_in_its_handler(
    mosquitto: Mosquitto, pubacks: list[tuple[paho_mqtt.Client, int]]
) -> None:
    """slow (in its handler), its duplicate and an invalid one (both dropped at
    once): no PUBACK until slow is handled, then all three in receive order."""
    url = mosquitto.url()
    release = asyncio.Event()
    handled: list[str] = []
    bus = EventBus(url, client_id=f"order-{uuid.uuid4().hex[:8]}", session_expiry=60)
    bus.subscribe(EventType.SPEECH_DETECTED, _blocking(release, handled))
    tokens = _spy(bus)
    async with bus, EventBus(url) as pub:
        await bus.ready()
        slow = await pub.emit(EventType.SPEECH_DETECTED, {"text": "slow"})
        _, again = encode(
            ROUTES.get(EventType.SPEECH_DETECTED),
            {"text": "slow"},
            event_id=slow.id,
            source=slow.source,
            correlation_id=None,
            metadata=None,
        )
        await pub.publish_message(again)
        await pub.publish_message(Message(slow.topic, b"{not json", 1, False))
        await eventually(
            lambda: len(tokens) == 3 and bool(bus.get_dead_letter_queue()) and bool(handled)
        )
        assert handled == ["slow"]
        assert [t.done for t in tokens] == [False, True, True]
        assert pubacks == []  # the two dropped ones wait behind slow

        release.set()
        await eventually(lambda: len(pubacks) == 3)
        paho = _paho(bus)
        assert pubacks == [(paho, t.mid) for t in tokens]

        await pub.emit(EventType.SPEECH_DETECTED, {"text": "next"})
        await eventually(lambda: len(pubacks) == 4)
        assert pubacks[3] == (paho, tokens[3].mid)
    assert handled == ["slow", "next"]


async def test_acks_of_a_lost_connection_are_not_sent_on_the_next(
    mosquitto: Mosquitto, pubacks: list[tuple[paho_mqtt.Client, int]]
) -> None:
    """The link drops while slow is in its handler: the broker resends slow on the
    new connection, where the bus acknowledges it at once as a duplicate; the old
    connection's PUBACK is dropped; slow is handled once and not sent again."""
    url = mosquitto.url()
    client_id = f"relink-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {"session_expiry": 3600, "reconnect_delay": 0.05}
    release = asyncio.Event()
    handled: list[str] = []
    bus = EventBus(url, client_id=client_id, **options)
    bus.subscribe(EventType.SPEECH_DETECTED, _blocking(release, handled))
    tokens = _spy(bus)
    async with bus, EventBus(url) as pub:
        await bus.ready()
        await pub.emit(EventType.SPEECH_DETECTED, {"text": "slow"})
        await eventually(lambda: handled == ["slow"])
        transport = bus.transport
        assert isinstance(transport, MqttTransport)
        old = transport._paho  # an internal: the paho client of this link
        assert old is not None
        sock = old.socket()
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        # slow is resent on the new connection (maybe read with its CONNACK)
        await eventually(lambda: len(tokens) == 2 and transport._paho is not None)
        new = transport._paho
        assert new is not None and new is not old
        assert tokens[1].mid == tokens[0].mid and tokens[1].done
        await eventually(lambda: len(pubacks) == 1)
        assert pubacks == [(new, tokens[1].mid)]

        release.set()
        await eventually(lambda: tokens[0].done)  # handled: its PUBACK would be sent now
        assert pubacks == [(new, tokens[1].mid)]  # none for the old connection
        assert handled == ["slow"]

    got = Collector()
    back = EventBus(url, client_id=client_id, **options)
    back.subscribe(EventType.SPEECH_DETECTED, got)
    async with back:
        await marker(back)  # a resent slow would have come before it
        assert got.events == []


class _FakePaho:
    """Stands in for a paho client and its socket: records the PUBACKs written."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self._out_packet: list[object] = []  # nothing queued in paho
        self._sock = self

    def send(self, data: bytes) -> int:
        for i in range(0, len(data), 4):
            assert data[i : i + 2] == bytes((PUBACK, 2))
            self.sent.append((data[i + 2] << 8) | data[i + 3])
        return len(data)


def test_acks_release_in_receive_order_and_stop_when_closed() -> None:
    paho = _FakePaho()
    acks = Acks(paho)  # type: ignore[arg-type]
    a, b, c = (acks.expect(mid) for mid in (7, 8, 9))
    acks.release(c)
    acks.release(b)
    assert paho.sent == []
    acks.release(a)
    acks.release(a)  # once only
    assert paho.sent == [7, 8, 9] and len(acks) == 0
    d = acks.expect(10)
    acks.close()
    acks.release(d)
    assert paho.sent == [7, 8, 9]


async def test_without_a_persistent_session_acks_go_out_at_once(
    mosquitto: Mosquitto, pubacks: list[tuple[paho_mqtt.Client, int]]
) -> None:
    """No session to redeliver from: holding the PUBACK would only shrink the
    broker's in-flight window, so it is sent on receipt, handler still running."""
    url = mosquitto.url()
    release = asyncio.Event()
    handled: list[str] = []
    bus = EventBus(url)
    bus.subscribe(EventType.SPEECH_DETECTED, _blocking(release, handled))
    async with bus, EventBus(url) as pub:
        await bus.ready()
        await pub.emit(EventType.SPEECH_DETECTED, {"text": "slow"})
        await eventually(lambda: handled == ["slow"])
        receiver = _paho(bus)
        await eventually(lambda: any(client is receiver for client, _ in pubacks))
        release.set()


async def test_a_handler_awaiting_a_reply_behind_a_full_queue_gets_it(tmp_path: Path) -> None:
    """Mosquitto's default in-flight window (20): held PUBACKs are capped
    (`max_unacked`), so the reply behind 30 queued events still comes through."""
    with Mosquitto(tmp_path / "b", extra="max_inflight_messages 20") as broker:
        url = broker.url()
        sub = EventBus(url, client_id=f"sub-{uuid.uuid4().hex[:6]}", session_expiry=60)
        got: list[Event | None] = []
        first = asyncio.Event()

        async def handler(event: Event) -> None:
            if event.data["text"] == "first":
                first.set()
                got.append(await sub.wait_for(EventType.MODEL_LOADED, timeout=5))

        sub.subscribe(EventType.SPEECH_DETECTED, handler)
        async with sub, EventBus(url) as pub:
            await sub.ready()
            await pub.emit(EventType.SPEECH_DETECTED, {"text": "first"})
            await asyncio.wait_for(first.wait(), 5)
            for i in range(30):
                await pub.emit(EventType.SPEECH_DETECTED, {"text": f"n{i}"})
            await pub.emit(EventType.MODEL_LOADED, {"model": "m"})
            await eventually(lambda: bool(got), timeout=8)
        assert got[0] is not None and got[0].data["model"] == "m"
