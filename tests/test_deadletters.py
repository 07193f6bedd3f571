"""Dead letters retained on the broker: listed, replayed, purged; they survive restarts."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import pytest

from tests.broker import Mosquitto
from tests.helpers import Collector, eventually
from voicebus import Event, EventBus, EventType
from voicebus.errors import DeadLetterNotFoundError
from voicebus.ops.dlq import (
    get_dead_letter,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letter,
)
from voicebus.transport import Message


async def _records(bus: EventBus, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """This bus's dead letters on the broker, once there are `count` of them."""

    async def retained() -> list[dict[str, Any]] | None:
        records = await list_dead_letters(bus, client_id=bus.client_id)
        return records if len(records) >= count else None

    return await eventually(retained, timeout, interval=0.02)


class Flaky:
    """Fails on the first event, handles the ones after."""

    __name__ = "flaky_handler"

    def __init__(self) -> None:
        self.calls: list[Event] = []
        self.handled = Collector("handled")

    def __call__(self, event: Event) -> None:
        self.calls.append(event)
        if len(self.calls) == 1:
            raise RuntimeError("model not loaded yet")
        self.handled(event)


async def test_failed_handler_is_listed_replayed_and_cleared(bus_url: str) -> None:
    async with EventBus(bus_url, client_id=f"llm-{uuid.uuid4().hex[:8]}") as bus:
        flaky = Flaky()
        bus.subscribe(EventType.SPEECH_DETECTED, flaky)
        sent = await bus.emit(
            EventType.SPEECH_DETECTED,
            {"text": "what time is it", "sessionId": "s-1"},
            metadata={"trace": "t-7"},
        )
        (record,) = await _records(bus, 1)
        assert record["reason"] == "handler_error"
        assert record["handler"] == "flaky_handler"
        assert record["error"] == "model not loaded yet"
        assert record["exception"] == "RuntimeError"
        assert record["client_id"] == bus.client_id
        assert record["topic"] == "hermes/asr/textCaptured"
        assert json.loads(record["payload"])["text"] == "what time is it"
        assert record["envelope"]["id"] == sent.id
        assert record["envelope"]["type"] == "speech_detected"
        assert record["envelope"]["correlation_id"] == "s-1"
        assert record["envelope"]["metadata"] == {"trace": "t-7"}
        (local,) = bus.get_dead_letter_queue()
        assert local["id"] == record["id"]
        assert await get_dead_letter(bus, record["id"]) == record

        replayed = await replay_dead_letter(bus, record["id"])
        assert replayed is not None and replayed.id != sent.id
        (again,) = await flaky.handled.wait(1)
        assert again.data["text"] == "what time is it"
        assert again.correlation_id == "s-1"
        assert again.metadata == {"trace": "t-7", "replay_of": record["id"]}
        assert await list_dead_letters(bus, client_id=bus.client_id) == []
        with pytest.raises(DeadLetterNotFoundError):
            await replay_dead_letter(bus, record["id"])


async def test_undecodable_messages_keep_their_raw_payload_and_can_be_purged(
    bus_url: str,
) -> None:
    async with EventBus(bus_url, client_id=f"stt-{uuid.uuid4().hex[:8]}") as bus:
        bus.subscribe(EventType.SPEECH_DETECTED, Collector())
        await bus.publish_message(Message("hermes/asr/textCaptured", b"not json"))
        await bus.publish_message(Message("hermes/asr/textCaptured", b"\xff\xfe{}"))
        records = await _records(bus, 2)
        by_reason = {r["reason"]: r for r in records}
        assert set(by_reason) == {"invalid_json", "invalid_utf8"}
        assert by_reason["invalid_json"]["payload"] == "not json"
        assert by_reason["invalid_json"]["envelope"]["type"] == "speech_detected"
        assert by_reason["invalid_json"]["envelope"]["source"] is None  # no properties came
        assert by_reason["invalid_utf8"]["payload"] is None
        assert base64.b64decode(by_reason["invalid_utf8"]["payload_base64"]) == b"\xff\xfe{}"

        # Replaying raw input publishes it again as it came (and it fails again).
        assert await replay_dead_letter(bus, by_reason["invalid_json"]["id"]) is None
        records = await _records(bus, 2)
        assert by_reason["invalid_json"]["id"] not in {r["id"] for r in records}
        assert sorted(r["payload"] or "" for r in records) == ["", "not json"]

        assert await purge_dead_letters(bus, records[0]["id"]) == 1
        assert await purge_dead_letters(bus, records[0]["id"]) == 0
        assert [r["id"] for r in await list_dead_letters(bus, client_id=bus.client_id)] == [
            records[1]["id"]
        ]
        assert await purge_dead_letters(bus, records[1]["id"]) == 1
        assert await list_dead_letters(bus, client_id=bus.client_id) == []


async def test_dead_letters_survive_a_broker_restart(fresh_mosquitto: Mosquitto) -> None:
    url = fresh_mosquitto.url()
    async with EventBus(url, client_id="tts-1") as bus:
        flaky = Flaky()
        bus.subscribe(EventType.TTS_STARTED, flaky)
        bus.subscribe("voicebus/tts/#", Collector())
        await bus.emit(EventType.TTS_STARTED, {"text": "hello"})
        await bus.publish_message(Message("voicebus/tts/unknownThing", b"{}"))
        records = await _records(bus, 2)
        assert {r["reason"] for r in records} == {"handler_error", "unknown_topic"}

    await asyncio.to_thread(fresh_mosquitto.restart)

    async with EventBus(url, client_id="tts-1") as bus:  # the service, restarted too
        flaky = Flaky()
        flaky.calls.append(Event(EventType.TTS_STARTED))  # fixed: no failure any more
        bus.subscribe(EventType.TTS_STARTED, flaky)
        after = await list_dead_letters(bus)
        assert [r["id"] for r in after] == [r["id"] for r in records]
        failed = next(r for r in after if r["reason"] == "handler_error")
        await replay_dead_letter(bus, failed["id"])
        (event,) = await flaky.handled.wait(1)
        assert event.data["text"] == "hello"
        assert [r["reason"] for r in await list_dead_letters(bus)] == ["unknown_topic"]
        assert await purge_dead_letters(bus) == 1
        assert await list_dead_letters(bus) == []
