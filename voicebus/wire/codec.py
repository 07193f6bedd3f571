"""Encode events into MQTT messages and decode messages back into events.

Payload: the event data as plain JSON on the route's topic. Envelope: MQTT 5
properties (user properties ``id``, ``source``, ``type``, ``time``, ``parent``,
``metadata`` as JSON; the correlation id in Correlation Data), so a peer that
only sees topic and payload (Home Assistant, Rhasspy) misses nothing it needs.

``parent`` (`Event.parent_id`, `PARENT`) is the ``id`` of the event whose handler
emitted this one: left out when there is none. Like ``id`` it is an opaque MQTT
string, taken as it comes (an empty value counts as absent); ``id`` + ``parent``
+ correlation id make an utterance's causal tree (trace, record, replay).

Decoding treats every envelope value as untrusted:

- ``time`` (seconds since the epoch) counts only when it parses as a finite
  number in ``(0, MAX_TIME]``. Otherwise (``nan``, ``inf``, ``1e300``, negative,
  zero, not a number) the event's timestamp is the receive time and
  ``event.metadata["voicebus.bad_time"]`` (`BAD_TIME`) holds what came, cut to
  64 characters and escaped to printable ASCII. An absent ``time`` is no problem
  and leaves no note.
- Correlation Data is binary on the wire; `correlation_text` turns it into the
  ``correlation_id`` string without losing anything: a value that is UTF-8 and a
  plain printable string stays as it is, any other (not UTF-8, control or
  non-characters, or text that itself looks like the escaped form) becomes
  ``"b64:"`` + its base64. `correlation_bytes` is the exact inverse, used by
  `encode`: a reply made with ``correlation_id=event.correlation_id`` carries the
  original bytes back, and two different values never share one id. (So a
  correlation id of your own of the form ``b64:<base64>`` stands for those bytes.)
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

import pydantic
from pydantic_core import PydanticSerializationError, from_json, to_json

from ..errors import DecodeError, PayloadValidationError
from ..transport.base import Message
from .events import Event
from .models import Payload
from .routes import Route, RouteTable
from .strings import MAX_STRING_BYTES, mqtt_string_problem, nested_string_problem, shown
from .topics import check_topic

CONTENT_TYPE = "application/json"
_SHORT_ENOUGH = MAX_STRING_BYTES // 4  # code points that fit an MQTT string however they encode

PARENT = "parent"
"""The user property carrying `Event.parent_id`."""
BAD_TIME = "voicebus.bad_time"
"""The `Event.metadata` key noting a ``time`` property that was refused (see above)."""
MAX_TIME = 253402300799.0
"""The latest ``time`` accepted: 9999-12-31T23:59:59Z (what `datetime` can show)."""
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


def _envelope_time(raw: str | None) -> float | None:
    """The ``time`` property as a timestamp; None when absent or not sane."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) and 0.0 < value <= MAX_TIME else None


def validate_payload(route: Route, data: Mapping[str, Any] | Payload) -> dict[str, Any]:
    """Validate `data` against the route's model; return the wire keys with defaults."""
    model = route.model
    try:
        if type(data) is dict:  # the common case, without pydantic's wrappers
            obj = model.__pydantic_validator__.validate_python(data)
        elif isinstance(data, model):
            obj = data
        elif isinstance(data, pydantic.BaseModel):
            obj = model.model_validate(data.model_dump(by_alias=True))
        else:
            obj = model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _payload_error(route.event_type, exc) from None
    return _dump(obj)


def _dump(obj: Payload) -> dict[str, Any]:
    """The wire keys of a validated payload; fields left as ``None`` are left out."""
    data: dict[str, Any] = obj.__pydantic_serializer__.to_python(
        obj, by_alias=True, exclude_none=True
    )
    return data


def _payload_error(event_type: Enum, exc: pydantic.ValidationError) -> PayloadValidationError:
    errors = exc.errors(include_url=False)
    fields = [".".join(str(part) for part in err["loc"]) for err in errors]
    detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in errors)
    return PayloadValidationError(str(event_type.value), fields, detail)


