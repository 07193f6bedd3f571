"""Defence in depth: a message the broker refuses by closing the link (Mosquitto
sends DISCONNECT "malformed packet" for a control character in a topic) is taken
out of the outbox after the second refusal and dead-lettered as broker_refused,
instead of being sent again after every reconnect without end.

The message gets past the bus's own checks on purpose (`validated=True` skips
the topic check, as a bug in them would), over a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable

from tests.broker import Mosquitto
from tests.helpers import Collector
from voicebus import EventBus, EventType
from voicebus.transport import Message, parse_url
from voicebus.transport.mqtt import MqttOptions, MqttTransport
from voicebus.wire.status import ONLINE, status_topic

FAST = {"reconnect_delay": 0.05, "reconnect_max_delay": 0.1}


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.02)


async def test_a_message_the_broker_refuses_costs_a_few_reconnects_then_a_dead_letter(
    fresh_mosquitto: Mosquitto,
) -> None:
    url = fresh_mosquitto.url()
    client_id = f"poison-{uuid.uuid4().hex[:8]}"
    statuses: list[bytes] = []  # each link announces online: how many links there were
    watcher = MqttTransport(parse_url(url), MqttOptions(client_id=f"w-{client_id}", status=False))
    await watcher.connect(lambda m: statuses.append(m.payload))
    await watcher.subscribe(status_topic(client_id), 1)
    got = Collector()
    receiver = EventBus(url)
    receiver.subscribe(EventType.SPEECH_DETECTED, got)
    bus = EventBus(url, client_id=client_id, **FAST)
    poison = Message("vb/poison/kit\x01chen", b"{}", 1, False, validated=True)
    try:
        async with receiver, bus:
            await receiver.ready()
            await _until(lambda: statuses.count(ONLINE) == 1)

            await bus.publish_message(poison)  # returns once put back in the outbox
            for i in range(10):  # queued behind it while the link is down
                await bus.emit(EventType.SPEECH_DETECTED, {"text": f"v{i}"})
            await got.wait(10, timeout=15)
            assert [e.data["text"] for e in got.events] == [f"v{i}" for i in range(10)]

            refused = [d for d in bus.get_dead_letter_queue() if d.get("topic") == poison.topic]
            assert len(refused) == 1
            assert "broker_refused" in refused[0]["error"]
            # The count goes up once a new link has flushed its outbox, which may be
            # a moment after the receiver saw the flushed events.
            await _until(lambda: bus.get_stats()["reconnects"] >= 1)
            reconnects = bus.get_stats()["reconnects"]
            links = statuses.count(ONLINE)
            assert 1 <= reconnects <= 3
            assert links - 1 <= 3  # connections made after the first, resumed or not

            # Nothing left to refuse: the link stays up for what comes next.
            await bus.emit(EventType.SPEECH_DETECTED, {"text": "after"})
            await got.wait(11)
            assert bus.get_stats()["reconnects"] == reconnects
            assert statuses.count(ONLINE) == links
    finally:
        await watcher.close()
    print(f"poison: {reconnects} reconnect(s), {links - 1} new link(s)")


def _freeze(broker: Mosquitto) -> None:
    """SIGSTOP: the broker keeps its sockets open and answers nothing."""
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGSTOP)


async def test_a_link_broken_twice_with_the_same_message_in_flight_drops_nothing(
    fresh_mosquitto: Mosquitto,
) -> None:
    """A link that breaks without a DISCONNECT is never taken for a refusal (a
    crashed or restarted broker looks the same): here the broker is killed twice,
    each time with the same unacknowledged message in flight (the second time
    sent alone, first thing on the new link), and the message still goes through."""
    broker = fresh_mosquitto
    url = broker.url()
    pub = MqttTransport(
        parse_url(url), MqttOptions(client_id=f"rp-{uuid.uuid4().hex[:6]}", status=False, **FAST)
    )
    failed: list[Message] = []
    pub.on_publish_failed = lambda m, e: failed.append(m)
    await pub.connect(lambda m: None)
    connack = pub._connack  # an internal: freeze the broker right after the next CONNACK
    frozen: list[bool] = []

    def freeze_after_connack(session_present: bool, max_packet: int | None) -> None:
        connack(session_present, max_packet)
        if not frozen:
            frozen.append(True)
            _freeze(broker)

    try:
        _freeze(broker)
        publishing = asyncio.ensure_future(pub.publish(Message("vb/restart/one", b"1", 1, True)))
        await _until(lambda: len(pub._inflight) == 1)  # sent, no PUBACK (an internal)
        pub._connack = freeze_after_connack  # type: ignore[method-assign]
        await asyncio.to_thread(broker.kill)
        await publishing  # put back in the outbox
        await asyncio.to_thread(broker.start)
        await _until(lambda: bool(frozen) and len(pub._inflight) == 1)  # resent, alone
        await asyncio.to_thread(broker.kill)
        await _until(lambda: not pub.connected)
        await asyncio.to_thread(broker.start)
        await _until(lambda: pub.online and pub.outbox_size == 0 and not pub._inflight)
        assert failed == []
        got: list[Message] = []  # retained: the broker kept it
        check = MqttTransport(parse_url(url), MqttOptions(client_id="check", status=False))
        await check.connect(got.append)
        await check.subscribe("vb/restart/#", 1)
        await _until(lambda: bool(got))
        assert got[0].payload == b"1"
        await check.close()
    finally:
        if broker.proc is not None:
            broker.proc.send_signal(signal.SIGCONT)
        await pub.close()
