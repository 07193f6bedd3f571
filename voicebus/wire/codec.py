"""Encode events into MQTT messages and decode messages back into events.

Payload: the event data as plain JSON on the route's topic. Envelope: MQTT 5
properties (user properties ``id``, ``source``, ``type``, ``time``, ``parent``,
``metadata`` as JSON; the correlation id in Correlation Data), so a peer that
only sees topic and payload (Home Assistant, Rhasspy) misses nothing it needs.

``parent`` (`Event.parent_id`, `PARENT`) is the ``id`` of the event whose handler
emitted this one: left out when there is none. Like ``id`` it is an opaque MQTT
string, taken as it comes (an empty value counts as absent); ``id`` + ``parent``
+ correlation id make an utterance's causal tree (trace, record, replay).

On a route with a ``sessionId`` field (`Route.session`) the correlation id is
also written into the payload's ``sessionId`` unless the data sets one, so a peer
without MQTT 5 (Rhasspy, Home Assistant) keeps the session; a message without
Correlation Data takes its correlation id from ``sessionId``. A binary route
(`Route.binary`, see `voicebus.wire.binary`) carries its bytes as the payload.

Decoding treats every envelope value as untrusted:

- ``time`` (seconds since the epoch) counts only when it parses as a finite
  number in ``(0, MAX_TIME]``. Otherwise (``nan``, ``inf``, ``1e300``, negative,
  zero, not a number) the event's timestamp is the receive time and
  ``event.metadata["voicebus.bad_time"]`` (`BAD_TIME`) holds what came, cut to
  64 characters and escaped to printable ASCII. An absent ``time`` is no problem
  and leaves no note.
- Correlation Data is binary on the wire: `voicebus.wire.correlation` turns it
  into the ``correlation_id`` string and back, losslessly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

import pydantic
from pydantic_core import PydanticSerializationError, from_json, to_json

from ..errors import DecodeError, PayloadValidationError
from .binary import JSON, WAV, wav_problem
from .correlation import correlation_bytes as correlation_bytes  # re-exported: the
from .correlation import correlation_text as correlation_text  # codec's public pair
from .envelope import PARENT as PARENT  # re-exported: the codec names its properties
from .envelope import expires_at, properties, to_message
from .envelope_checks import (
    KNOWN_LONGEST,
    KNOWN_MAX,
    KNOWN_VALID,
    SHORT_ENOUGH,
    check_envelope,
    metadata_json,
)
from .envelope_checks import check_message as check_message  # re-exported (publish_message)
from .events import Event
from .fastdump import ATOMS as _ATOMS
from .fastdump import VALIDATORS, wire_validator
from .message import Message
from .models import Payload
from .routes import ROUTES, Route, RouteTable

_new = object.__new__

CONTENT_TYPE = JSON

BAD_TIME = "voicebus.bad_time"
"""The `Event.metadata` key noting a ``time`` property that was refused (see above)."""
MAX_TIME = 253402300799.0
"""The latest ``time`` accepted: 9999-12-31T23:59:59Z (what `datetime` can show)."""
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


def topic_for(event_type: Enum, data: Mapping[str, Any] | Payload | None = None) -> str:
    """The concrete topic `event_type` is published on for payload `data`.

    Parameters are filled from `data` after validation (so defaults apply:
    ``topic_for(EventType.WAKE_WORD_DETECTED)`` is ``hermes/hotword/default/detected``).
    """
    route = ROUTES.get(event_type)
    return route.topic(validate_payload(route, data or {}))


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
    event, payload, metadata_text, _ = prepare(
        route, data, event_id, source, correlation_id, metadata, parent_id
    )
    return event, to_message(route, event, payload, metadata_text, expires_at(route, ttl))


def prepare(
    route: Route,
    data: Mapping[str, Any] | Payload,
    event_id: str,
    source: str | None,
    correlation_id: str | None,
    metadata: Mapping[str, Any] | None,
    parent_id: str | None,
    *,
    id_checked: bool = False,
) -> tuple[Event, bytes, str | None, bool]:
    """`encode` up to the MQTT message: validate, check every envelope string, encode
    the payload. The event, its payload bytes, its ``metadata`` property text (None
    without metadata; `to_message` makes the message of them when needed) and
    whether its data is known to hold JSON atoms only (`fastdump.ATOMS`).
    `id_checked`: `event_id` is known to be a valid MQTT string (a bus's own)."""
    session = route.session and correlation_id is not None
    if session and isinstance(data, Mapping) and _no_session(data):
        data = {**data, "sessionId": correlation_id}  # before validation: it may be required
    fast = None
    if type(data) is dict:
        try:
            fast = VALIDATORS[route.model]
        except KeyError:  # the model's first dict payload
            fast = wire_validator(route.model)
    if fast is not None:  # a simple model: straight into wire keys (see `fastdump`)
        try:
            wire = fast.validate_python(data)
        except pydantic.ValidationError as exc:
            raise _payload_error(route.event_type, exc) from None
        # Fields are scalars; an extra key may hold a container (the dump copies it).
        if len(wire) == fast.plain_size:  # the fields always there only: no None either
            atoms = True
        else:
            no_extras = fast.keys.issuperset(wire)
            atoms = no_extras or _ATOMS.issuperset(map(type, wire.values()))
            if not atoms:
                wire = validate_payload(route, data)
            elif (fast.nullable or not no_extras) and None in wire.values():
                wire = {k: v for k, v in wire.items() if v is not None}  # `exclude_none`
    else:
        wire = validate_payload(route, data)
        atoms = False  # not known
    if session and wire.get("sessionId") is None:  # a model instance without one
        wire["sessionId"] = correlation_id
    # `Event(...)` field by field: no `__init__` frame (~1k instructions per emit).
    event = _new(Event)
    event.type = route.event_type
    event.data = wire
    event.id = event_id
    event.source = source
    event.timestamp = time.time()
    event.correlation_id = correlation_id
    event.metadata = dict(metadata) if metadata else {}
    event.topic = route.fixed_topic or route.topic(wire)
    event.parent_id = parent_id
    # The time property is always a valid string; the bus's own ids (`id_checked`),
    # and event types and sources found valid before (`KNOWN_VALID`), need no scan.
    envelope = "" if id_checked else event_id
    known = KNOWN_VALID
    type_text = route.type_text
    learn = False
    if type_text not in known:
        envelope += type_text
        learn = True
    if source and source not in known:
        envelope += source
        learn = True
    if parent_id:
        envelope += parent_id
    metadata_text = None
    if metadata:
        metadata_text = metadata_json(route, metadata)
        envelope += metadata_text
    if correlation_id is not None:
        envelope += correlation_id
    # One scan for the common case: printable (see `strings.mqtt_string_problem`) and
    # short enough that no value can be over the limit. Else each value is checked.
    if envelope and (not envelope.isprintable() or len(envelope) > SHORT_ENOUGH):
        props = properties(route, event, metadata_text)
        check_envelope(route, props, correlation_id, metadata)
    if learn and len(known) < KNOWN_MAX:  # valid: they passed (short ones kept: bounded)
        known.add(type_text)
        if source and len(source) <= KNOWN_LONGEST:
            known.add(source)
    body = route.body
    if body is not None:  # a binary route: the bytes are the payload
        payload: bytes = wire[body]
    else:
        if route.topic_only:
            wire = {k: v for k, v in wire.items() if k not in route.topic_only}
        try:
            payload = to_json(wire)
        except PydanticSerializationError as exc:
            raise _unencodable(route, wire, exc) from None
    return event, payload, metadata_text, atoms


def _no_session(data: Mapping[str, Any]) -> bool:
    """`data` sets no session (by wire key or attribute name)."""
    return data.get("sessionId") is None and data.get("session_id") is None


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
    if route.body is not None:
        return _decode_binary(route, params, message, event)
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


def _decode_binary(
    route: Route, params: dict[str, str], message: Message, event: Event
) -> Event:
    """The event of a binary route: the topic parameters and the payload bytes as
    they arrived (never JSON-decoded); a payload of the wrong kind is refused."""
    payload = bytes(message.payload)
    problem = wav_problem(payload) if route.content_type == WAV else None
    if problem is not None:
        raise InvalidMessage("not_wav", f"{route.event_type.value}: {problem}", event)
    raw: dict[str, Any] = {**params, str(route.body): payload}
    event.data = raw
    if not message.validated:
        _validate_inbound(route, raw, event)
    return event


def _validate_inbound(route: Route, raw: dict[str, Any], event: Event) -> dict[str, Any]:
    try:
        data = _dump(route.model.__pydantic_validator__.validate_python(raw))
    except pydantic.ValidationError as exc:
        error = _payload_error(route.event_type, exc)
        raise InvalidMessage("validation", str(error), event) from None  # names the field
    event.data = data
    return data
