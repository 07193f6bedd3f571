"""In-process hand-over: an event emitted in this process reaches the receiving
buses of this process without the JSON round trip (encode, parse, look up the
route, read the envelope) that MQTT needs.

The emitting bus publishes a `Handover` (`MemoryTransport.publish_local`) when
the payload survives JSON unchanged (`plain`): strings, integers, floats,
booleans, None, and dicts and lists of them; not on a binary route or one
with topic-only keys, whose received data is rebuilt from the topic. It carries
the receivers' event (`Handover.shared`), made once at emit: the same values an
MQTT receiver decodes (the same envelope rules: an empty source is absent, a
missing correlation id is the payload's ``sessionId``), its data and metadata
frozen copies (`freeze`: what the sender does to its own event reaches nobody).
A received event is read-only (see `Event`), so every receiving bus without pre
middleware takes that one event; a bus with some gets a copy whose metadata they
may change (`received`). The payload was
validated by `codec.prepare`, which encoded its bytes too: they travel beside it
(a receiver's size limit). The MQTT message (user properties, correlation data)
is made only for a receiver that takes messages (`Handover.message`: a paused
one, a shared subscription, a bus with another route table, which decodes it as
over MQTT); a retained event is never handed over (it is kept as a message).
"""

from __future__ import annotations

from copy import copy
from typing import Any, cast

from .envelope import to_message
from .events import FROZEN_EMPTY, Event, FrozenDict, ReadOnlyEvent, freeze, unseal_metadata
from .fastdump import ATOMS
from .message import Message
from .routes import Route

_ATOMS = ATOMS  # pydantic-core JSON keeps inf, nan


class Handover:
    """The sender's event, the receivers' read-only copy of it (`shared`), who sent
    it (the emitting bus's token), and what its MQTT message is made of (`message`,
    built when first needed). Made by `hand_over` only."""

    __slots__ = (
        "event", "expires", "made", "metadata_text", "payload", "route", "routes",
        "sender", "shared", "topic",
    )  # fmt: skip

    route: Route
    event: Event
    shared: ReadOnlyEvent
    """What every receiving bus without pre middleware hands its handlers: the
    event as an MQTT receiver decodes it, its data and metadata frozen copies."""
    topic: str
    payload: bytes
    """The encoded payload (its size is checked against a receiver's limit)."""
    metadata_text: str | None
    expires: float | None
    sender: object
    routes: object
    """The sender's route table: a bus with another one decodes the bytes."""
    made: Message | None
    """Its MQTT message, once `message` made it."""

    def message(self) -> Message:
        """The MQTT message of the event, carrying this hand-over (`Message.local`):
        for a receiver that takes messages, not hand-overs (paused, a backlog, a
        shared subscription). Made once, while the emit that made this runs."""
        message = self.made
        if message is None:
            event = self.event
            message = to_message(self.route, event, self.payload, self.metadata_text, self.expires)
            message.local = self
            self.made = message
        return message


def hand_over(
    route: Route,
    event: Event,
    payload: bytes,
    metadata_text: str | None,
    expires: float | None,
    sender: object,
    routes: object,
    atoms: bool = False,
) -> Handover | None:
    """A `Handover` for `event` (`codec.prepare` made it, `payload`,
    `metadata_text` and `atoms`, its data known to be JSON atoms only, with it),
    or None when a receiver must decode the bytes."""
    if route.body is not None or route.topic_only or route.retain:
        return None
    data = event.data
    if atoms or _ATOMS.issuperset(map(type, data.values())):
        frozen = FrozenDict(data)
    elif _plain(data):
        frozen = freeze(data)
    else:
        return None
    metadata = event.metadata
    if metadata and not _plain(metadata):
        return None
    correlation_id = event.correlation_id
    if correlation_id is None:  # as a receiver decodes it: the payload's session
        session = frozen.get("sessionId")
        if isinstance(session, str):
            correlation_id = session
    # Both objects field by field: no `__init__` frames (~1k instructions each).
    shared = _new(Event)
    shared.type = event.type
    shared.data = frozen
    shared.id = event.id
    shared.source = event.source or None
    shared.timestamp = event.timestamp
    shared.correlation_id = correlation_id
    shared.metadata = freeze(metadata) if metadata else FROZEN_EMPTY
    shared.topic = event.topic
    shared.parent_id = event.parent_id or None
    shared.__class__ = ReadOnlyEvent  # `events.seal`, its data frozen already
    handover = _new(Handover)
    handover.route = route
    handover.event = event
    handover.shared = cast(ReadOnlyEvent, shared)
    handover.topic = event.topic
    handover.payload = payload
    handover.metadata_text = metadata_text
    handover.expires = expires
    handover.sender = sender
    handover.routes = routes
    handover.made = None
    return handover


_new = object.__new__


def received(handover: Handover, middleware: bool) -> Event:
    """The receiver's `Event` for a handed-over one: `Handover.shared`, or for a
    bus with pre `middleware` a copy of its own, its `metadata` changeable."""
    shared = handover.shared
    if not middleware:
        return shared
    event = copy(shared)  # read-only still, sharing the frozen data
    unseal_metadata(event)
    return event


def _plain(value: Any) -> bool:
    """`value` comes back from JSON as it went in (equal, and of the same types)."""
    kind = type(value)
    if kind in _ATOMS:
        return True
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list:
        return all(_plain(v) for v in value)
    return False
