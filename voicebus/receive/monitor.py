"""What a bus remembers about its traffic: metrics, event history, dead letters."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass
from enum import Enum
from hashlib import blake2b
from typing import Any

from ..wire.events import Event


@dataclass(slots=True)
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


MAX_SEEN_KEY = 256
"""Longest de-duplication key (topic, source and id together), in characters, that
`SeenIds` keeps as it is; a longer one, or one that is not ASCII, is kept as its
16-byte BLAKE2b digest."""


class SeenIds:
    """A bounded set of de-duplication keys (topic, source and id) (oldest forgotten first).

    At most `size` keys, each an ASCII string of at most `MAX_SEEN_KEY` characters
    or a 16-byte digest: worst case about ``size`` x 400 bytes (4 MB for 10,000),
    however long the ids, sources and topics peers send. `hashed` counts the keys
    that were too long (or not ASCII) to keep as they came.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: set[str | bytes] = set()
        self._order: deque[str | bytes] = deque()
        self.hashed = 0

    def _key(self, event_id: str) -> str | bytes:
        if len(event_id) > MAX_SEEN_KEY or not event_id.isascii():
            self.hashed += 1
            return blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        return event_id

    def __contains__(self, event_id: str) -> bool:
        return self._key(event_id) in self._ids

    def add(self, event_id: str) -> bool:
        """Remember `event_id` (a key); False when it was already known."""
        key = self._key(event_id)
        ids = self._ids
        if key in ids:
            return False
        ids.add(key)
        order = self._order
        order.append(key)
        if len(order) > self._size:
            ids.discard(order.popleft())
        return True


def _emitted_key(event: Event) -> str:
    topic, source = event.topic or "", event.source or ""
    return f"{len(topic)}:{topic}{len(source)}:{source}{event.id}"


DEAD_LETTER_BYTES = 16 * 1024 * 1024
"""Bytes the in-memory dead letters may hold together (as their reporter sized
them: payload, topic, properties); past it the oldest are forgotten (they stay on
the broker if they were published)."""


class Monitor:
    """Metrics (`get_stats` shape of the seed), history and the dead-letter queue."""

    def __init__(self, *, enable_history: bool, history_size: int, dead_letter_size: int) -> None:
        self.enable_history = enable_history
        self.history: deque[Event] = deque(maxlen=max(history_size, 1))
        self.dead_letters: deque[dict[str, Any]] = deque(maxlen=max(dead_letter_size, 1))
        self._dead_letter_sizes: deque[int] = deque()
        self._dead_letter_bytes = 0
        self.total_events = 0
        self._emitted = SeenIds(10_000)
        self.total_errors = 0
        self.events_by_type: defaultdict[str, int] = defaultdict(int)
        self.processing_time = 0.0
        self.processed = 0
        self.unrouted = 0
        self.dead_letters_not_retained = 0
        """Dead letters kept in memory only: over `dead_letter_rate`, or the
        background backlog was full (see `deadletters.FailureReporter`)."""
        self.dead_letters_cleared = 0
        """This bus's oldest retained dead letters cleared to stay within
        `dead_letter_retained_max`."""
        self.expired = 0
        """Stale messages dropped by this bus's earlier transports (see `EventBus.get_stats`)."""
        self.error_events_suppressed = 0
        """ERROR_OCCURRED events not emitted: over `dead_letter_rate` or backlog full."""
        self.started_at = time.time()

    def emitting(self, event: Event) -> None:
        """Note that this bus is about to publish `event`: when it comes back from the
        broker it is not counted again. Remembered by (topic, source, id), so a peer
        that copies this bus's ids onto its own events is still counted."""
        self._emitted.add(_emitted_key(event))

    def emitted_here(self, event: Event) -> bool:
        """Whether `event` is one this bus emitted (see `emitting`)."""
        return _emitted_key(event) in self._emitted

    def record(self, event: Event) -> None:
        """Count `event` and keep it in history (once per event: source and id)."""
        self.total_events += 1
        key = event.type._value_
        self.events_by_type[key] += 1
        if self.enable_history:
            self.history.append(event)

    def dead_letter(self, record: dict[str, Any], size: int = 0) -> None:
        """Keep `record` (holding about `size` bytes of its own); the oldest go once
        there are `dead_letter_size` of them or they pass `DEAD_LETTER_BYTES`
        together (the newest always stays)."""
        self.total_errors += 1
        letters = self.dead_letters
        sizes = self._dead_letter_sizes
        if len(sizes) != len(letters):  # `dead_letters` was cleared from outside
            sizes.clear()
            sizes.extend(0 for _ in letters)
            self._dead_letter_bytes = 0
        if len(letters) == letters.maxlen:
            self._dead_letter_bytes -= sizes.popleft()
        letters.append(record)
        sizes.append(size)
        self._dead_letter_bytes += size
        while self._dead_letter_bytes > DEAD_LETTER_BYTES and len(letters) > 1:
            letters.popleft()
            self._dead_letter_bytes -= sizes.popleft()

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
