"""Dead letters on the broker: ``voicebus/deadLetter/<id>``, retained, as JSON.

Every dead letter a bus records (a handler that raised; an inbound message that
was not UTF-8, not JSON, invalid for its event type, too large, or on an unknown
``voicebus/`` topic) is also published **retained**, so it survives the service
and broker restarts until it is replayed or purged (an empty retained message
clears it); within limits, so that a flood cannot flood the broker back: at most
``dead_letter_retained_max`` per bus (the oldest cleared first), at most
``dead_letter_rate`` a second after a burst (see `FailureReporter`). The record::

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
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json

from .errors import DeadLetterNotFoundError, HandlerTimeout
from .transport import Message
from .wire.binary import body_of
from .wire.correlation import sender_correlation
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
    "REPORT_BACKLOG",
    "RateLimit",
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
        "reason": HandlerTimeout.reason if isinstance(exc, HandlerTimeout) else HANDLER_ERROR,
        "exception": type(exc).__name__,
        "topic": event.topic,
        "payload": body_of(event.data),  # a binary event's bytes; else its data as JSON
    }


def inbound_failure(
    message: Message,
    reason: str,
    error: str,
    event: Event | None,
    correlation_id: str | None = None,
) -> dict[str, Any]:
    """The record of a message that could not become an event (or was refused);
    `correlation_id` is the sender's (`sessionId` of the ERROR_OCCURRED event)."""
    return {
        "event": event,
        "error": error,
        "handler": None,
        "time": time.time(),
        "reason": reason,
        "topic": message.topic,
        "payload": message.payload,
        "correlation_id": correlation_id,
    }


def error_event_data(record: dict[str, Any], component: str) -> dict[str, Any]:
    """ERROR_OCCURRED payload for a record: the seed's keys plus Rhasspy's error shape."""
    event: Event | None = record["event"]
    data: dict[str, Any] = {
        "error": record["error"],
        "component": component,
        "context": record["reason"],
    }
    if record["reason"] in (HANDLER_ERROR, HandlerTimeout.reason) and event is not None:
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


def _envelope(event: Event | None, correlation_id: str | None) -> dict[str, Any] | None:
    if event is None:  # refused before decoding: only the sender's correlation id is known
        return None if correlation_id is None else {"correlation_id": correlation_id}
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
        "envelope": _envelope(event, record.get("correlation_id")),
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


class RateLimit:
    """A token bucket: `burst` at once, then `rate` per second."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = max(rate, 0.0)
        self._burst = float(max(burst, 1))
        self._tokens = self._burst
        self._stamp = time.monotonic()

    def allow(self) -> bool:
        """Take one token; False when there is none."""
        now = time.monotonic()
        tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False


REPORT_BACKLOG = 256
"""Reports (a retained dead letter, an ERROR_OCCURRED event) waiting for the
reporter's one background task; more are dropped and counted."""

SUMMARY_INTERVAL = 10.0
"""Seconds between the warnings that say how many failures went unreported."""

_SHOWN = 200


def _shown(topic: str) -> str:
    """`topic` for a log line: at most 200 characters."""
    return topic if len(topic) <= _SHOWN else f"{topic[:_SHOWN]}... ({len(topic)} characters)"


