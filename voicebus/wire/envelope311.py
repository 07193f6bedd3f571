"""The envelope over MQTT 3.1.1, which has no properties (``protocol="3.1.1"``).

MQTT 5 carries the envelope in properties (`codec.py`). A 3.1.1 broker (NATS's
MQTT gateway, RabbitMQ before 3.13) drops them, so the transport folds the
envelope into what 3.1.1 does carry, topic and payload:

- ``voicebus/`` topics (our own contract; payloads are JSON objects): one reserved
  key ``"_vb"`` in the payload object, an object of the user properties (``id``,
  ``source``, ``type``, ``time``, ``metadata``, and any later one such as a parent
  id) plus ``correlationId`` (`codec.correlation_text` of the Correlation Data, so
  binary correlation data survives). A key, not a wrapper: Home Assistant and
  Node-RED flows read ``value_json.text`` the same way in both modes. `unfold`
  takes it out again before the payload is validated, so handlers never see it.
- ``hermes/`` and ``rhasspy/`` topics: nothing is added (Rhasspy validates those
  payloads; an unknown key is not ours to add): the correlation travels as the
  payload's ``sessionId`` (written by `emit` where the Hermes message has that
  field, read back by `codec.decode`); id, source, time and metadata are lost (a
  receiver gives the event a fresh id, so it is never taken for a duplicate).
- Binary payloads (audio) carry nothing but the bytes.

No I/O here: the transport calls `fold` before a publish and `unfold` on receipt.
Every value that comes in is untrusted: ``_vb`` that is not an object, keys or
values that are not strings, contain control or non-characters or are longer than
an MQTT string are dropped (the event then gets a fresh id, no correlation).
"""

from __future__ import annotations

from typing import Any

from pydantic_core import from_json, to_json

from ..errors import PayloadValidationError
from .codec import correlation_bytes, correlation_text
from .routes import PREFIX
from .strings import mqtt_string_problem

KEY = "_vb"
"""The reserved payload key of the envelope on ``voicebus/`` topics over MQTT 3.1.1."""
CORRELATION = "correlationId"
"""The key of the correlation id inside ``_vb``."""
_MARK = b'"_vb"'

UserProperties = tuple[tuple[str, str], ...]


def carries_envelope(topic: str) -> bool:
    """Does a 3.1.1 payload on `topic` carry the ``_vb`` envelope? (``voicebus/`` only.)"""
    return topic.startswith(PREFIX)


def fold(
    topic: str,
    payload: bytes,
    correlation_data: bytes | None,
    user_properties: UserProperties,
) -> bytes:
    """The payload to publish over MQTT 3.1.1: with ``_vb`` on a ``voicebus/`` topic
    whose payload is a JSON object and that has an envelope; else `payload` as is.

    `PayloadValidationError` when the payload already has a ``_vb`` key of its own.
    """
    if not (correlation_data is not None or user_properties) or not carries_envelope(topic):
        return payload
    if not payload.lstrip().startswith(b"{"):
        return payload
    try:
        data = from_json(payload)
    except ValueError:
        return payload  # not ours to fix: receivers dead-letter it as they would
    if not isinstance(data, dict):
        return payload
    if KEY in data:
        raise PayloadValidationError(
            topic,
            [KEY],
            f"{KEY!r} is reserved for the envelope on voicebus/ topics over MQTT 3.1.1; "
            "rename that key",
        )
    envelope: dict[str, str] = dict(user_properties)
    if correlation_data is not None:
        envelope[CORRELATION] = correlation_text(correlation_data)
    return bytes(to_json({KEY: envelope, **data}))


def unfold(topic: str, payload: bytes) -> tuple[bytes, bytes | None, UserProperties] | None:
    """A 3.1.1 payload's envelope taken out: (payload without ``_vb``, Correlation
    Data, user properties); None when it has none (the message stays as it is)."""
    if not carries_envelope(topic) or _MARK not in payload:
        return None
    try:
        data = from_json(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or KEY not in data:
        return None
    envelope: Any = data.pop(KEY)
    props: list[tuple[str, str]] = []
    correlation: bytes | None = None
    if isinstance(envelope, dict):
        for key, value in envelope.items():
            if not (_plain(key) and _plain(value)):
                continue
            if key == CORRELATION:
                correlation = correlation_bytes(value)
            else:
                props.append((key, value))
    return bytes(to_json(data)), correlation, tuple(props)


def _plain(value: object) -> bool:
    """A valid MQTT 5 string, as a user property must be (`strings.py`)."""
    return isinstance(value, str) and mqtt_string_problem(value) is None
