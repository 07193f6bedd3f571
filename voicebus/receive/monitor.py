"""What a bus remembers about its traffic: metrics, event history, dead letters."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..wire.events import Event


@dataclass
class HandlerStats:
    """Calls, errors and time spent in one subscription's handler."""

    handler: str
    event: str
    call_count: int = 0
    error_count: int = 0
    total_duration: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        calls = self.call_count
        return {
            "handler": self.handler,
            "event": self.event,
            "call_count": calls,
            "error_count": self.error_count,
            "total_duration": self.total_duration,
            "average_duration": self.total_duration / calls if calls else 0.0,
        }


class SeenIds:
    """A bounded set of event ids (oldest forgotten first)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: set[str] = set()
        self._order: deque[str] = deque()

    def add(self, event_id: str) -> bool:
        """Remember `event_id`; False when it was already known."""
        ids = self._ids
        if event_id in ids:
            return False
        ids.add(event_id)
        order = self._order
        order.append(event_id)
        if len(order) > self._size:
            ids.discard(order.popleft())
        return True


DEAD_LETTER_BYTES = 16 * 1024 * 1024
"""Payload and topic bytes the in-memory dead letters may hold together; past it
the oldest are forgotten (they stay on the broker if they were published)."""


def _record_bytes(record: dict[str, Any]) -> int:
    """What a dead-letter record holds of its own: the raw payload and the topic."""
    payload = record.get("payload")
    topic = record.get("topic")
    return (len(payload) if payload is not None else 0) + (len(topic) if topic else 0)


class Monitor:
    """Metrics (`get_stats` shape of the seed), history and the dead-letter queue."""

    def __init__(self, *, enable_history: bool, history_size: int, dead_letter_size: int) -> None:
        self.enable_history = enable_history
        self.history: deque[Event] = deque(maxlen=max(history_size, 1))
        self.dead_letters: deque[dict[str, Any]] = deque(maxlen=max(dead_letter_size, 1))
        self._dead_letter_bytes = 0
        self.total_events = 0
        self.total_errors = 0
        self.events_by_type: dict[str, int] = {}
        self.processing_time = 0.0
        self.processed = 0
        self.unrouted = 0
        self.dead_letters_not_retained = 0
        """Dead letters kept in memory only: over `dead_letter_rate`, or the
        background backlog was full (see `deadletters.FailureReporter`)."""
        self.dead_letters_cleared = 0
        """This bus's oldest retained dead letters cleared to stay within
        `dead_letter_retained_max`."""
        self.error_events_suppressed = 0
        """ERROR_OCCURRED events not emitted: over `dead_letter_rate` or backlog full."""
        self.started_at = time.time()

    def record(self, event: Event) -> None:
        """Count `event` and keep it in history (the bus calls this once per event id)."""
        self.total_events += 1
        key = event.type._value_
        self.events_by_type[key] = self.events_by_type.get(key, 0) + 1
        if self.enable_history:
            self.history.append(event)

    def dead_letter(self, record: dict[str, Any]) -> None:
        """Keep `record`; the oldest go once there are `dead_letter_size` of them or
        their payloads and topics pass `DEAD_LETTER_BYTES` (the newest always stays)."""
        self.total_errors += 1
        letters = self.dead_letters
        if not letters:  # also after `clear()` from outside
            self._dead_letter_bytes = 0
        elif len(letters) == letters.maxlen:
            self._dead_letter_bytes -= _record_bytes(letters[0])
        letters.append(record)
        self._dead_letter_bytes += _record_bytes(record)
        while self._dead_letter_bytes > DEAD_LETTER_BYTES and len(letters) > 1:
            self._dead_letter_bytes -= _record_bytes(letters.popleft())

    def get_history(self, event_type: Enum | None = None, limit: int = 100) -> list[Event]:
        events = [e for e in self.history if event_type is None or e.type == event_type]
        return events[-limit:] if limit else events

    def get_dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        items = list(self.dead_letters)
        return items[-limit:] if limit else items

    def snapshot(self) -> dict[str, Any]:
        processed = self.processed
        return {
            "metrics": {
                "total_events": self.total_events,
                "total_errors": self.total_errors,
                "avg_processing_time": self.processing_time / processed if processed else 0.0,
                "events_by_type": dict(self.events_by_type),
                "dispatched_events": processed,
                "dead_letters": self.total_errors,
                "unrouted_messages": self.unrouted,
                "dead_letters_not_retained": self.dead_letters_not_retained,
                "dead_letters_cleared": self.dead_letters_cleared,
                "error_events_suppressed": self.error_events_suppressed,
                "uptime": time.time() - self.started_at,
            },
            "history_size": len(self.history),
            "dead_letter_queue_size": len(self.dead_letters),
        }
