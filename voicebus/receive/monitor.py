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
    """A bounded set of event keys, e.g. source and id (oldest forgotten first)."""

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


class Monitor:
    """Metrics (`get_stats` shape of the seed), history and the dead-letter queue."""

    def __init__(self, *, enable_history: bool, history_size: int, dead_letter_size: int) -> None:
        self.enable_history = enable_history
        self.history: deque[Event] = deque(maxlen=max(history_size, 1))
        self.dead_letters: deque[dict[str, Any]] = deque(maxlen=max(dead_letter_size, 1))
        self.total_events = 0
        self.total_errors = 0
        self.events_by_type: dict[str, int] = {}
        self.processing_time = 0.0
        self.processed = 0
        self.unrouted = 0
        self.started_at = time.time()

    def record(self, event: Event) -> None:
        """Count `event` and keep it in history (once per event: source and id)."""
        self.total_events += 1
        key = event.type._value_
        self.events_by_type[key] = self.events_by_type.get(key, 0) + 1
        if self.enable_history:
            self.history.append(event)

    def dead_letter(self, record: dict[str, Any]) -> None:
        self.total_errors += 1
        self.dead_letters.append(record)

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
                "uptime": time.time() - self.started_at,
            },
            "history_size": len(self.history),
            "dead_letter_queue_size": len(self.dead_letters),
        }
