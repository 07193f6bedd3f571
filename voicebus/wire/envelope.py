"""The MQTT 5 envelope of an encoded event: its user properties and `Message`.

`codec.prepare` validates an event and checks every envelope string; `to_message`
then makes the message when something needs one (over MQTT always; on
``memory://`` only for a receiver that reads the bytes: see `handover`).
"""

from __future__ import annotations

import math
import time

from .correlation import correlation_bytes
from .events import Event
from .message import Message
from .routes import Route

PARENT = "parent"
"""The user property carrying `Event.parent_id`."""


def expires_at(route: Route, ttl: float | None) -> float | None:
    """`Message.expires` for `ttl` seconds from now (None: the route's default)."""
    if ttl is None:
        ttl = route.ttl
    if ttl is not None and ttl != math.inf:
        return time.monotonic() + ttl
    return None


def to_message(
    route: Route, event: Event, payload: bytes, metadata_text: str | None, expires: float | None
) -> Message:
    """The MQTT message of an event `prepare` made (its envelope in properties)."""
    correlation_id = event.correlation_id
    message = Message(
        event.topic,
        payload,
        route.qos,
        route.retain,
        correlation_bytes(correlation_id) if correlation_id is not None else None,
        tuple(properties(route, event, metadata_text)),
        route.content_type,
        (),
        True,
    )
    message.expires = expires
    return message


def properties(route: Route, event: Event, metadata_text: str | None) -> list[tuple[str, str]]:
    """The user properties of `event`'s envelope, in their wire order."""
    props = [("id", event.id), ("type", route.type_text), ("time", repr(event.timestamp))]
    if event.source:
        props.append(("source", event.source))
    if event.parent_id:
        props.append((PARENT, event.parent_id))
    if metadata_text is not None:
        props.append(("metadata", metadata_text))
    return props
