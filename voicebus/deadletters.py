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
replayed). This module builds the records and the retained message; the bus
publishes it. `voicebus.ops.dlq` reads, replays and purges them from any process
(the ``voicebus`` CLI, a notebook) on the same broker.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json

from .errors import DeadLetterNotFoundError
from .transport import Message
from .wire.events import Event, EventType
from .wire.routes import SYSTEM_PREFIXES

if TYPE_CHECKING:
    from .receive.monitor import Monitor

log = logging.getLogger("voicebus")

DEAD_LETTER_PREFIX = "voicebus/deadLetter/"
MAX_RECORD_PAYLOAD = 64 * 1024
"""Payload bytes kept in a dead-letter record; longer payloads are cut."""

__all__ = [
    "DEAD_LETTER_PREFIX",
    "FailureReporter",
    "HANDLER_ERROR",
    "MAX_RECORD_PAYLOAD",
    "dead_letter_message",
    "dead_letter_topic",
    "error_event_data",
    "handler_failure",
    "inbound_failure",
    "record_document",
]

HANDLER_ERROR = "handler_error"


def handler_failure(event: Event, handler: str, exc: BaseException) -> dict[str, Any]:
    """The record of a handler (or middleware, or filter) that raised."""
    return {
        "event": event,
        "error": str(exc) or type(exc).__name__,
        "handler": handler,
        "time": time.time(),
        "reason": HANDLER_ERROR,
        "exception": type(exc).__name__,
        "topic": event.topic,
        "payload": None,
    }


def inbound_failure(
    message: Message, reason: str, error: str, event: Event | None
) -> dict[str, Any]:
    """The record of a message that could not become an event (or was refused)."""
    return {
        "event": event,
        "error": error,
        "handler": None,
        "time": time.time(),
        "reason": reason,
        "topic": message.topic,
        "payload": message.payload,
    }


def error_event_data(record: dict[str, Any], component: str) -> dict[str, Any]:
    """ERROR_OCCURRED payload for a record: the seed's keys plus Rhasspy's error shape."""
    event: Event | None = record["event"]
    data: dict[str, Any] = {
        "error": record["error"],
        "component": component,
        "context": record["reason"],
    }
    if record["reason"] == HANDLER_ERROR and event is not None:
        data["context"] = event.type.value
        data["handler"] = record["handler"]
        data["siteId"] = event.data.get("siteId") or "default"
        data["sessionId"] = event.data.get("sessionId")
    return data


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


def dead_letter_message(record: dict[str, Any], client_id: str, max_payload: int) -> Message:
    """Give `record` its broker id (``record["id"]``) and return its retained message,
    cut so that it fits `max_payload` bytes."""
    dead_letter_id = record.get("id") or uuid.uuid4().hex[:16]
    record["id"] = dead_letter_id
    keep = MAX_RECORD_PAYLOAD
    payload = to_json(record_document(record, client_id, keep))
    while len(payload) > max_payload and keep:  # the record must fit what we may publish
        keep //= 2
        payload = to_json(record_document(record, client_id, keep))
    return Message(dead_letter_topic(dead_letter_id), payload, 1, True)


class FailureReporter:
    """Turns failures into dead letters and ERROR_OCCURRED events, in the background.

    Each record is kept in the monitor (`EventBus.get_dead_letter_queue`) and
    published retained through the `publish` seam the bus hands in; an
    ERROR_OCCURRED event goes out through `emit_error` (never one about an error).
    """

    def __init__(
        self,
        monitor: Monitor,
        client_id: str,
        url: str,
        max_payload: int,
        *,
        publish: Callable[[Message], Coroutine[Any, Any, None]],
        emit_error: Callable[[dict[str, Any], str | None], Coroutine[Any, Any, None]],
    ) -> None:
        self._monitor = monitor
        self._client_id = client_id
        self._url = url
        self._max_payload = max_payload
        self._publish = publish
        self._emit_error = emit_error
        self.tasks: set[asyncio.Task[None]] = set()
        """Background publishes still running (the bus drains them on stop)."""

    def handler_failed(
        self, event: Event, handler: str, exc: BaseException, component: str
    ) -> None:
        """A handler, filter or middleware raised on `event`."""
        record = handler_failure(event, handler, exc)
        log.error("handler %s failed on %s: %s", handler, event.type.value, exc, exc_info=exc)
        self._dead_letter(record)
        if event.type != EventType.ERROR_OCCURRED:  # never an error about an error handler
            self._spawn(self._emit_error(error_event_data(record, component), event.correlation_id))

    def publish_failed(self, message: Message, exc: Exception) -> None:
        """The broker refused a message sent from the outbox after a reconnect."""
        if message.topic.startswith(SYSTEM_PREFIXES):  # a refused dead letter or status:
            log.warning("%s refused %s: %s", self._url, message.topic, exc)  # no new one
            return
        self.inbound_failure(message, "publish_refused", str(exc), None)

    def inbound_failure(
        self, message: Message, reason: str, error: str, event: Event | None
    ) -> None:
        """`message` could not become an event (or was refused)."""
        log.warning("dead letter from %s: %s", message.topic, error)
        record = inbound_failure(message, reason, error, event)
        self._dead_letter(record)
        if not message.topic.startswith("voicebus/error/"):
            self._spawn(self._emit_error(error_event_data(record, "bus"), None))

    def _dead_letter(self, record: dict[str, Any]) -> None:
        self._monitor.dead_letter(record)
        message = dead_letter_message(record, self._client_id, self._max_payload)
        self._spawn(self._publish(message))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
