"""Back-pressure keeps the link: a bus whose handlers are behind stops taking
messages through MQTT 5 flow control (withheld PUBACKs and its Receive Maximum),
while the socket is still read, so keepalives go on and nothing at QoS 1 is lost.

Over a real Mosquitto: the link must outlive several keepalive intervals (paho
closes it after 1.5x keepalive without a PINGRESP), which takes that long.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.broker import Mosquitto
from voicebus import Event, EventBus, EventType
from voicebus.transport import Message, parse_url
from voicebus.transport.mqtt import MqttOptions, MqttTransport
from voicebus.wire.status import OFFLINE, ONLINE, status_topic

KEEPALIVE = 3  # seconds: short, so 4 keepalives pass in ~12 s
PINGS = 4
"""PINGRESPs the slow bus must read while its handler is blocked: ~4x keepalive,
well past the 1.5x after which a link that is not read is closed."""


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.05)


class _Pings(logging.Handler):
    """Counts the PINGRESPs paho reads (its debug log, through aiomqtt's logger)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "Received PINGRESP":
            self.count += 1


@pytest.fixture
def pings() -> Iterator[_Pings]:
    paho_log = logging.getLogger("voicebus.mqtt.paho")
    handler = _Pings()
    level, propagate = paho_log.level, paho_log.propagate
    paho_log.addHandler(handler)
    paho_log.setLevel(logging.DEBUG)
    paho_log.propagate = False  # paho's debug lines stay out of the test's log capture
    try:
        yield handler
    finally:
        paho_log.removeHandler(handler)
        paho_log.setLevel(level)
        paho_log.propagate = propagate


@pytest.mark.timeout(120)
@pytest.mark.parametrize("session_expiry", [None, 3600], ids=["no-session", "persistent"])
async def test_a_handler_blocked_for_4_keepalives_keeps_the_link_and_gets_all_200(
    fresh_mosquitto: Mosquitto, pings: _Pings, session_expiry: int | None
) -> None:
    """Without a persistent session this lost 197 of 200 (the link closed by the
    keepalive check, the broker forgot the rest); with one, all came back after a
    reconnect and a false offline status."""
    url = fresh_mosquitto.url()
    client_id = f"slow-{uuid.uuid4().hex[:8]}"
    release = asyncio.Event()
    handled: list[str] = []

    async def handler(event: Event) -> None:
        if not handled:
            handled.append(event.data["text"])
            await release.wait()  # blocked until the test has seen the link outlive it
            return
        handled.append(event.data["text"])

    statuses: list[bytes] = []
    watcher = MqttTransport(
        parse_url(url), MqttOptions(client_id=f"watch-{client_id}", status=False)
    )
    await watcher.connect(lambda m: statuses.append(m.payload))
    await watcher.subscribe(status_topic(client_id), 1)

    bus = EventBus(
        url,
        client_id=client_id,
        keepalive=KEEPALIVE,
        max_queue_size=2,
        session_expiry=session_expiry,
    )
    bus.subscribe(EventType.SPEECH_DETECTED, handler)
    try:
        async with bus, EventBus(url) as pub:
            await bus.ready()
            transport = bus.transport  # an internal: how much the transport holds back
            assert isinstance(transport, MqttTransport)
            receive_maximum = transport.options.receive_maximum
            await _until(lambda: statuses == [ONLINE], 5)

            for i in range(200):  # QoS 1; each returns on the broker's PUBACK
                await pub.emit(EventType.SPEECH_DETECTED, {"text": f"e{i}"})
            await _until(lambda: bool(handled), 5)
            pings_at_block = pings.count

            held: list[int] = []
            queued: list[int] = []

            def link_outlived_the_block() -> bool:
                held.append(transport.held)
                queued.append(bus.get_stats()["queue_size"])
                return pings.count - pings_at_block >= PINGS or not transport.online

            await _until(link_outlived_the_block, PINGS * KEEPALIVE * 2 + 10)
            assert pings.count - pings_at_block >= PINGS  # keepalives went on
            assert transport.online and bus.get_stats()["reconnects"] == 0
            assert handled == ["e0"]
            # Flow control, not a pause of the socket: the bus's queue is full, the
            # transport holds what the broker sent before it stopped at Receive Maximum.
            assert max(queued) <= 2
            assert 0 < max(held) <= receive_maximum
            assert held[-1] == max(held)  # the broker stopped: nothing more came

            release.set()
            await _until(lambda: len(handled) == 200, 30)
            assert handled == [f"e{i}" for i in range(200)]
            assert bus.get_stats()["reconnects"] == 0
            assert transport.held == 0
        assert OFFLINE not in statuses[:-1]  # offline only at the clean stop
        assert statuses[0] == ONLINE
    finally:
        await watcher.close()


async def test_qos0_messages_beyond_the_held_bound_are_dropped_and_counted(
    fresh_mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QoS 0 has no flow control in MQTT: while paused, the transport holds up to
    its bound and drops (counts) the rest; QoS 1 ones are all kept."""
    from voicebus.transport.mqtt import receiver

    monkeypatch.setattr(receiver, "QOS0_HELD_MAX", 5)
    url = fresh_mosquitto.url()
    got: list[Message] = []
    sub = MqttTransport(parse_url(url), MqttOptions(client_id=f"q0-{uuid.uuid4().hex[:6]}"))
    pub = MqttTransport(parse_url(url), MqttOptions(client_id=f"q0p-{uuid.uuid4().hex[:6]}"))
    await sub.connect(got.append)
    await pub.connect(lambda m: None)
    try:
        await sub.subscribe("vb/bp/#", 1)
        sub.pause_reading()
        for i in range(10):
            await pub.publish(Message(f"vb/bp/zero/{i}", b"0", qos=0))
        for i in range(3):
            await pub.publish(Message(f"vb/bp/one/{i}", b"1", qos=1))
        await pub.publish(Message("vb/bp/zero/marker", b"0", qos=0))
        await pub.publish(Message("vb/bp/one/marker", b"1", qos=1))
        await _until(lambda: sub.held == 5 + 4, 5)  # 5 QoS 0 kept, 4 QoS 1
        assert got == []
        sub.resume_reading()
        topics = [m.topic for m in got]
        assert topics == [f"vb/bp/zero/{i}" for i in range(5)] + [
            f"vb/bp/one/{i}" for i in range(3)
        ] + ["vb/bp/one/marker"]
        assert sub.dropped_qos0 == 6
    finally:
        await sub.close()
        await pub.close()
