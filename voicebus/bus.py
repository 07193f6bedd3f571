"""`EventBus`: the seed API over a transport.

Data flows one way: ``emit -> validate -> encode -> transport`` on the sending
side; ``transport -> decode -> wait_for futures -> queue -> pre middleware ->
handlers by priority -> post middleware -> history/stats`` on the receiving side.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import fields
from enum import Enum
from typing import Any, ClassVar

from .codec import InvalidMessage, decode, encode
from .errors import BusStateError, DecodeError, VoicebusError
from .events import Event, EventType
from .models import Payload
from .monitor import HandlerStats, Monitor, SeenIds
from .routes import PREFIX, ROUTES, SYSTEM_PREFIXES, RouteTable
from .subscriptions import EventFilter, Handler, Subscription, SubscriptionRegistry, handler_name
from .transport import CONSUMER, Message, Transport, open_transport, parse_url, resolve_url
from .transport.mqtt import MqttOptions
from .waiters import Waiter, Waiters

log = logging.getLogger("voicebus")

Target = Enum | str
"""What `subscribe` and `wait_for` accept: an event type or an MQTT topic filter."""
Middleware = Callable[[Event], Any]

_MQTT_OPTIONS = {f.name for f in fields(MqttOptions)} - {"client_id"}


class EventBus:
    """An event bus on ``memory://`` (default), ``mqtt://`` or ``mqtts://``.

    Args:
        url: bus URL; defaults to ``$VOICEBUS_URL``, then ``memory://``.
        client_id: MQTT client id and default event `source`.
        max_queue_size: received events waiting for dispatch before the transport
            stops reading (back-pressure; nothing is dropped).
        enable_history: keep the last `history_size` events.
        **options: MQTT settings (``username``, ``password``, ``session_expiry``,
            ``ca_file``, ``cert_file``, ``key_file``, ``keepalive``,
            ``publish_timeout``, ``max_payload_size``; reconnect: ``reconnect``,
            ``reconnect_delay``, ``reconnect_max_delay``, ``reconnect_jitter``,
            ``outbox_size``, ``resend_window``; ``status``): see `MqttOptions`.
    """

    _instance: ClassVar[EventBus | None] = None

    def __init__(
        self,
        url: str | None = None,
        *,
        client_id: str | None = None,
        max_queue_size: int = 1000,
        enable_history: bool = True,
        history_size: int = 100,
        dead_letter_size: int = 1000,
        component: str = "bus",
        routes: RouteTable | None = None,
        **options: Any,
    ) -> None:
        unknown = set(options) - _MQTT_OPTIONS
        if unknown:
            raise TypeError(f"unknown EventBus option(s): {', '.join(sorted(unknown))}")
        self.url = resolve_url(url)
        self._parsed_url = parse_url(self.url)
        prefix = uuid.uuid4().hex[:12]
        self.client_id = client_id or f"voicebus-{prefix}"
        self.component = component
        self.max_queue_size = max(1, max_queue_size)
        self._options = options
        self._max_payload = int(options.get("max_payload_size") or MqttOptions.max_payload_size)
        self._routes = routes or ROUTES
        self._counter = itertools.count(1)
        self._id_prefix = prefix
        self._own_ids = prefix + "-"
        self.monitor = Monitor(
            enable_history=enable_history,
            history_size=history_size,
            dead_letter_size=dead_letter_size,
        )
        self._subs = SubscriptionRegistry()
        self._waiters = Waiters()
        self._lingering: OrderedDict[str, None] = OrderedDict()
        self._pre: list[Middleware] = []
        self._post: list[Middleware] = []
        self._handler_stats: list[tuple[Subscription, HandlerStats]] = []
        self._dispatched = SeenIds(10_000)
        self._group_sids: set[int] = set()
        self._queue: deque[tuple[Event, tuple[int, ...]]] = deque()
        self._transport: Transport | None = None
        self._running = False
        self._paused = False
        self._delivering = False
        self._wakeup: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._start_lock: asyncio.Lock | None = None
        self._sub_chain: asyncio.Future[Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle -------------------------------------------------------------------

    @classmethod
    async def get_instance(cls) -> EventBus:
        """The process-wide bus (created on first call from ``$VOICEBUS_URL``, not started)."""
        from .singleton import get_bus

        return get_bus()

    @property
    def is_running(self) -> bool:
        return self._running

    @property
    def source(self) -> str:
        """The default `Event.source` of events this bus emits."""
        return self.client_id

    def _new_id(self) -> str:
        """An id for an event this bus emits (``<bus prefix>-<n>``)."""
        return f"{self._id_prefix}-{next(self._counter)}"

    def _inbound_id(self) -> str:
        """An id for a received message that came without one (``<bus prefix>.<n>``)."""
        return f"{self._id_prefix}.{next(self._counter)}"

    async def start(self) -> None:
        """Connect and start dispatching (idempotent)."""
        if self._running:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._running:
                return
            transport = open_transport(self._parsed_url, client_id=self.client_id, **self._options)
            await transport.connect(self._on_message)
            if hasattr(transport, "on_publish_failed"):
                transport.on_publish_failed = self._publish_failed
            self._transport = transport
            self._loop = asyncio.get_running_loop()
            self._wakeup = asyncio.Event()
            self._paused = False
            self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="voicebus-dispatch")
            try:
                for topic_filter, ref in list(self._subs.filters.items()):
                    await transport.subscribe(topic_filter, ref.subscription_id)
            except BaseException:
                await self._shutdown()
                raise
            self._running = True
            log.debug("bus %s started on %s", self.client_id, transport.url)

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Dispatch what was received, then disconnect. A stopped singleton is discarded."""
        from .singleton import forget

        forget(self)
        if not self._running:
            return
        self._running = False
        deadline = time.monotonic() + drain_timeout
        while (self._queue or self._delivering or self._tasks) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        await self._shutdown()

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            try:
                await self._dispatcher
            except asyncio.CancelledError:
                pass
            self._dispatcher = None
        transport, self._transport = self._transport, None
        self._queue.clear()
        self._sub_chain = None
        if transport is not None:
            await transport.close()

    async def __aenter__(self) -> EventBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- subscribing -----------------------------------------------------------------

    def _filter_for(self, target: Target) -> tuple[str, Enum | None]:
        if isinstance(target, Enum):
            return self._routes.get(target).filter, target
        if not isinstance(target, str):
            raise TypeError(f"expected an EventType or an MQTT topic filter, got {target!r}")
        if "/" not in target and target not in ("#", "+", "*"):
            event_type = _event_type_named(target)
            return self._routes.get(event_type).filter, event_type
        return ("#" if target == "*" else target), None

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
    ) -> Subscription:
        """Call `handler` for every event of `event_type` (or on an MQTT filter).

        Higher `priority` runs first; `filter_func` skips events; `group` shares the
        work between instances (MQTT 5 shared subscription). Returns a handle for
        `unsubscribe`.
        """
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        topic_filter, etype = self._filter_for(event_type)
        sub = Subscription(
            topic_filter, handler, priority, filter_func, once, etype, group,
            component or self.component,
        )
        if self._subs.add(sub):
            self._broker_subscribe(sub.broker_filter)
        if group:
            self._group_sids.add(self._subs.filters[sub.broker_filter].subscription_id)
        return sub

    def once(
        self,
        event_type: Target,
        handler: Handler,
        priority: int = 0,
        filter_func: EventFilter | None = None,
    ) -> Subscription:
        """Like `subscribe`, removed after the first event it handles."""
        return self.subscribe(event_type, handler, priority, filter_func, once=True)

    def unsubscribe(self, handler: Handler | Subscription) -> int:
        """Remove a subscription (by handle) or every subscription of a handler."""
        removed = self._subs.find(handler)
        for sub in removed:
            self._remove(sub)
        return len(removed)

    def _remove(self, sub: Subscription) -> None:
        sid = self._subs.subscription_id(sub.broker_filter)
        if self._subs.remove(sub):
            self._group_sids.discard(sid or 0)
            self._broker_unsubscribe(sub.broker_filter)

    def _chain(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run broker (un)subscribe calls one after another, in call order."""
        if not self._running and self._transport is None:
            return
        previous = self._sub_chain

        async def step() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await make()

        task = asyncio.ensure_future(step())
        self._sub_chain = task
        task.add_done_callback(_log_failure)

    def _broker_subscribe(self, topic_filter: str) -> None:
        def make() -> Coroutine[Any, Any, None]:
            sid = self._subs.subscription_id(topic_filter)
            if self._transport is None or sid is None:
                return _nothing()
            return self._transport.subscribe(topic_filter, sid)

        self._chain(make)

    def _broker_unsubscribe(self, topic_filter: str) -> None:
        def make() -> Coroutine[Any, Any, None]:
            if self._transport is None or self._subs.subscription_id(topic_filter) is not None:
                return _nothing()
            return self._transport.unsubscribe(topic_filter)

        self._chain(make)

    async def _settle(self) -> None:
        """Wait until the broker has acknowledged every (un)subscribe made so far."""
        chain = self._sub_chain
        if chain is not None:
            await asyncio.gather(chain, return_exceptions=True)
            if self._sub_chain is chain:
                self._sub_chain = None

    # --- middleware ------------------------------------------------------------------

    def add_middleware(self, middleware: Middleware, pre: bool = True, post: bool = False) -> None:
        """Run `middleware(event)` before the handlers (``pre``) or after them (``post``).

        A pre middleware may change ``event.metadata``; returning ``False`` drops the event.
        """
        (self._post if post or not pre else self._pre).append(middleware)

    def remove_middleware(self, middleware: Middleware) -> None:
        for chain in (self._pre, self._post):
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
    ) -> Event:
        """Validate, publish and return one event (starts the bus if needed).

        Raises `PayloadValidationError` naming the field when `data` does not fit
        the event type's model; nothing is published then.
        """
        if isinstance(event_type, str) and not isinstance(event_type, Enum):
            event_type = _event_type_named(event_type)
        route = self._routes.get(event_type)
        event, message = encode(
            route,
            data if data is not None else {},
            event_id=self._new_id(),
            source=source or self.source,
            correlation_id=correlation_id,
            metadata=metadata,
        )
        await self.publish_message(message)
        self.monitor.record(event)
        return event

    async def publish_message(self, message: Message) -> None:
        """Publish an already encoded message (after pending subscriptions settle)."""
        if not self._running:
            await self.start()
        if self._sub_chain is not None:
            await self._settle()
        transport = self._transport
        if transport is None:
            raise BusStateError("the bus was stopped")
        await transport.publish(message)

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
        waiting = self.wait_for(response_type, timeout=timeout, correlation_id=cid)

        async def run() -> Event | None:
            try:
                await self.emit(event_type, data, correlation_id=cid)
            except BaseException:
                waiting.close()
                raise
            return await waiting

        return run()

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
        topic_filter, _ = self._filter_for(event_type)
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        waiter = Waiter(topic_filter, future, correlation_id, filter_func)
        self._waiters.add(waiter)
        if self._subs.acquire(topic_filter):
            self._broker_subscribe(topic_filter)
        return self._wait(waiter, timeout)

    async def _wait(self, waiter: Waiter, timeout: float | None) -> Event | None:
        try:
            if not self._running:
                await self.start()
            if self._sub_chain is not None:
                await self._settle()
            return await asyncio.wait_for(waiter.future, timeout)
        except TimeoutError:
            return None
        finally:
            self._waiters.discard(waiter)
            self._linger(waiter.topic_filter)

    def _linger(self, topic_filter: str) -> None:
        """Keep a waited-for filter subscribed for the next wait (bounded).

        Request/response in a loop would otherwise pay a SUBSCRIBE and an
        UNSUBSCRIBE round trip per request (measured: +300-450 µs at p50).
        """
        lingering = self._lingering
        if topic_filter in lingering:
            lingering.move_to_end(topic_filter)
            if self._subs.release(topic_filter):
                self._broker_unsubscribe(topic_filter)
            return
        lingering[topic_filter] = None
        if len(lingering) > 64:
            oldest, _ = lingering.popitem(last=False)
            if self._subs.release(oldest):
                self._broker_unsubscribe(oldest)

    # --- receiving ---------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        """Transport callback: decode, resolve waiters, queue for dispatch."""
        if len(message.payload) > self._max_payload and self._routes.match(message.topic):
            error = f"payload of {len(message.payload)} bytes exceeds {self._max_payload}"
            self._inbound_failure(message, "payload_too_large", error, None)
            return
        try:
            event = decode(message, self._routes, self._inbound_id)
        except InvalidMessage as exc:
            self._inbound_failure(message, exc.reason, str(exc), exc.event)
            return
        except DecodeError as exc:
            topic = message.topic
            if not topic.startswith(PREFIX):
                self.monitor.unrouted += 1
            elif not topic.startswith(SYSTEM_PREFIXES):  # bookkeeping (status, dead letters)
                self._inbound_failure(message, exc.reason, str(exc), None)
            return
        sids = message.subscription_ids
        if self._group_sids and sids and self._group_sids.issuperset(sids):
            # The broker's copy for a group (shared subscription) of this bus: it is
            # dispatched to that group's handlers only, apart from the plain copy.
            if not self._dispatched.add(event.id + "\x00group"):
                return
        else:
            if not self._dispatched.add(event.id):
                return
            if len(self._waiters):
                self._waiters.resolve(event)
        queue = self._queue
        queue.append((event, message.subscription_ids))
        wakeup = self._wakeup
        if wakeup is not None and len(queue) == 1:
            wakeup.set()
        if len(queue) >= self.max_queue_size and not self._paused and self._transport:
            self._paused = True
            self._transport.pause_reading()

    async def _dispatch_loop(self) -> None:
        CONSUMER.set(self._transport)
        queue = self._queue
        wakeup = self._wakeup
        assert wakeup is not None
        resume_at = self.max_queue_size // 2
        while True:
            if not queue:
                wakeup.clear()
                await wakeup.wait()
                continue
            event, sids = queue.popleft()
            if self._paused and len(queue) <= resume_at and self._transport is not None:
                self._paused = False
                self._transport.resume_reading()
            self._delivering = True
            try:
                await self._deliver(event, sids)
            except Exception:  # never let one event stop the bus
                log.exception("dispatch of %s failed", event)
            finally:
                self._delivering = False

    async def _deliver(self, event: Event, sids: tuple[int, ...]) -> None:
        started = time.perf_counter()
        for middleware in self._pre:
            if await self._run_middleware(middleware, event) is False:
                return
        perf = time.perf_counter
        group_copy = bool(self._group_sids and sids and self._group_sids.issuperset(sids))
        for sub in self._subs.matching(event.topic):
            if not sub.active:
                continue
            if sub.group is not None:
                if self._subs.subscription_id(sub.broker_filter) not in sids:
                    continue
            elif group_copy:
                continue
            if sub.filter_func is not None:
                try:
                    if not sub.filter_func(event):
                        continue
                except Exception as exc:
                    self._handler_failed(event, sub, exc)
                    continue
            if sub.once:
                self._remove(sub)
            stats = self._stats_for(sub, event)
            begin = perf()
            try:
                result = sub.handler(event)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception as exc:
                stats.error_count += 1
                self._handler_failed(event, sub, exc)
            stats.call_count += 1
            stats.total_duration += perf() - begin
        for middleware in self._post:
            await self._run_middleware(middleware, event)
        monitor = self.monitor
        monitor.processed += 1
        monitor.processing_time += perf() - started
        if not event.id.startswith(self._own_ids):  # emitted here: counted by emit
            monitor.record(event)

    async def _run_middleware(self, middleware: Middleware, event: Event) -> Any:
        try:
            result = middleware(event)
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception as exc:
            self._record_failure(event, handler_name(middleware), exc, "bus")
            return None

    def _stats_for(self, sub: Subscription, event: Event) -> HandlerStats:
        stats: HandlerStats | None = getattr(sub, "stats", None)
        if stats is None:
            label = sub.event_type.value if sub.event_type is not None else sub.topic_filter
            stats = HandlerStats(sub.name, str(label))
            sub.stats = stats  # type: ignore[attr-defined]
            self._handler_stats.append((sub, stats))
        return stats

    # --- failures ----------------------------------------------------------------------

    def _handler_failed(self, event: Event, sub: Subscription, exc: Exception) -> None:
        self._record_failure(event, sub.name, exc, sub.component)

    def _record_failure(self, event: Event, handler: str, exc: Exception, component: str) -> None:
        error = str(exc) or type(exc).__name__
        log.error("handler %s failed on %s: %s", handler, event.type.value, error, exc_info=exc)
        self._dead_letter(
            {
                "event": event,
                "error": error,
                "handler": handler,
                "time": time.time(),
                "reason": "handler_error",
                "exception": type(exc).__name__,
                "topic": event.topic,
                "payload": None,
            }
        )
        if event.type != EventType.ERROR_OCCURRED:
            data = {
                "error": error,
                "handler": handler,
                "context": event.type.value,
                "siteId": event.data.get("siteId") or "default",
                "sessionId": event.data.get("sessionId"),
                "component": component,
            }
            self._spawn(self._emit_error(data, event.correlation_id))

    def _publish_failed(self, message: Message, exc: Exception) -> None:
        """The broker refused a message sent from the outbox after a reconnect."""
        self._inbound_failure(message, "publish_refused", str(exc), None)

    def _inbound_failure(
        self, message: Message, reason: str, error: str, event: Event | None
    ) -> None:
        log.warning("dead letter from %s: %s", message.topic, error)
        self._dead_letter(
            {
                "event": event,
                "error": error,
                "handler": None,
                "time": time.time(),
                "reason": reason,
                "topic": message.topic,
                "payload": message.payload,
            }
        )
        if not message.topic.startswith("voicebus/error/"):
            data = {"error": error, "context": reason, "component": "bus"}
            self._spawn(self._emit_error(data, None))

    def _dead_letter(self, record: dict[str, Any]) -> None:
        """Keep `record` in memory and publish it retained to voicebus/deadLetter/<id>."""
        from .deadletters import publish_dead_letter

        self.monitor.dead_letter(record)
        self._spawn(publish_dead_letter(self, record))

    async def _emit_error(self, data: dict[str, Any], correlation_id: str | None) -> None:
        try:
            await self.emit(EventType.ERROR_OCCURRED, data, correlation_id=correlation_id)
        except VoicebusError as exc:
            log.warning("could not emit ERROR_OCCURRED: %s", exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- introspection -----------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """Metrics in the seed's shape: ``metrics``, ``handler_stats`` and more."""
        stats = self.monitor.snapshot()
        stats["handler_stats"] = [s.as_dict() for _, s in self._handler_stats]
        stats.update(
            {
                "url": self._parsed_url.redacted(),
                "client_id": self.client_id,
                "running": self._running,
                "subscriptions": len(self._subs),
                "broker_filters": sorted(self._subs.filters),
                "queue_size": len(self._queue),
                "max_queue_size": self.max_queue_size,
                "pending_waits": len(self._waiters),
            }
        )
        return stats

    def get_event_history(self, event_type: Enum | None = None, limit: int = 100) -> list[Event]:
        """The most recent events (oldest first), optionally of one type."""
        return self.monitor.get_history(event_type, limit)

    def get_dead_letter_queue(self, limit: int = 100) -> list[dict[str, Any]]:
        """Recent dead letters: dicts with ``event``, ``error``, ``handler``, ``time``..."""
        return self.monitor.get_dead_letters(limit)

    def clear_dead_letter_queue(self) -> None:
        self.monitor.dead_letters.clear()


def _event_type_named(name: str) -> Enum:
    """`EventType` by value (``speech_detected``) or name (``SPEECH_DETECTED``)."""
    try:
        return EventType(name)
    except ValueError:
        pass
    try:
        return EventType[name.upper()]
    except KeyError:
        from difflib import get_close_matches

        names = [e.value for e in EventType]
        close = get_close_matches(name.lower(), names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        from .errors import UnknownEventTypeError

        raise UnknownEventTypeError(f"unknown event type {name!r}{hint}") from None


async def _nothing() -> None:
    return None


def _log_failure(task: asyncio.Future[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("broker subscription change failed: %s", exc)
