"""Recordings: every message of an interaction as it travelled, one JSON object a line.

``voicebus record FILE`` writes them (from a raw connection, so it sees each
message as it is: no decoding, no de-duplication, no dead letters of its own);
``voicebus replay FILE`` and `replay` publish them again; ``voicebus trace
--from FILE`` and `voicebus.ops.trace` read them. One line (JSON Lines, UTF-8)::

    {"topic": "hermes/asr/textCaptured",
     "payload": {"text": "hi", "siteId": "default"},
     "qos": 1, "retain": false, "received": 1764459000.123456,
     "content_type": "application/json",
     "envelope": {"id": "stt-1-9f...", "type": "speech_detected", "source": "stt-1",
                  "time": 1764459000.120001, "correlation_id": "demo-ab12cd-1",
                  "parent_id": "wakeword-1-3c...", "metadata": {}},
     "user_properties": []}

- The payload is in exactly one of three keys: ``payload`` (a JSON value, only
  when writing it back compactly gives the very same bytes), ``payload_text``
  (other UTF-8 text) or ``payload_base64`` (anything else: audio, non-UTF-8).
  So every payload comes back byte for byte.
- ``envelope`` is the voicebus envelope read from the MQTT 5 properties (user
  properties ``id``, ``type``, ``source``, ``time``, ``parent``, ``metadata``;
  Correlation Data as the correlation id, lossless as `correlation_text` makes
  it); a field the message did not carry is ``null``. ``user_properties`` keeps,
  as ``[key, value]`` pairs, every other user property and any envelope value
  that was not well formed (a ``time`` that is no number, a ``metadata`` that is
  no JSON object), so nothing that came is lost.
- ``received`` is when the recorder got the message (seconds since the epoch).
- Retained messages the broker hands over at subscription time (state from
  before the recording) are not recorded.

Replay publishes each recorded message again, spaced as the recording was
(``received``, divided by `speed`), with the same topic, payload, QoS,
correlation id and properties, except: a message that had an envelope ``id``
gets a new id, a fresh ``time``, and ``metadata["replayed_from"]`` naming the
original id; a ``parent`` that names an already replayed message names its new
id. A message without an envelope (a Rhasspy peer's) is published as it was.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RecordingError
from ..transport import Message
from ..wire.codec import correlation_bytes, correlation_text
from ..wire.ids import RandomIds

if TYPE_CHECKING:
    from ..bus import EventBus

__all__ = [
    "PARENT_PROPERTY",
    "REPLAYED_FROM",
    "RecordedMessage",
    "Recording",
    "load_recording",
    "record_message",
    "replay",
    "replay_message",
]

PARENT_PROPERTY = "parent"
"""The user property carrying `Event.parent_id`: the id of the event whose handler
emitted this one."""
REPLAYED_FROM = "replayed_from"
"""The `Event.metadata` key a replayed event carries: the original event's id."""
_ENVELOPE_KEYS = ("id", "type", "source", "time", PARENT_PROPERTY, "metadata")


