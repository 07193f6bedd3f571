"""Correlation ids on the wire: MQTT 5 Correlation Data, and Hermes's ``sessionId``.

Correlation Data is binary on the wire; `correlation_text` turns it into the
``correlation_id`` string without losing anything: a value that is UTF-8 and a
plain printable string stays as it is, any other (not UTF-8, control or
non-characters, or text that itself looks like the escaped form) becomes
``"b64:"`` + its base64. `correlation_bytes` is the exact inverse, used by
`codec.encode`: a reply made with ``correlation_id=event.correlation_id`` carries
the original bytes back, and two different values never share one id. (So a
correlation id of your own of the form ``b64:<base64>`` stands for those bytes.)

`sender_correlation` finds the correlation id of a message voicebus refused, so
its ERROR_OCCURRED event and dead letter can name the sender's session.
"""

from __future__ import annotations

import base64
import binascii
import re

from pydantic_core import from_json

from .events import Event
from .strings import mqtt_string_problem

_B64 = "b64:"
_NOT_PLAIN = re.compile(
    "[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef"
    + "".join(
        f"{chr(plane | 0xFFFE)}{chr(plane | 0xFFFF)}" for plane in range(0, 0x110000, 0x10000)
    )
    + "]"
)
"""Code points that are no plain MQTT string: controls and non-characters."""


def correlation_text(data: bytes) -> str:
    """The `Event.correlation_id` for Correlation Data `data` (lossless; see above)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _B64 + base64.b64encode(data).decode("ascii")
    if _NOT_PLAIN.search(text) is None and _escaped(text) is None:
        return text
    return _B64 + base64.b64encode(data).decode("ascii")


def correlation_bytes(correlation_id: str) -> bytes:
    """The Correlation Data for `correlation_id`: the inverse of `correlation_text`."""
    raw = _escaped(correlation_id)
    return correlation_id.encode() if raw is None else raw


def _escaped(text: str) -> bytes | None:
    """The bytes `text` stands for when it is ``b64:`` + canonical base64 (of at least
    one byte), else None."""
    if not text.startswith(_B64) or len(text) == len(_B64):
        return None
    body = text[len(_B64) :]
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == body else None


def sender_correlation(
    payload: bytes, correlation_data: bytes | None, event: Event | None, max_bytes: int
) -> str | None:
    """The correlation id the sender of a refused message gave it, read defensively.

    The decoded envelope's, else its Correlation Data, else a ``sessionId`` string
    at the top of the payload when that is a JSON object of at most `max_bytes`
    (the payload may be anything: not JSON, not UTF-8, huge, hostile). None when
    there is none, or when it is no valid MQTT string (`strings.mqtt_string_problem`:
    it could not travel again).
    """
    if event is not None and event.correlation_id is not None:
        return event.correlation_id
    if correlation_data is not None:
        return correlation_text(correlation_data)
    if len(payload) > max_bytes:
        return None
    try:
        value = from_json(payload)
    except ValueError:
        return None
    session = value.get("sessionId") if isinstance(value, dict) else None
    if not isinstance(session, str) or not session or mqtt_string_problem(session):
        return None
    return session
