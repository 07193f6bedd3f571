"""`EventBus`: the seed API over a transport.

Data flows one way: ``emit -> validate -> encode -> transport`` on the sending
side (on ``memory://`` ``emit -> validate -> hand over``: the MQTT message is made
only if a receiver needs it, see `voicebus.wire.handover`); ``transport -> decode
-> wait_for futures -> dispatch (pre middleware -> handlers by priority -> post
middleware) -> history/stats`` on the receiving side.
The pieces live in their rooms: `wire` (events, models, routes, codec),
`transport`, `connection` (start, publish, drain, stop), `receive` (broker sync,
waiters, dispatch, monitor), `deadletters`; every setting is in `config`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Coroutine, Mapping
from enum import Enum
from typing import Any, ClassVar

from typing_extensions import Unpack

from .config import BusConfig, BusSettings, mqtt_protocol, positive_seconds, resolve_config
from .connection import Connection
from .deadletters import FailureReporter
from .errors import ConfigError, VoicebusError
from .receive.dispatch import HANDLING, Middleware
from .receive.monitor import Monitor
from .receive.side import ReceiveSide, Target

__all__ = ["EventBus", "Target"]
from .receive.subscriptions import EventFilter, Handler, Subscription
from .transport import BusURL, Message, Transport, parse_url, resolve_url
from .wire.codec import check_message, prepare
from .wire.envelope import expires_at, to_message
from .wire.events import Event, EventType, event_type_named
from .wire.handover import hand_over
from .wire.ids import RandomIds
from .wire.models import Payload
from .wire.routes import ROUTES, RouteTable

log = logging.getLogger("voicebus")


class EventBus:
    """An event bus on ``memory://`` (default), ``mqtt://`` or ``mqtts://``.

    Args:
        url: bus URL; defaults to ``$VOICEBUS_URL``, then ``memory://``.
        client_id: MQTT client id and default event `source` (generated when not given).
        routes: the route table (default: the shared `ROUTES`).
        config: every setting at once (`BusConfig`).
        **settings: any field of `BusConfig` by name (overrides `config`), e.g.
            ``max_queue_size``, ``enable_history``, ``session_expiry``, ``keepalive``.
            MQTT-only settings on a ``memory://`` bus raise `ConfigError`.
    """

    _shared: ClassVar[EventBus | None] = None
    """The process-wide bus of `get_instance` (see `voicebus.singleton`)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client_id: str | None = None,
        routes: RouteTable | None = None,
        config: BusConfig | None = None,
        **settings: Unpack[BusSettings],
    ) -> None:
        self._url = parse_url(resolve_url(url))
        self.config = resolve_config(config, settings, self._url.scheme)
        self._in_process = self._url.scheme == "memory"
        self._mqtt311 = (
            self._url.scheme != "memory" and mqtt_protocol(self.config, self._url.query) == "3.1.1"
        )
        self.url = self._url.redacted()
        """The bus URL without its password."""
        prefix = uuid.uuid4().hex[:12]
        self.client_id = client_id or f"voicebus-{prefix}"
        self.component = self.config.component
        self._routes = routes or ROUTES
        self._new_id = RandomIds(prefix + "-").next
        """Ids of events this bus emits: ``<bus prefix>-<16 random hex digits>``."""
        self._inbound_id = RandomIds(prefix + ".")
        """Ids for received messages that came without one: ``<bus prefix>.<random>``."""
        self.monitor = Monitor(
            enable_history=self.config.enable_history,
            history_size=self.config.history_size,
            dead_letter_size=self.config.dead_letter_size,
        )
        self._failures = FailureReporter(
            self.monitor,
            self.client_id,
            self.url,
            self.config.max_payload_size,
            publish=lambda message: self._link.publish_quietly(message),
            emit_error=self._emit_error,
            retained_max=self.config.dead_letter_retained_max,
            rate=self.config.dead_letter_rate,
            burst=self.config.dead_letter_burst,
        )
        self._side = ReceiveSide(
            self._routes,
            self.monitor,
            max_queue_size=self.config.max_queue_size,
            max_payload=self.config.max_payload_size,
            cancel_window=self.config.cancel_window,
            new_id=self._inbound_id,
            handler_failed=self._failures.handler_failed,
            inbound_failed=self._failures.inbound_failure,
        )
        self._link = Connection(
            self._url, self.client_id, self.config, self._side, self._failures, self.monitor
        )

    # --- lifecycle -------------------------------------------------------------------

    @classmethod
    async def get_instance(cls) -> EventBus:
        """The process-wide bus (created on first call from ``$VOICEBUS_URL``, not started)."""
        return cls.shared()

    @staticmethod
    def shared() -> EventBus:
        """`get_instance` without ``await``. A bus whose event loop has closed is
        replaced, so nothing stale crosses ``asyncio.run`` calls."""
        bus = EventBus._shared
        loop = bus._link.loop if bus is not None else None  # noqa: SLF001 (same class)
        if bus is None or (loop is not None and loop.is_closed()):
            bus = EventBus._shared = EventBus()
        return bus

    @property
    def is_running(self) -> bool:
        return self._link.running

    @property
    def redacted_url(self) -> str:
        """The bus URL without its password (the same as `url`)."""
        return self.url

    @property
    def broker(self) -> BusURL:
        """Where this bus connects (with credentials; its repr shows no password)."""
        return self._url

    @property
    def transport(self) -> Transport | None:
        """The open connection (``None`` while stopped); on MQTT an `MqttTransport`,
        whose ``connected``, ``reconnects``, ``session_present`` and ``outbox_size``
        tell how the link is doing."""
        return self._link.transport

    @property
    def routes(self) -> RouteTable:
        """The route table this bus encodes and decodes with."""
        return self._routes

    @property
    def source(self) -> str:
        """The default `Event.source` of events this bus emits."""
        return self.client_id

    @property
    def max_queue_size(self) -> int:
        return self._side.dispatcher.max_queue_size

    async def start(self) -> None:
        """Connect and start dispatching (idempotent)."""
        await self._link.start()

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Dispatch what was received, then disconnect. A stopped singleton is discarded."""
        if EventBus._shared is self:
            EventBus._shared = None
        await self._link.stop(drain_timeout)

    async def __aenter__(self) -> EventBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- subscribing -----------------------------------------------------------------

    def subscribe(
        self,
        event_type: Target,
        handler: Handler,
        priority: int = 0,
        filter_func: EventFilter | None = None,
        *,
        once: bool = False,
        group: str | None = None,
        component: str | None = None,
        timeout: float | None = None,
    ) -> Subscription:
        """Call `handler` for every event of `event_type` (or on an MQTT filter).

        Higher `priority` runs first; `filter_func` skips events; `group` shares the work
        between instances (MQTT 5 shared subscription); an async handler still running
        `timeout` seconds into an event is cancelled and recorded as a dead letter
        ``handler_timeout`` (plus ERROR_OCCURRED). Returns a handle for `unsubscribe`.

        Whatever `handler` or `filter_func` raises, ``asyncio.CancelledError`` and
        ``GeneratorExit`` included, is recorded as a dead letter plus ERROR_OCCURRED
        and dispatch goes on; only ``KeyboardInterrupt`` and ``SystemExit`` end the
        process. A handler cancelled by `cancel` (its event's correlation id) is
        counted as cancelled, not failed (see `voicebus.receive.dispatch`).
        """
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        if group and self._mqtt311:
            raise ConfigError(
                "group= needs MQTT 5 (the bus tells a group's copy apart by its "
                "subscription identifier); this bus speaks 3.1.1: run one worker, or use "
                "an MQTT 5 broker"
            )
        topic_filter, etype = self._side.target(event_type)
        sub = Subscription(
            topic_filter,
            handler,
            priority,
            filter_func,
            once,
            etype,
            group,
            component or self.component,
            positive_seconds("timeout", timeout),
        )
        self._side.add(sub)
        return sub

    def once(
        self,
        event_type: Target,
        handler: Handler,
        priority: int = 0,
        filter_func: EventFilter | None = None,
        *,
        timeout: float | None = None,
    ) -> Subscription:
        """Like `subscribe`, removed after the first event it handles."""
        subscribe = self.subscribe
        return subscribe(event_type, handler, priority, filter_func, once=True, timeout=timeout)

    def unsubscribe(self, handler: Handler | Subscription) -> int:
        """Remove a subscription (by handle) or every subscription of a handler."""
        removed = self._side.subs.find(handler)
        for sub in removed:
            self._side.remove(sub)
        return len(removed)

    async def ready(self) -> None:
        """Start the bus if needed, then return once the broker has acknowledged every
        (un)subscribe made so far (on ``memory://`` at once)."""
        await self._link.start()
        await self._side.filters.settle()

    # --- middleware ------------------------------------------------------------------

    def add_middleware(self, middleware: Middleware, pre: bool = True, post: bool = False) -> None:
        """Run `middleware(event)` before the handlers (``pre``) or after them (``post``).

        A pre middleware may change ``event.metadata``; returning ``False`` drops the event.
        A pre middleware that raises drops the event too (fails closed: the handlers
        never see it) and records a dead letter plus ERROR_OCCURRED; a raising post
        middleware is recorded the same way.
        """
        d = self._side.dispatcher
        (d.post if post or not pre else d.pre).append(middleware)

    def remove_middleware(self, middleware: Middleware) -> None:
        for chain in (self._side.dispatcher.pre, self._side.dispatcher.post):
            while middleware in chain:
                chain.remove(middleware)

    # --- emitting --------------------------------------------------------------------

    async def emit(
        self,
        event_type: Enum | str,
        data: Mapping[str, Any] | Payload | None = None,
        source: str | None = None,
        correlation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        ttl: float | None = None,
    ) -> Event:
        """Validate, publish and return one event (starts the bus if needed).

        Emitted while a handler runs (or in a task it made), the event inherits the
        handled event's correlation id unless one is given, and its id as
        `Event.parent_id`. `ttl`: seconds until the event goes stale (MQTT 5 Message
        Expiry: not delivered later, not sent from the outbox after a reconnect);
        None: the route's default (`voicebus.wire.routes.DEFAULT_TTLS`);
        ``math.inf``: never.

        Raises `PayloadValidationError` naming the field when `data` does not fit
        the event type's model; nothing is published then.
        """
        if not isinstance(event_type, Enum) and isinstance(event_type, str):
            event_type = event_type_named(event_type)
        route = self._routes.by_type.get(event_type) or self._routes.get(event_type)
        parent = HANDLING.get()
        if parent is not None and correlation_id is None:
            correlation_id = parent.correlation_id
        if ttl is not None:
            ttl = positive_seconds("ttl", ttl)
        expires = None if ttl is None and route.ttl is None else expires_at(route, ttl)
        event, payload, metadata_text, atoms = prepare(
            route,
            data if data is not None else {},
            self._new_id(),
            source or self.client_id,  # `source`
            correlation_id,
            metadata,
            parent.id if parent is not None else None,
            id_checked=True,
        )
        local = None
        if self._in_process:  # receivers here skip the JSON and the MQTT message
            sender, routes = self.monitor, self._routes
            local = hand_over(route, event, payload, metadata_text, expires, sender, routes, atoms)
        if local is not None:
            waiting = self._link.send_local(local)  # None unless paused, or their turn
            if waiting is not None:
                await waiting
        else:
            self.monitor.emitting(event)  # an echo to recognise when it comes back
            await self._link.send(to_message(route, event, payload, metadata_text, expires))
        self.monitor.record(event)
        return event

    async def publish_message(self, message: Message) -> None:
        """Publish an already encoded message (after pending subscriptions settle).

        One not built by `emit` has its wire strings checked first: a bad topic
        raises `TopicError`, a bad user property `PayloadValidationError`.
        """
        if not message.validated:
            check_message(message)
        await self._link.publish(message)

    async def cancel(self, correlation_id: str, reason: str = "cancelled") -> Event:
        """Cancel the utterance `correlation_id` on every bus (``voicebus/cancelled``):
        running handlers for it are cancelled, queued and late events skipped, waits
        raise `RequestCancelled` (see `voicebus.receive.cancellation`)."""
        if not correlation_id:
            raise ValueError("cancel needs the correlation id of the utterance to cancel")
        self._side.cancels.apply(correlation_id, reason)  # here at once; the echo is idempotent
        return await self.emit(
            EventType.CANCELLED, {"reason": reason}, correlation_id=correlation_id
        )

    def request(
        self,
        event_type: Enum | str,
        data: Mapping[str, Any] | Payload | None,
        response_type: Target,
        timeout: float | None = None,
        correlation_id: str | None = None,
    ) -> Awaitable[Event | None]:
        """Emit an event and wait for the response with the same correlation id."""
        cid = correlation_id or f"req-{self._new_id()}"
        waiter = self._side.register_wait(response_type, cid, None)

        return self._side.wait(waiter, timeout, lambda: self.emit(event_type, data, None, cid))

    # --- waiting -----------------------------------------------------------------------

    def wait_for(
        self,
        event_type: Target,
        timeout: float | None = None,
        correlation_id: str | None = None,
        filter_func: EventFilter | None = None,
    ) -> Coroutine[Any, Any, Event | None]:
        """Wait for the next matching event; ``None`` after `timeout` seconds.

        The wait is registered when this is called (before the caller goes on) and
        removed when the returned coroutine finishes, however it finishes.
        """
        waiter = self._side.register_wait(event_type, correlation_id, filter_func)
        return self._side.wait(waiter, timeout, self._link.settled)

    # --- the failure reporter's seam ----------------------------------------------------

    async def _emit_error(self, data: dict[str, Any], correlation_id: str | None) -> None:
        try:
            await self.emit(EventType.ERROR_OCCURRED, data, correlation_id=correlation_id)
        except VoicebusError as exc:
            log.warning("could not emit ERROR_OCCURRED: %s", exc)

    # --- introspection -----------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """Metrics in the seed's shape: ``metrics``, ``handler_stats`` and more."""
        return self._link.stats()

    def get_event_history(self, event_type: Enum | None = None, limit: int = 100) -> list[Event]:
        """The most recent events (oldest first), optionally of one type."""
        return self.monitor.get_history(event_type, limit)

    def get_dead_letter_queue(self, limit: int = 100) -> list[dict[str, Any]]:
        """Recent dead letters: dicts with ``event``, ``error``, ``handler``, ``time``..."""
        return self.monitor.get_dead_letters(limit)

    def clear_dead_letter_queue(self) -> None:
        """Forget the in-memory dead letters (the broker's copies stay: see `deadletters`)."""
        self.monitor.dead_letters.clear()

    async def run_forever(self) -> None:
        """Serve until SIGINT/SIGTERM, then stop (drain, ``offline``): `voicebus.service`."""
        from .service import run_forever

        await run_forever(self)
