"""Dead-letter records and ERROR_OCCURRED payloads, built in one place.

Every record has the seed's keys (``event``, ``error``, ``handler``) plus
``time``, ``reason``, ``topic`` and ``payload``; ``event`` is an `Event` when the
failure concerns one (data as received), ``None`` otherwise.
"""

from __future__ import annotations

import time
from typing import Any

from .events import Event
from .transport import Message

HANDLER_ERROR = "handler_error"


def handler_failure(event: Event, handler: str, exc: Exception) -> dict[str, Any]:
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