class FailureReporter:
    """Turns failures into dead letters and ERROR_OCCURRED events, in the background.

    Each record is kept in the monitor (`EventBus.get_dead_letter_queue`) and
    published retained through the `publish` seam the bus hands in; an
    ERROR_OCCURRED event goes out through `emit_error` (never one about an error).

    Bounded, so that a flood of bad input cannot flood the broker back, fill the
    memory or delay the bus's own emits:

    - at most `retained_max` of this bus's dead letters stay retained on the broker
      (per run of the bus): past it the oldest it published is cleared (an empty
      retained publish);
    - dead letters published, ERROR_OCCURRED events emitted and failures logged each
      have a budget of `burst` at once and `rate` per second; what is over it stays
      in memory only and is counted (``dead_letters_not_retained``,
      ``error_events_suppressed`` in `get_stats`), with a summary warning at most
      every `SUMMARY_INTERVAL` seconds;
    - one background task sends the reports, one at a time, from a backlog of at
      most `REPORT_BACKLOG` (it holds records, not built messages: worst case that
      many records the monitor has already let go); a report that finds it full is
      counted the same way. The bus's own emits never queue behind it: at most one
      report is in flight at a time.
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
        retained_max: int = 1000,
        rate: float = 10.0,
        burst: int = 100,
    ) -> None:
        self._monitor = monitor
        self._client_id = client_id
        self._url = url
        self._max_payload = max_payload
        self._publish = publish
        self._emit_error = emit_error
        self._retained_max = retained_max
        self._retained: deque[str] = deque()
        """Topics of the dead letters this bus published retained, oldest first."""
        self._records = RateLimit(rate, burst)
        self._errors = RateLimit(rate, burst)
        self._logs = RateLimit(rate, burst)
        self._rate = rate
        self._backlog: deque[tuple[bool, Callable[[], Coroutine[Any, Any, None]]]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._next_summary = 0.0
        self.tasks: set[asyncio.Task[None]] = set()
        """The background task while it has reports to send (the bus drains it on stop)."""

    def handler_failed(
        self, event: Event, handler: str, exc: BaseException, component: str
    ) -> None:
        """A handler, filter or middleware raised on `event`."""
        record = handler_failure(event, handler, exc)
        size = len(event.topic or "") + len(event.id) + len(event.source or "")
        try:  # what the record keeps alive (a binary event: its bytes)
            size += len(record["payload"] or to_json(event.data))
        except ValueError:  # an in-process payload JSON cannot hold: sized by its keys
            size += 64 * len(event.data)
        if self._logs.allow():
            log.error("handler %s failed on %s: %s", handler, event.type.value, exc, exc_info=exc)
        else:
            log.debug("handler %s failed on %s: %s", handler, event.type.value, exc)
        self._dead_letter(record, size)
        if event.type != EventType.ERROR_OCCURRED:  # never an error about an error handler
            self._error_event(record, component, event.correlation_id)

    def publish_failed(self, message: Message, exc: Exception) -> None:
        """The broker refused a message sent from the outbox after a reconnect."""
        if message.topic.startswith(SYSTEM_PREFIXES):  # a refused dead letter or status:
            log.warning("%s refused %s: %s", self._url, _shown(message.topic), exc)  # no new one
            return
        self.inbound_failure(message, "publish_refused", str(exc), None)

    def inbound_failure(
        self, message: Message, reason: str, error: str, event: Event | None
    ) -> None:
        """`message` could not become an event (or was refused)."""
        if self._logs.allow():
            log.warning("dead letter from %s: %s", _shown(message.topic), error[:_SHOWN])
        else:
            log.debug("dead letter from %s: %s", _shown(message.topic), error[:_SHOWN])
        correlation_id = sender_correlation(
            message.payload, message.correlation_data, event, self._max_payload
        )
        if event is not None:
            event.correlation_id = correlation_id
        record = inbound_failure(message, reason, error, event, correlation_id)
        size = len(message.payload) + len(message.topic) + len(message.correlation_data or b"")
        for key, value in message.user_properties:  # the record's event holds them decoded
            size += len(key) + len(value)
        self._dead_letter(record, size)
        if not message.topic.startswith("voicebus/error/"):
            self._error_event(record, "bus", correlation_id)

    def _dead_letter(self, record: dict[str, Any], size: int) -> None:
        record["id"] = os.urandom(8).hex()
        self._monitor.dead_letter(record, size)
        if self._retained_max <= 0:
            self._monitor.dead_letters_not_retained += 1
        elif not (self._records.allow() and self._submit(True, partial(self._retain, record))):
            self._monitor.dead_letters_not_retained += 1
            self._summarize()

    def _error_event(
        self, record: dict[str, Any], component: str, correlation_id: str | None
    ) -> None:
        if self._errors.allow():
            data = error_event_data(record, component)
            if self._submit(False, partial(self._emit_error, data, correlation_id)):
                return
        self._monitor.error_events_suppressed += 1
        self._summarize()

    async def _retain(self, record: dict[str, Any]) -> None:
        """Publish `record` retained, first clearing the oldest one over the cap."""
        message = dead_letter_message(record, self._client_id, self._max_payload)
        retained = self._retained
        while len(retained) >= self._retained_max:
            await self._publish(Message(retained.popleft(), b"", 1, True))
            self._monitor.dead_letters_cleared += 1
        retained.append(message.topic)
        await self._publish(message)

    def _submit(self, is_record: bool, job: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Queue `job` for the background task (started when idle); False when the
        backlog is full or there is no event loop."""
        if len(self._backlog) >= REPORT_BACKLOG:
            return False
        if self._worker is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return False
            self._worker = loop.create_task(self._drain(), name="voicebus-failure-reports")
            self.tasks.add(self._worker)
            self._worker.add_done_callback(self._drained)
        self._backlog.append((is_record, job))
        return True

    async def _drain(self) -> None:
        backlog = self._backlog
        while backlog:
            _, job = backlog.popleft()
            try:
                await job()
            except Exception:  # a seam that raised: the next report still goes
                log.exception("reporting a failure on %s failed", self._url)
        self._worker = None  # in the same step as the check: the next report starts a task

    def _drained(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self._worker is not task:
            return
        # Cancelled, even before it ran (the bus stopped): what is left is not sent.
        self._worker = None
        for is_record, _ in self._backlog:
            if is_record:
                self._monitor.dead_letters_not_retained += 1
            else:
                self._monitor.error_events_suppressed += 1
        self._backlog.clear()

    def _summarize(self) -> None:
        """Warn, at most every `SUMMARY_INTERVAL` seconds, that reports were dropped."""
        now = time.monotonic()
        if now < self._next_summary:
            return
        self._next_summary = now + SUMMARY_INTERVAL
        monitor = self._monitor
        log.warning(
            "failures come faster than dead_letter_rate (%g/s): so far %d dead letter(s) "
            "kept in memory only, %d ERROR_OCCURRED event(s) not emitted (get_stats)",
            self._rate,
            monitor.dead_letters_not_retained,
            monitor.error_events_suppressed,
        )