def encode(
    route: Route,
    data: Mapping[str, Any] | Payload,
    *,
    event_id: str,
    source: str | None,
    correlation_id: str | None,
    metadata: Mapping[str, Any] | None,
    parent_id: str | None = None,
    ttl: float | None = None,
) -> tuple[Event, Message]:
    """Validate and encode one event; nothing is sent. `ttl`: seconds until it goes
    stale (`Message.expires`), None: the route's default.

    Every string that goes on the wire is checked to be a valid MQTT string (see
    `strings`): the topic's parameters and length (`TopicError`), the user
    properties and the correlation id (`PayloadValidationError` naming the field).
    """
    wire = validate_payload(route, data)
    topic = route.topic(wire)
    timestamp = time.time()
    event = Event(
        route.event_type,
        wire,
        event_id,
        source,
        timestamp,
        correlation_id,
        dict(metadata) if metadata else {},
        topic,
        parent_id,
    )
    if route.topic_only:
        wire = {k: v for k, v in wire.items() if k not in route.topic_only}
    type_value = route.event_type._value_
    if type(type_value) is not str:  # a user's Enum of numbers
        type_value = str(type_value)
    time_text = repr(timestamp)
    props: list[tuple[str, str]] = [("id", event_id), ("type", type_value), ("time", time_text)]
    envelope = event_id + type_value + time_text
    if source:
        props.append(("source", source))
        envelope += source
    if parent_id:
        props.append((PARENT, parent_id))
        envelope += parent_id
    if metadata:
        metadata_text = _metadata_json(route, metadata)
        props.append(("metadata", metadata_text))
        envelope += metadata_text
    if correlation_id is not None:
        envelope += correlation_id
    # One scan for the common case: printable (see `strings.mqtt_string_problem`) and
    # short enough that no value can be over the limit. Else each value is checked.
    if not envelope.isprintable() or len(envelope) > _SHORT_ENOUGH:
        _check_envelope(route, props, correlation_id, metadata)
    try:
        payload = to_json(wire)
    except PydanticSerializationError as exc:
        raise _unencodable(route, wire, exc) from None
    message = Message(
        topic,
        payload,
        route.qos,
        route.retain,
        correlation_bytes(correlation_id) if correlation_id is not None else None,
        tuple(props),
        CONTENT_TYPE,
        (),
        True,
    )
    if ttl is None:
        ttl = route.ttl
    if ttl is not None and ttl != math.inf:
        message.expires = time.monotonic() + ttl
    return event, message


def _check_envelope(
    route: Route,
    props: list[tuple[str, str]],
    correlation_id: str | None,
    metadata: Mapping[str, Any] | None,
) -> None:
    """Raise `PayloadValidationError` naming the first envelope value (user property
    or correlation id) that is not a valid MQTT string."""
    values = [*props, ("correlation_id", correlation_id)] if correlation_id is not None else props
    for field, value in values:
        problem = mqtt_string_problem(value)
        if problem is None:
            continue
        if field == "metadata" and metadata:  # name the key or value if one is to blame
            _check_metadata_strings(route, metadata)
        raise PayloadValidationError(
            str(route.event_type.value), [field], f"{shown(value)} {problem}"
        )


def check_message(message: Message) -> None:
    """Check the wire strings of a message built by hand (`EventBus.publish_message`):
    the topic (`TopicError`) and every user-property key and value
    (`PayloadValidationError`)."""
    check_topic(message.topic)
    for index, (key, value) in enumerate(message.user_properties):
        for part, text in (("key", key), ("value", value)):
            problem = mqtt_string_problem(text)
            if problem is not None:
                raise PayloadValidationError(
                    "message",
                    [f"user_properties[{index}].{part}"],
                    f"{shown(text)} (on topic {shown(message.topic)}) {problem}",
                )


