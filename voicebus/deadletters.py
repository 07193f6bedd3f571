"""Dead letters on the broker: ``voicebus/deadLetter/<id>``, retained, as JSON.

Every dead letter a bus records (a handler that raised; an inbound message that
was not UTF-8, not JSON, invalid for its event type, too large, or on an unknown
``voicebus/`` topic) is also published **retained**, so it survives the service
and broker restarts until it is replayed or purged (an empty retained message
clears it). The record::

    {"id": "3f2a...", "reason": "handler_error", "error": "boom",
     "exception": "ValueError", "handler": "on_text", "client_id": "stt-1",
     "time": 1718000000.0, "topic": "hermes/asr/textCaptured",
     "payload": "{\\"text\\":\\"hi\\"}", "payload_base64": null,
     "payload_size": 13, "payload_truncated": false,
     "envelope": {"id": "...", "type": "speech_detected", "source": "...",
                  "time": 1718000000.0, "correlation_id": null, "metadata": {}}}

``payload`` is the payload as text when it is UTF-8, else ``payload_base64``
holds it; payloads above `MAX_RECORD_PAYLOAD` bytes are cut (and cannot be
replayed). The functions below read the records straight from the broker, so
they work from any process (``voicebus`` CLI, a notebook) on the same broker.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from pydantic_core import from_json, to_json

from .codec import parse_json_object
from .errors import BrokerTimeoutError, VoicebusError
from .events import Event
from .failures import HANDLER_ERROR
from .transport import Message, Transport, open_transport

if TYPE_CHECKING:
    from .bus import EventBus

log = logging.getLogger("voicebus.deadletters")

DEAD_LETTER_PREFIX = "voicebus/deadLetter/"
MAX_RECORD_PAYLOAD = 64 * 1024
"""Payload bytes kept in a dead-letter record; longer payloads are cut."""

__all__ = [
    "DEAD_LETTER_PREFIX",
    "MAX_RECORD_PAYLOAD",
    "DeadLetterNotFoundError",
    "dead_letter_topic",
    "get_dead_letter",
    "list_dead_letters",
    "publish_dead_letter",
    "purge_dead_letters",
    "read_retained",
    "record_document",
    "replay_dead_letter",
]


class DeadLetterNotFoundError(VoicebusError, LookupError):
    """No retained dead letter with that id on the broker."""


def dead_letter_topic(dead_letter_id: str) -> str:
    """The retained topic of one dead letter."""
    if not dead_letter_id or any(c in dead_letter_id for c in "/+#\x00"):
        raise DeadLetterNotFoundError(f"invalid dead-letter id {dead_letter_id!r}")
    return DEAD_LETTER_PREFIX + dead_letter_id


def _envelope(event: Event | None) -> dict[str, Any] | None:
    if event is None:
        return None
    return {
        "id": event.id,
        "type": event.type.value,
        "source": event.source,
        "time": event.timestamp,
        "correlation_id": event.correlation_id,
        "metadata": event.metadata,
    }


def record_document(
    record: dict[str, Any], client_id: str, max_payload: int = MAX_RECORD_PAYLOAD
) -> dict[str, Any]:
    """The JSON document of an in-memory dead-letter record (see the module doc);
    at most `max_payload` bytes of the payload are kept."""
    event: Event | None = record.get("event")
    payload = record.get("payload")
    if payload is None and event is not None:
        payload = to_json(event.data)
    raw = bytes(payload) if payload is not None else None
    text: str | None = None
    b64: str | None = None
    truncated = False
    if raw is not None:
        if len(raw) > max_payload:
            raw = raw[:max_payload]
            truncated = True
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            b64 = base64.b64encode(raw).decode("ascii")
    size = len(payload) if payload is not None else 0
    return {
        "id": record.get("id"),
        "reason": record.get("reason"),
        "error": record.get("error"),
        "exception": record.get("exception"),
        "handler": record.get("handler"),
        "client_id": client_id,
        "time": record.get("time") or time.time(),
        "topic": record.get("topic") or (event.topic if event is not None else None),
        "payload": text,
        "payload_base64": b64,
        "payload_size": size,
        "payload_truncated": truncated,
        "envelope": _envelope(event),
    }


def publish_dead_letter(bus: EventBus, record: dict[str, Any]) -> Coroutine[Any, Any, None]:
    """Give `record` its broker id (``record["id"]``, at once) and return the
    coroutine that publishes it retained (the bus runs it in the background)."""
    dead_letter_id = record.get("id") or uuid.uuid4().hex[:16]
    record["id"] = dead_letter_id
    limit = bus._max_payload
    keep = MAX_RECORD_PAYLOAD
    payload = to_json(record_document(record, bus.client_id, keep))
    while len(payload) > limit and keep:  # the record must fit what we may publish
        keep //= 2
        payload = to_json(record_document(record, bus.client_id, keep))
    return _publish_retained(bus, dead_letter_topic(dead_letter_id), payload)


async def _publish_retained(bus: EventBus, topic: str, payload: bytes) -> None:
    transport = bus._transport
    if transport is None:
        log.warning("bus stopped: dead letter %s kept in memory only", topic)
        return
    try:
        await transport.publish(Message(topic, payload, 1, True))
    except VoicebusError as exc:
        log.warning("could not publish dead letter %s: %s", topic, exc)


# --- reading retained messages ------------------------------------------------------


@asynccontextmanager
async def _side_connection(
    bus: EventBus, on_message: Any, connect_timeout: float
) -> AsyncIterator[Transport]:
    """A short-lived connection of its own to the bus's broker (same credentials and
    TLS; no session, no status), so reading retained messages never disturbs the bus."""
    options = {
        key: value
        for key, value in bus._options.items()
        if key not in ("session_expiry", "will", "status", "reconnect", "connect_timeout")
    }
    client_id = f"{bus.client_id}-admin-{uuid.uuid4().hex[:6]}"
    transport = open_transport(
        bus._parsed_url,
        client_id=client_id,
        status=False,
        reconnect=False,
        connect_timeout=connect_timeout,
        **options,
    )
    await transport.connect(on_message)
    try:
        yield transport
    finally:
        await transport.close()


async def read_retained(bus: EventBus, topic_filter: str, timeout: float = 5.0) -> dict[str, bytes]:
    """The retained messages matching `topic_filter` on the bus's broker: ``{topic: payload}``.

    Complete, not a guess after a quiet period: after subscribing, a marker message
    is published to a topic of our own; the broker delivers a client's messages in
    order, so every retained message has arrived when the marker does.
    """
    found: dict[str, bytes] = {}
    marker = f"{DEAD_LETTER_PREFIX}sync/{uuid.uuid4().hex}"
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_message(message: Message) -> None:
        if message.topic == marker:
            if not done.done():
                done.set_result(None)
        elif message.retain and message.payload:
            found[message.topic] = message.payload

    # The connect has its own timeout (connect_timeout: BrokerUnavailableError);
    # cancelling aiomqtt in the middle of its handshake leaves callbacks behind.
    async with _side_connection(bus, on_message, timeout) as side:
        try:
            async with asyncio.timeout(timeout):
                await side.subscribe(topic_filter, 1)
                await side.subscribe(marker, 2)
                await side.publish(Message(marker, b"sync", 1, False))
                await done
        except TimeoutError:
            raise BrokerTimeoutError(
                f"reading retained {topic_filter} from {bus.redacted_url} took longer "
                f"than {timeout}s"
            ) from None
    return found


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
    found = bus._routes.match(topic)
    if doc.get("reason") == HANDLER_ERROR and found is not None:
        data = parse_json_object(payload) if payload else {}
        metadata = dict(envelope.get("metadata") or {})
        metadata["replay_of"] = dead_letter_id
        event = await bus.emit(
            found[0].event_type,
            data,
            source=envelope.get("source"),
            correlation_id=envelope.get("correlation_id"),
            metadata=metadata,
        )
    else:
        await bus.publish_message(Message(topic, payload, 1, False))
    await bus.publish_message(Message(dead_letter_topic(dead_letter_id), b"", 1, True))
    return event


async def purge_dead_letters(bus: EventBus, id: str | None = None, timeout: float = 5.0) -> int:
    """Clear one dead letter (`id`) or all of them from the broker; the number cleared."""
    topic_filter = dead_letter_topic(id) if id is not None else DEAD_LETTER_PREFIX + "+"
    found = await read_retained(bus, topic_filter, timeout)
    if not found:
        return 0
    async with _side_connection(bus, lambda _m: None, timeout) as side:
        try:
            async with asyncio.timeout(timeout):
                for topic in found:
                    await side.publish(Message(topic, b"", 1, True))
        except TimeoutError:
            raise BrokerTimeoutError(
                f"purging dead letters on {bus.redacted_url} took longer than {timeout}s"
            ) from None
    return len(found)
