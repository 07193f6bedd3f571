"""Traces: every event of one utterance (one correlation id) as a waterfall.

Pure functions from recorded messages (`voicebus.ops.recording.RecordedMessage`,
from a recording file or collected live) to a `Trace`; no I/O here. A row per
message of the correlation id, in time order (the envelope ``time`` the sender
set, else when it was received):

- **offset**: time since the utterance's first message;
- **hop**: the parent's source ``->`` this message's source (the services the
  event travelled between);
- **latency**: time since its parent: the message named by its ``parent`` user
  property (`Event.parent_id`) when that message is in the trace, else the
  previous message of the utterance (``linked_by`` says which);
- **kind**: ``event``; ``error`` (an ERROR_OCCURRED); ``cancelled`` (a
  CANCELLED, on ``voicebus/cancelled``); ``dead_letter`` (a record on
  ``voicebus/deadLetter/<id>`` whose event had this correlation id: its source is
  the bus that recorded it, its parent the event that failed).

A message without Correlation Data, from a peer without MQTT 5 (Rhasspy),
belongs to its payload's ``sessionId`` and has its topic's event type, as
`voicebus.wire.codec.decode` reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..deadletters import DEAD_LETTER_PREFIX
from ..wire.routes import ROUTES
from .recording import RecordedMessage

__all__ = [
    "CANCELLED_TOPIC",
    "Trace",
    "TraceCollector",
    "TraceRow",
    "trace_entry",
    "trace_of",
    "traces",
]

CANCELLED_TOPIC = "voicebus/cancelled"
ERROR_TYPE = "error_occurred"
CANCELLED_TYPE = "cancelled"


@dataclass(slots=True)
class TraceRow:
    """One message of a trace, with what the waterfall shows of it."""

    message: RecordedMessage
    kind: str
    id: str | None
    type: str
    topic: str
    source: str
    time: float
    correlation_id: str
    parent_id: str | None
    detail: str = ""
    offset_ms: float = 0.0
    latency_ms: float | None = None
    parent: TraceRow | None = None
    linked_by: str | None = None

    @property
    def hop(self) -> str:
        """``parent source -> source`` (just the source for the first row)."""
        return f"{self.parent.source} -> {self.source}" if self.parent else self.source

    def to_dict(self) -> dict[str, Any]:
        return {
            "offset_ms": round(self.offset_ms, 3),
            "hop": self.hop,
            "from": self.parent.source if self.parent else None,
            "source": self.source,
            "kind": self.kind,
            "type": self.type,
            "topic": self.topic,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "id": self.id,
            "parent_id": self.parent.id if self.parent else None,
            "linked_by": self.linked_by,
            "time": self.time,
            "detail": self.detail,
        }


@dataclass(slots=True)
class Trace:
    """The waterfall of one correlation id."""

    correlation_id: str
    rows: list[TraceRow]

    @property
    def total_ms(self) -> float:
        return self.rows[-1].offset_ms if self.rows else 0.0

    def hops(self) -> list[tuple[str, str]]:
        """``(hop, type)`` of every row: what two runs of one pipeline share."""
        return [(row.hop, row.type) for row in self.rows]

    def count(self, kind: str) -> int:
        return sum(1 for row in self.rows if row.kind == kind)

    def to_dict(self) -> dict[str, Any]:
        return {
            "correlation_id": self.correlation_id,
            "total_ms": round(self.total_ms, 3),
            "dead_letters": self.count("dead_letter"),
            "errors": self.count("error"),
            "cancellations": self.count("cancelled"),
            "events": [row.to_dict() for row in self.rows],
        }


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None


def trace_entry(message: RecordedMessage) -> TraceRow | None:
    """The trace row of `message` (not yet linked), or None when it belongs to no
    utterance (no correlation id nor ``sessionId``; an empty or unreadable
    dead-letter record)."""
    if message.topic.startswith(DEAD_LETTER_PREFIX):
        return _dead_letter_entry(message)
    data = _json(message.payload)
    fields = data if isinstance(data, dict) else {}
    correlation_id = message.correlation_id
    if correlation_id is None and isinstance(fields.get("sessionId"), str):
        correlation_id = fields["sessionId"]  # a peer without MQTT 5 (Rhasspy), as decode does
    if not correlation_id:
        return None
    kind, detail = "event", ""
    if message.type == ERROR_TYPE or message.topic.startswith("voicebus/error/"):
        kind = "error"
        detail = f"{fields.get('context') or ''}: {fields.get('error') or ''}".strip(": ")
    elif message.type == CANCELLED_TYPE or message.topic == CANCELLED_TOPIC:
        kind = "cancelled"
        detail = str(fields.get("reason") or "")
    return TraceRow(
        message,
        kind,
        message.id,
        message.type or _routed_type(message.topic),
        message.topic,
        message.source or "?",
        message.timestamp,
        correlation_id,
        message.parent_id,
        detail,
    )


def _routed_type(topic: str) -> str:
    """The event type of `topic` in the route table (a message without envelope)."""
    found = ROUTES.match(topic)
    return str(found[0].event_type.value) if found is not None else "?"


def _dead_letter_entry(message: RecordedMessage) -> TraceRow | None:
    doc = _json(message.payload)
    if not isinstance(doc, dict) or not isinstance(doc.get("envelope"), dict):
        return None
    envelope = doc["envelope"]
    correlation_id = envelope.get("correlation_id")
    if not isinstance(correlation_id, str):
        return None
    try:
        when = float(doc.get("time") or message.timestamp)
    except (TypeError, ValueError):
        when = message.timestamp
    failed = envelope.get("id")
    detail = f"{doc.get('reason') or ''}: {doc.get('error') or ''}".strip(": ")
    if doc.get("handler"):
        detail += f" (handler {doc['handler']})"
    return TraceRow(
        message,
        "dead_letter",
        message.topic[len(DEAD_LETTER_PREFIX) :],
        str(envelope.get("type") or "?"),
        message.topic,
        str(doc.get("client_id") or "?"),
        when,
        correlation_id,
        failed if isinstance(failed, str) else None,
        detail,
    )


def trace_of(rows: Iterable[TraceRow], correlation_id: str) -> Trace:
    """Link the rows of `correlation_id` (parent, offset, latency) into a `Trace`.

    A message that came twice (same id and topic, e.g. a dead letter seen live and
    again retained) is shown once.
    """
    seen: set[tuple[str, str]] = set()
    mine: list[TraceRow] = []
    for row in sorted(
        (r for r in rows if r.correlation_id == correlation_id), key=lambda r: r.time
    ):
        if row.id is not None:
            key = (row.id, row.topic)
            if key in seen:
                continue
            seen.add(key)
        mine.append(row)
    by_id = {row.id: row for row in mine if row.id is not None and row.kind != "dead_letter"}
    start = mine[0].time if mine else 0.0
    previous: TraceRow | None = None
    for row in mine:
        parent = by_id.get(row.parent_id) if row.parent_id else None
        if parent is not None and parent is not row:
            row.parent, row.linked_by = parent, "parent_id"
        elif previous is not None:
            row.parent, row.linked_by = previous, "previous"
        row.offset_ms = (row.time - start) * 1000
        if row.parent is not None:
            row.latency_ms = (row.time - row.parent.time) * 1000
        previous = row
    return Trace(correlation_id, mine)


def traces(messages: Iterable[RecordedMessage], correlation_id: str | None = None) -> list[Trace]:
    """The trace of `correlation_id`, or of every correlation id in `messages` (in order
    of first appearance)."""
    rows = [row for m in messages if (row := trace_entry(m)) is not None]
    ids = [correlation_id] if correlation_id is not None else []
    if correlation_id is None:
        ids = list(dict.fromkeys(row.correlation_id for row in sorted(rows, key=lambda r: r.time)))
    return [trace_of(rows, cid) for cid in ids]


class TraceCollector:
    """Groups live messages by correlation id; an utterance is finished once it has
    been quiet (no new message) for `quiet` seconds."""

    def __init__(self, quiet: float, correlation_id: str | None = None) -> None:
        self.quiet = quiet
        self.correlation_id = correlation_id
        self._rows: dict[str, list[TraceRow]] = {}
        self._last: dict[str, float] = {}

    def add(self, message: RecordedMessage) -> str | None:
        """Take one message; the correlation id it belongs to, if it is traced."""
        row = trace_entry(message)
        if row is None:
            return None
        cid = row.correlation_id
        if self.correlation_id is not None and cid != self.correlation_id:
            return None
        self._rows.setdefault(cid, []).append(row)
        self._last[cid] = message.received
        return cid

    def next_due(self) -> float | None:
        """When the next open utterance goes quiet (receive clock), if any is open."""
        return min(self._last.values()) + self.quiet if self._last else None

    def finished(self, now: float, everything: bool = False) -> list[Trace]:
        """The utterances quiet since `now - quiet` (or all of them), removed."""
        done = [c for c, last in self._last.items() if everything or now - last >= self.quiet]
        result = []
        for cid in done:
            del self._last[cid]
            result.append(trace_of(self._rows.pop(cid), cid))
        return result
