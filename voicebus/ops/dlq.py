"""The dead letters retained on the broker: list, get, replay, purge (`voicebus dlq`).

Each function opens a side connection (`voicebus.ops.retained`) to the bus's
broker, so it works from any process on the same broker as the bus that
recorded the dead letter.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any

from pydantic_core import from_json

from ..deadletters import DEAD_LETTER_PREFIX, HANDLER_ERROR, MAX_RECORD_PAYLOAD, dead_letter_topic
from ..errors import DeadLetterNotFoundError, VoicebusError
from ..transport import Message
from ..wire.codec import parse_json_object
from ..wire.events import Event
from .retained import clear_retained, read_retained, scan_retained

if TYPE_CHECKING:
    from ..bus import EventBus

log = logging.getLogger("voicebus.deadletters")

__all__ = ["get_dead_letter", "list_dead_letters", "purge_dead_letters", "replay_dead_letter"]


def _parse(topic: str, payload: bytes) -> dict[str, Any] | None:
    try:
        doc = from_json(payload)
    except ValueError:
        log.warning("ignoring a dead letter on %s that is not JSON", topic)
        return None
    if not isinstance(doc, dict):
        log.warning("ignoring a dead letter on %s that is not a JSON object", topic)
        return None
    try:  # anyone allowed to write voicebus/deadLetter/# can put anything there
        doc["time"] = float(doc.get("time") or 0)
    except (TypeError, ValueError):
        log.warning("ignoring a dead letter on %s with a malformed time", topic)
        return None
    doc.setdefault("id", topic[len(DEAD_LETTER_PREFIX) :])
    return doc


async def list_dead_letters(
    bus: EventBus, timeout: float = 5.0, client_id: str | None = None
) -> list[dict[str, Any]]:
    """Every dead letter retained on the broker (oldest first), optionally only those
    recorded by `client_id`."""
    found = await read_retained(bus, DEAD_LETTER_PREFIX + "+", timeout)
    records = [doc for topic, payload in found.items() if (doc := _parse(topic, payload))]
    if client_id is not None:
        records = [r for r in records if r.get("client_id") == client_id]
    records.sort(key=lambda r: (r["time"], str(r.get("id"))))
    return records


async def get_dead_letter(
    bus: EventBus, dead_letter_id: str, timeout: float = 5.0
) -> dict[str, Any]:
    """One retained dead letter; `DeadLetterNotFoundError` when there is none."""
    topic = dead_letter_topic(dead_letter_id)
    found = await read_retained(bus, topic, timeout)
    doc = _parse(topic, found[topic]) if topic in found else None
    if doc is None:
        raise DeadLetterNotFoundError(f"no dead letter {dead_letter_id!r} on {bus.redacted_url}")
    return doc


def _payload_bytes(doc: dict[str, Any]) -> bytes:
    if doc.get("payload_truncated"):
        raise VoicebusError(
            f"dead letter {doc.get('id')!r} holds only the first {MAX_RECORD_PAYLOAD} bytes "
            "of its payload; it cannot be replayed"
        )
    if doc.get("payload_base64") is not None:
        return base64.b64decode(doc["payload_base64"])
    text = doc.get("payload")
    return text.encode("utf-8") if isinstance(text, str) else b""


async def replay_dead_letter(
    bus: EventBus, dead_letter_id: str, timeout: float = 5.0
) -> Event | None:
    """Send a dead letter again, then clear it from the broker.

    A failed handler's event is re-emitted as a new event (new id, same type, data,
    source and correlation id; ``metadata["replay_of"]`` names the dead letter) and
    returned; every subscriber sees it. A message that failed to decode is published
    again as it arrived (topic and payload) and ``None`` is returned.
    """
    doc = await get_dead_letter(bus, dead_letter_id, timeout)
    topic = doc.get("topic")
    if not isinstance(topic, str) or not topic:
        raise VoicebusError(f"dead letter {dead_letter_id!r} has no topic to replay to")
    payload = _payload_bytes(doc)
    envelope = doc.get("envelope") or {}
    event: Event | None = None
    found = bus.routes.match(topic)
    if doc.get("reason") == HANDLER_ERROR and found is not None:
        route, params = found
        if route.body is not None:  # a binary event: its bytes and topic parameters
            data: dict[str, Any] = {**params, route.body: payload}
        else:
            data = parse_json_object(payload) if payload else {}
        metadata = dict(envelope.get("metadata") or {})
        metadata["replay_of"] = dead_letter_id
        event = await bus.emit(
            route.event_type,
            data,
            source=envelope.get("source"),
            correlation_id=envelope.get("correlation_id"),
            metadata=metadata,
        )
    else:
        await bus.publish_message(Message(topic, payload, 1, False))
    await bus.publish_message(Message(dead_letter_topic(dead_letter_id), b"", 1, True))
    return event


PURGE_ROUNDS = 10
"""Read-and-clear rounds `purge_dead_letters` makes at most while new dead letters
keep appearing (a bus still recording them)."""


async def purge_dead_letters(bus: EventBus, id: str | None = None, timeout: float = 5.0) -> int:
    """Clear one dead letter (`id`) or all of them from the broker; the number cleared.

    All: the dead letters are read (topics only) and cleared in batches, then read
    again, until a read finds none (at most `PURGE_ROUNDS` rounds, so a bus that
    keeps recording cannot keep the purge going). `timeout` bounds each wait for the
    broker, not the whole purge, so it completes however many there are.
    """
    topic_filter = dead_letter_topic(id) if id is not None else DEAD_LETTER_PREFIX + "+"
    total = 0
    for _ in range(1 if id is not None else PURGE_ROUNDS):
        topics = await _retained_topics(bus, topic_filter, timeout)
        if not topics:
            break
        total += await clear_retained(bus, topics, timeout)
    return total


async def _retained_topics(bus: EventBus, topic_filter: str, timeout: float) -> list[str]:
    """The topics of the retained messages matching `topic_filter` (payloads not kept)."""
    topics: list[str] = []
    await scan_retained(bus, topic_filter, lambda topic, _payload: topics.append(topic), timeout)
    return topics