def _metadata_json(route: Route, metadata: Mapping[str, Any]) -> str:
    """`metadata` as the JSON text of one user property.

    Its strings (keys and values, at any depth) must be MQTT strings themselves,
    also those JSON would escape (a control character): peers decode them and may
    send them on (a topic level, a property). Printable JSON text without a
    backslash holds no such string, and a short one none too long (the common case:
    no walk through `metadata`).
    """
    try:
        text = to_json(metadata).decode()
    except PydanticSerializationError as exc:  # e.g. a lone surrogate: named below
        _check_metadata_strings(route, metadata)
        raise PayloadValidationError(
            str(route.event_type.value), ["metadata"], f"not JSON: {exc}"
        ) from None
    if "\\" in text or len(text) > _SHORT_ENOUGH:  # what is not printable: by `encode`
        _check_metadata_strings(route, metadata)
    return text  # checked with the other user properties


def _check_metadata_strings(route: Route, metadata: Mapping[str, Any]) -> None:
    found = nested_string_problem(metadata, "metadata")
    if found is not None:
        where, problem = found
        raise PayloadValidationError(str(route.event_type.value), [where], problem)


def _unencodable(
    route: Route, wire: dict[str, Any], exc: PydanticSerializationError
) -> PayloadValidationError:
    """The payload has a string without a UTF-8 form (a lone surrogate): name its field.
    (Any other string may go in the payload: it is binary, and JSON escapes what it must.)"""
    field = "payload"
    for key, value in wire.items():
        try:
            to_json(value)
        except PydanticSerializationError:
            field = key
            break
    return PayloadValidationError(
        str(route.event_type.value), [field], f"cannot be encoded as JSON: {exc}"
    )


def parse_json_object(payload: bytes) -> dict[str, Any]:
    """The payload as a JSON object, or `DecodeError` with the reason."""
    try:
        value = from_json(payload)
    except ValueError as exc:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise DecodeError("invalid_utf8", f"payload is not UTF-8: {uexc}") from None
        raise DecodeError("invalid_json", f"payload is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DecodeError("not_an_object", f"payload is JSON {type(value).__name__}, not an object")
    return value


class InvalidMessage(DecodeError):
    """A message on a routed topic that could not be decoded; `event` holds what arrived."""

    def __init__(self, reason: str, detail: str, event: Event | None) -> None:
        super().__init__(reason, detail)
        self.event = event


def decode(message: Message, routes: RouteTable, new_id: Callable[[], str]) -> Event:
    """Turn an inbound message into an `Event`.

    Raises `DecodeError` (reason ``unknown_topic``) when no route knows the topic,
    and `InvalidMessage` when the payload is not a valid event of that route.
    """
    found = routes.match(message.topic)
    if found is None:
        raise DecodeError("unknown_topic", f"no route for topic {message.topic!r}")
    route, params = found
    props = dict(message.user_properties) if message.user_properties else {}
    event_id = props.get("id", "")
    source = props.get("source")
    raw_time = props.get("time")
    timestamp = _envelope_time(raw_time)
    metadata: dict[str, Any] = {}
    if "metadata" in props:
        try:
            parsed = from_json(props["metadata"])
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            metadata = parsed
    if timestamp is None:
        timestamp = time.time()
        if raw_time is not None:
            metadata[BAD_TIME] = raw_time[:64].encode("unicode_escape").decode("ascii")
    correlation_id = None
    if message.correlation_data is not None:
        correlation_id = correlation_text(message.correlation_data)
    event = Event(
        route.event_type,
        {},
        event_id or new_id(),
        source,
        timestamp,
        correlation_id,
        metadata,
        message.topic,
        props.get(PARENT) or None,
    )
    try:
        raw = parse_json_object(message.payload)
    except DecodeError as exc:
        raise InvalidMessage(exc.reason, exc.detail, event) from None
    if params:
        raw.update(params)
    event.data = raw
    # a message encoded by this process from a validated model is not validated again
    data = raw if message.validated else _validate_inbound(route, raw, event)
    if correlation_id is None:
        session = data.get("sessionId")
        if isinstance(session, str):
            event.correlation_id = session
    return event


def _validate_inbound(route: Route, raw: dict[str, Any], event: Event) -> dict[str, Any]:
    try:
        data = _dump(route.model.__pydantic_validator__.validate_python(raw))
    except pydantic.ValidationError as exc:
        error = _payload_error(route.event_type, exc)
        raise InvalidMessage("validation", str(error), event) from None  # names the field
    event.data = data
    return data
