"""The process-wide bus and the seed's convenience functions."""

from __future__ import annotations

import pytest

from tests.helpers import Collector
from voicebus import EventBus, EventType, emit_event, subscribe_to_events


async def test_get_instance_is_a_singleton_discarded_on_stop(
    bus_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICEBUS_URL", bus_url)
    first = await EventBus.get_instance()
    assert first is await EventBus.get_instance()
    assert first.url == bus_url and not first.is_running
    await first.start()
    await first.stop()
    second = await EventBus.get_instance()
    assert second is not first
    await second.stop()


async def test_convenience_functions_start_the_singleton(
    bus_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICEBUS_URL", bus_url)
    got = Collector()
    subscribe_to_events(EventType.WAKE_WORD_DETECTED, got)
    sent = await emit_event(EventType.WAKE_WORD_DETECTED, {"confidence": 0.95})
    (event,) = await got.wait(1)
    assert event.id == sent.id and event.data["confidence"] == 0.95
    bus = await EventBus.get_instance()
    assert bus.is_running
    await bus.stop()


def test_default_url_is_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOICEBUS_URL", raising=False)
    assert EventBus().url == "memory://"
    with pytest.raises(TypeError, match="unknown EventBus option"):
        EventBus(sesion_expiry=3)