@dataclass(slots=True)
class RecordedMessage:
    """One recorded MQTT message with its envelope (see the module doc)."""

    topic: str
    payload: bytes
    received: float
    qos: int = 1
    retain: bool = False
    id: str | None = None
    type: str | None = None
    source: str | None = None
    time: float | None = None
    correlation_id: str | None = None
    parent_id: str | None = None
    metadata: dict[str, Any] | None = None
    content_type: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()

    @property
    def timestamp(self) -> float:
        """When the message was sent (its envelope ``time``), else when it was received."""
        return self.time if self.time is not None else self.received

    def to_json(self) -> dict[str, Any]:
        """The recording line of this message, as a JSON object."""
        doc: dict[str, Any] = {"topic": self.topic}
        doc.update(_payload_fields(self.payload))
        doc.update(qos=self.qos, retain=self.retain, received=self.received)
        doc["content_type"] = self.content_type
        doc["envelope"] = {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "time": self.time,
            "correlation_id": self.correlation_id,
            "parent_id": self.parent_id,
            "metadata": self.metadata,
        }
        doc["user_properties"] = [list(pair) for pair in self.user_properties]
        return doc

    def line(self) -> str:
        """The recording line (no newline)."""
        return json.dumps(self.to_json(), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, doc: Any) -> RecordedMessage:
        """A message from one recording line's object; `RecordingError` when malformed."""
        if not isinstance(doc, dict):
            raise RecordingError(f"expected a JSON object, got {type(doc).__name__}")
        env = doc.get("envelope") or {}
        try:
            return cls(
                topic=_text(doc["topic"], "topic"),
                payload=_payload_bytes(doc),
                received=float(doc["received"]),
                qos=int(doc.get("qos", 1)),
                retain=bool(doc.get("retain", False)),
                id=_opt_text(env.get("id"), "envelope.id"),
                type=_opt_text(env.get("type"), "envelope.type"),
                source=_opt_text(env.get("source"), "envelope.source"),
                time=None if env.get("time") is None else float(env["time"]),
                correlation_id=_opt_text(env.get("correlation_id"), "envelope.correlation_id"),
                parent_id=_opt_text(env.get("parent_id"), "envelope.parent_id"),
                metadata=_opt_dict(env.get("metadata")),
                content_type=_opt_text(doc.get("content_type"), "content_type"),
                user_properties=tuple(
                    (_text(k, "user property"), _text(v, "user property"))
                    for k, v in doc.get("user_properties") or ()
                ),
            )
        except KeyError as exc:
            raise RecordingError(f"missing key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise RecordingError(str(exc)) from None


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RecordingError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _opt_text(value: Any, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _opt_dict(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise RecordingError(f"envelope.metadata must be an object, got {type(value).__name__}")


def _compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _payload_fields(payload: bytes) -> dict[str, Any]:
    """The payload key of a recording line: JSON, text or base64 (see the module doc)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return {"payload_base64": base64.b64encode(payload).decode("ascii")}
    try:
        value = json.loads(text)
        if _compact(value) == payload:
            return {"payload": value}
    except ValueError:  # not JSON, or NaN/Infinity (not written back as they came)
        pass
    return {"payload_text": text}


def _payload_bytes(doc: dict[str, Any]) -> bytes:
    keys = [k for k in ("payload", "payload_text", "payload_base64") if k in doc]
    if len(keys) != 1:
        raise RecordingError("needs exactly one of payload, payload_text, payload_base64")
    if keys[0] == "payload":
        return _compact(doc["payload"])
    if keys[0] == "payload_text":
        return _text(doc["payload_text"], "payload_text").encode("utf-8")
    try:
        return base64.b64decode(_text(doc["payload_base64"], "payload_base64"), validate=True)
    except ValueError as exc:
        raise RecordingError(f"payload_base64 is not base64: {exc}") from None


def record_message(message: Message, received: float | None = None) -> RecordedMessage:
    """The recorded form of `message` as it arrived (envelope read, nothing validated)."""
    recorded = RecordedMessage(
        message.topic,
        bytes(message.payload),
        time.time() if received is None else received,
        message.qos,
        message.retain,
        content_type=message.content_type,
    )
    if message.correlation_data is not None:
        recorded.correlation_id = correlation_text(message.correlation_data)
    extra: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key, value in message.user_properties:
        if key in seen or key not in _ENVELOPE_KEYS or not _set_envelope(recorded, key, value):
            extra.append((key, value))
        seen.add(key)
    recorded.user_properties = tuple(extra)
    return recorded


def _set_envelope(recorded: RecordedMessage, key: str, value: str) -> bool:
    """Put one envelope property on `recorded`; False when it is not well formed."""
    if key == "time":
        try:
            number = float(value)
        except ValueError:
            return False
        if not math.isfinite(number):
            return False  # kept as it came, in user_properties
        recorded.time = number
    elif key == "metadata":
        try:
            parsed = json.loads(value)
        except ValueError:
            return False
        if not isinstance(parsed, dict):
            return False
        recorded.metadata = parsed
    elif key == PARENT_PROPERTY:
        recorded.parent_id = value
    else:
        setattr(recorded, key, value)
    return True


class Recording(list[RecordedMessage]):
    """The messages of a recording, in the order they were received."""

    def correlation_ids(self) -> list[str]:
        """Every correlation id, in order of first appearance."""
        return list(dict.fromkeys(m.correlation_id for m in self if m.correlation_id))

    def of(self, correlation_id: str) -> Recording:
        """The messages with `correlation_id`."""
        return Recording(m for m in self if m.correlation_id == correlation_id)

    def roots(self) -> Recording:
        """The first message of each correlation id: what started each utterance.

        Replaying only these into a bus whose services run regenerates the rest, so
        the replay's trace can be compared with the recording's.
        """
        firsts: dict[str, RecordedMessage] = {}
        for message in sorted(self, key=lambda m: m.timestamp):
            if message.correlation_id and message.correlation_id not in firsts:
                firsts[message.correlation_id] = message
        chosen = {id(m) for m in firsts.values()}
        return Recording(m for m in self if id(m) in chosen)

    def lines(self) -> Iterator[str]:
        for message in self:
            yield message.line()

    def save(self, path: str | Path) -> None:
        """Write the recording to `path` (JSON Lines)."""
        with open(path, "w", encoding="utf-8") as file:
            for line in self.lines():
                file.write(line + "\n")


def load_recording(path: str | Path) -> Recording:
    """Read a recording (``voicebus record`` writes them); `RecordingError` names the
    line that is not a recorded message."""
    recording = Recording()
    try:
        with open(path, encoding="utf-8") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    recording.append(RecordedMessage.from_json(json.loads(line)))
                except (ValueError, RecordingError) as exc:
                    raise RecordingError(
                        f"line {number} of {path} is not a recorded message ({exc}); "
                        "make recordings with `voicebus record`"
                    ) from None
    except OSError as exc:
        raise RecordingError(f"cannot read recording {path}: {exc.strerror or exc}") from None
    return recording


def replay_message(
    recorded: RecordedMessage, new_id: str | None, renamed: dict[str, str] | None = None
) -> Message:
    """The message that replays `recorded` (see the module doc): `new_id` replaces its
    envelope id (when it had one), `renamed` maps original ids to replayed ones."""
    props: list[tuple[str, str]] = []
    metadata: dict[str, Any] | None
    if recorded.id is not None and new_id is not None:
        props.append(("id", new_id))
        metadata = dict(recorded.metadata or {})
        metadata[REPLAYED_FROM] = recorded.id
    else:
        metadata = recorded.metadata
        if recorded.id is not None:
            props.append(("id", recorded.id))
    if recorded.type is not None:
        props.append(("type", recorded.type))
    if recorded.time is not None:
        props.append(("time", repr(time.time() if new_id is not None else recorded.time)))
    if recorded.source is not None:
        props.append(("source", recorded.source))
    if recorded.parent_id is not None:
        parent = (renamed or {}).get(recorded.parent_id, recorded.parent_id)
        props.append((PARENT_PROPERTY, parent))
    if metadata is not None:
        props.append(("metadata", _compact(metadata).decode()))
    written = {key for key, _ in props}
    props.extend(pair for pair in recorded.user_properties if pair[0] not in written)
    correlation = recorded.correlation_id
    return Message(
        recorded.topic,
        recorded.payload,
        recorded.qos,
        recorded.retain,
        correlation_bytes(correlation) if correlation is not None else None,
        tuple(props),
        recorded.content_type,
    )


async def replay(
    bus: EventBus,
    recording: Sequence[RecordedMessage] | Iterable[RecordedMessage],
    speed: float = 1.0,
) -> dict[str, str]:
    """Publish `recording` again through `bus`, spaced as recorded divided by `speed`
    (0: as fast as the bus takes them); returns ``{original id: new id}``.

    Pass ``recording.roots()`` to replay only what started each utterance, so that
    the services on the bus produce the rest.
    """
    if speed < 0 or not math.isfinite(speed):
        raise RecordingError(f"speed must be a finite number >= 0, got {speed}")
    messages = sorted(recording, key=lambda m: m.received)
    new_id = RandomIds(f"replay-{bus.client_id}-")
    renamed: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    started = loop.time()
    for message in messages:
        if speed > 0:
            due = started + (message.received - messages[0].received) / speed
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        fresh = new_id() if message.id is not None else None
        await bus.publish_message(replay_message(message, fresh, renamed))
        if message.id is not None and fresh is not None:
            renamed[message.id] = fresh
    return renamed
