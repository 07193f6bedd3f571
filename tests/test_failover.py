"""Failover across the broker addresses of one URL: two independent Mosquittos,
the first killed mid-stream; publisher and subscriber move to the second."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from voicebus import EventBus, EventType
from voicebus.errors import BrokerUnavailableError, VoicebusError
from voicebus.transport import parse_url
from voicebus.transport.mqtt import MqttTransport

from .broker import Mosquitto, free_port
from .helpers import Collector, eventually

FAST = {"reconnect_delay": 0.02, "reconnect_max_delay": 0.2}


def test_url_names_several_brokers() -> None:
    url = parse_url("mqtts://ann:s3cr%40t@Host1:8884,[::1]:9000,host3?protocol=3.1.1")
    assert url.brokers == (("host1", 8884), ("::1", 9000), ("host3", 8883))
    assert (url.host, url.port, url.username, url.password) == ("host1", 8884, "ann", "s3cr@t")
    assert url.query == {"protocol": "3.1.1"}
    assert url.redacted() == "mqtts://ann:***@host1:8884,[::1]:9000,host3:8883"
    assert "s3cr" not in repr(url)
    assert parse_url("mqtt://a").brokers == (("a", 1883),)
    for bad in ("mqtt://a:1883,,b", "mqtt://a:99999", "mqtt://ann:pw@a:x1,b"):
        with pytest.raises(VoicebusError) as err:
            parse_url(bad)
        assert "pw" not in str(err.value)


async def test_failover_to_the_second_broker_mid_stream(tmp_path: Path) -> None:
    first = Mosquitto(tmp_path / "first").start()
    second = Mosquitto(tmp_path / "second").start()
    url = f"mqtt://127.0.0.1:{first.port},127.0.0.1:{second.port}"
    got = Collector()
    sub = EventBus(url, client_id=f"fo-sub-{uuid.uuid4().hex[:6]}", session_expiry=60, **FAST)
    sub.subscribe(EventType.SPEECH_DETECTED, got)
    pub = EventBus(url, **FAST)
    try:
        await sub.start()
        await sub.ready()
        await pub.start()
        ts, tp = sub.transport, pub.transport
        assert isinstance(ts, MqttTransport) and isinstance(tp, MqttTransport)
        on_second = f"127.0.0.1:{second.port}"
        assert ts.broker == tp.broker == f"127.0.0.1:{first.port}"

        def switched() -> bool:
            return all(t.broker == on_second and t.online for t in (ts, tp))

        after: list[int] = []  # events emitted once both had moved to the second broker
        for i in range(500):
            if i == 150:
                first.kill()
            if i > 150 and switched():
                after.append(i)
            await pub.emit(EventType.SPEECH_DETECTED, {"text": f"e{i}"})
            await asyncio.sleep(0.001)  # a stream paced like live traffic, not a sync
        assert len(after) > 100, f"the switch took most of the stream ({len(after)} after)"
        texts = lambda: {e.data["text"] for e in got.events}  # noqa: E731
        await eventually(lambda: {f"e{i}" for i in after} <= texts(), timeout=10)
        assert len(got.events) == len(texts()), "an event was handled twice"
        assert ts.session_present is False  # no session on the new broker
        lost = 500 - len(texts())
        print(f"failover: {len(after)} emitted after the switch, all handled; {lost} lost")
    finally:
        await pub.stop()
        await sub.stop()
        first.stop()
        second.stop()


async def test_connects_to_the_first_address_that_answers(mosquitto: Mosquitto) -> None:
    dead = free_port()  # nothing listens there
    got = Collector()
    async with EventBus(f"mqtt://127.0.0.1:{dead},127.0.0.1:{mosquitto.port}") as bus:
        transport = bus.transport
        assert isinstance(transport, MqttTransport)
        assert transport.broker == f"127.0.0.1:{mosquitto.port}"
        bus.subscribe(EventType.SPEECH_DETECTED, got)
        await bus.ready()
        await bus.emit(EventType.SPEECH_DETECTED, {"text": "via the second"})
        await got.wait(1)
    with pytest.raises(BrokerUnavailableError):  # none answers: the usual error
        await EventBus(f"mqtt://127.0.0.1:{dead},127.0.0.1:{free_port()}").start()
