"""The transport callback: size check, decode, de-duplicate, resolve waiters, queue.

Runs on every received message, before any handler (so a handler that awaits
`wait_for` never deadlocks the bus). What cannot become an event is handed to
the `failed` callback (a dead letter), counted as unrouted, or ignored
(bookkeeping topics such as status and dead letters).

De-duplication: only the same message twice is a duplicate, i.e. the same
**topic**, source and id (a QoS 1 resend, a persistent session redelivering).
The same source and id on another topic is another message: a Node-RED flow that
answers by passing the request's ``msg`` on keeps the request's user properties,
and a peer that sends another service's ids on its own topics must not make us
drop that service's events. A message without an id (a peer without MQTT 5
properties, e.g. Rhasspy) gets a fresh one from `new_id` and is never
de-duplicated: nothing on the wire says two of them are the same. Nor is an
event handed over in-process (`voicebus.wire.handover`): the in-process broker
delivers each publish once per bus, and a retained copy comes without hand-over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..errors import DecodeError
from ..transport import LocalMessage, Message, Transport
from ..wire.codec import InvalidMessage, decode
from ..wire.events import Event, EventType, seal
from ..wire.handover import Handover, received
from ..wire.routes import PREFIX, SYSTEM_PREFIXES, RouteTable
from .cancellation import Cancellations
from .dispatch import Dispatcher
from .monitor import Monitor, SeenIds
from .waiters import Waiters

_CANCELLED = EventType.CANCELLED

InboundFailure = Callable[[Message, str, str, Event | None], None]
"""``failed(message, reason, error, event)``: record a message that was refused."""


class Inbound:
    """Turns received messages into queued events."""

    def __init__(
        self,
        routes: RouteTable,
        max_payload: int,
        new_id: Callable[[], str],
        dispatcher: Dispatcher,
        waiters: Waiters,
        monitor: Monitor,
        failed: InboundFailure,
    ) -> None:
        self._routes = routes
        self._max_payload = max_payload
        self._new_id = new_id
        self._fresh_ids = 0
        """Ids handed out by `_fresh_id`: tells a decoded message that had no id."""
        self._dispatcher = dispatcher
        self._waiters = waiters
        self._monitor = monitor
        self._failed = failed
        self._dispatched = SeenIds(10_000)
        self.acker: Transport | None = None
        """The transport that acknowledges received messages (`Message.ack`)."""
        self.cancellations: Cancellations | None = None
        """Applies received CANCELLED events and drops events of cancelled ids."""

    def on_message(self, message: Message) -> None:
        """Transport callback: decode, resolve waiters, queue for dispatch.

        A message with an `ack` token is acknowledged here unless it was queued:
        the dispatcher acknowledges that one once handled (at-least-once).
        """
        token = message.ack
        if token is None:
            self.receive(message)
            return
        queued = False
        try:
            queued = self.receive(message)
        finally:
            if not queued and self.acker is not None:
                self.acker.ack(token)

    def on_local(self, local: LocalMessage, sids: tuple[int, ...]) -> None:
        """In-process callback (``memory://``): a hand-over (`Handover`) for this
        bus's subscriptions `sids` (no acknowledgement, no message made). One this
        bus cannot take as it is (too large, another route table) is received as
        its message."""
        if (
            type(local) is Handover
            and local.routes is self._routes
            and len(local.payload) <= self._max_payload
        ):
            event = received(local, True) if self._dispatcher.pre else local.shared
            self._queue(event, sids, None, True, local.sender is self._monitor)
        else:
            self.receive(replace(local.message(), subscription_ids=sids, local=None))

    def receive(self, message: Message) -> bool:
        """Decode `message` and queue its event for dispatch; False when not queued
        (a dead letter, unrouted, a duplicate)."""
        limit = self._max_payload
        if len(message.payload) > limit and self._routes.match(message.topic):
            error = f"payload of {len(message.payload)} bytes exceeds {limit}"
            self._failed(message, "payload_too_large", error, None)
            return False
        local = message.local
        if type(local) is Handover and local.routes is self._routes:
            # Emitted in this process, validated there, delivered once per bus: no
            # decoding, and never a duplicate (a retained copy carries no hand-over).
            own = local.sender is self._monitor
            event = received(local, bool(self._dispatcher.pre))
            return self._queue(event, message.subscription_ids, message.ack, True, own)
        fresh = self._fresh_ids
        try:
            event = decode(message, self._routes, self._fresh_id)
        except InvalidMessage as exc:
            self._failed(message, exc.reason, str(exc), exc.event)
            return False
        except DecodeError as exc:
            topic = message.topic
            if not topic.startswith(PREFIX):
                self._monitor.unrouted += 1
            elif not topic.startswith(SYSTEM_PREFIXES):  # bookkeeping (status, dead letters)
                self._failed(message, exc.reason, str(exc), None)
            return False
        seal(event, not self._dispatcher.pre)  # read-only from here on (see `Event`)
        id_less = fresh != self._fresh_ids  # never a duplicate (see the module doc)
        own = self._monitor.emitted_here(event)
        return self._queue(event, message.subscription_ids, message.ack, id_less, own)

    def _queue(
        self, event: Event, sids: tuple[int, ...], ack: object | None, unique: bool, own: bool
    ) -> bool:
        """De-duplicate (unless `unique`), apply cancellations, resolve waiters, queue.
        `own`: this bus emitted the event (counted in its history by `emit`)."""
        dispatcher = self._dispatcher
        if dispatcher.group_sids and dispatcher.is_group_copy(sids):
            # The broker's copy for a group (shared subscription) of this bus: it is
            # dispatched to that group's handlers only, apart from the plain copy.
            if not unique and not self._dispatched.add(_message_key("g", event)):
                return False
            cancels = self.cancellations
            if cancels is not None and cancels.ids.until and cancels.drops(event):
                return False
        else:
            if not unique and not self._dispatched.add(_message_key("p", event)):
                return False
            cancels = self.cancellations
            if cancels is not None:
                if event.type is _CANCELLED:
                    cancels.on_event(event)
                elif cancels.ids.until and event.correlation_id and cancels.drops(event):
                    return False
            if self._waiters.pending:
                self._waiters.resolve(event)
        dispatcher.enqueue(event, sids, ack, own)
        return True

    def _fresh_id(self) -> str:
        """`new_id`, counted: decode calls it only for a message that has no id."""
        self._fresh_ids += 1
        return self._new_id()


def _message_key(copy: str, event: Event) -> str:
    """The de-duplication key of a received message: `copy` (``p`` plain, ``g`` a
    group's copy), topic, source (absent and empty differ) and id, each length-
    prefixed so no choice of values can make two different messages one key."""
    source = event.source
    size = -1 if source is None else len(source)
    return f"{copy}{len(event.topic)}:{size}:{event.topic}{source or ''}{event.id}"
