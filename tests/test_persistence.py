"""Persistent sessions (client id + session expiry) and slow subscribers on Mosquitto."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from tests.broker import Mosquitto, config_value
from tests.helpers import Collector, marker
from voicebus import EventBus, EventType
from voicebus.transport.mqtt.transport import MqttTransport


async def _offline_then_back(url: str, n: int) -> tuple[list[str], bool]:
    """A persistent subscriber goes away, `n` events are published, it comes back:
    the texts it receives and whether the broker resumed its session."""
    client_id = f"stt-{uuid.uuid4().hex[:8]}"
    first = EventBus(url, client_id=client_id, session_expiry=3600)
    first.subscribe(EventType.SPEECH_DETECTED, Collector())
    await first.start()
    await first.stop()

    async with EventBus(url) as pub:
        await asyncio.gather(
            *(pub.emit(EventType.SPEECH_DETECTED, {"text": f"e{i}"}) for i in range(n))
        )

    got = Collector()
    back = EventBus(url, client_id=client_id, session_expiry=3600)
    back.subscribe(EventType.SPEECH_DETECTED, got)  # before start: queued events arrive at once
    await back.start()
    try:
        transport = back.transport
        assert isinstance(transport, MqttTransport)
        resumed = transport.session_present
        await marker(back, timeout=30)  # queued after what the session holds
    finally:
        await back.stop()
    return [e.data["text"] for e in got.events], resumed


async def test_persistent_subscriber_gets_the_500_events_published_while_offline(
    mosquitto: Mosquitto,
) -> None:
    texts, resumed = await _offline_then_back(mosquitto.url(), 500)
    assert resumed
    assert sorted(texts) == sorted(f"e{i}" for i in range(500))


async def test_without_a_session_nothing_waits_for_a_service(mosquitto: Mosquitto) -> None:
    url = mosquitto.url()
    client_id = f"stt-{uuid.uuid4().hex[:8]}"
    async with EventBus(url, client_id=client_id) as first:
        first.subscribe(EventType.SPEECH_DETECTED, Collector())
    async with EventBus(url) as pub:
        await pub.emit(EventType.SPEECH_DETECTED, {"text": "missed"})
    got = Collector()
    back = EventBus(url, client_id=client_id)
    back.subscribe(EventType.SPEECH_DETECTED, got)
    async with back:
        assert isinstance(back.transport, MqttTransport)
        assert not back.transport.session_present
        await marker(back)  # "missed", if kept for it, would have come before it
        assert got.events == []


async def test_slow_subscriber_loses_nothing_with_the_shipped_limits(tmp_path: Path) -> None:
    """1,500 QoS 1 events queued for one subscriber: Mosquitto's default
    max_queued_messages (1000) drops the newest; mosquitto.conf keeps them all."""
    assert int(config_value("mosquitto.conf", "max_queued_messages") or 0) >= 100_000
    assert int(config_value("secure.conf", "max_queued_messages") or 0) >= 100_000
    results = {}
    for name, extra in [("shipped", ""), ("default", "max_queued_messages 1000\n")]:
        with Mosquitto(tmp_path / name, extra=extra) as broker:
            texts, _ = await _offline_then_back(broker.url(), 1500)
        results[name] = len(set(texts))
    assert results["shipped"] == 1500
    assert results["default"] <= 1000  # the newest 500 silently dropped
