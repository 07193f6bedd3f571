"""Dispatch: received events through middleware and handlers, one at a time, in order.

The transport callback queues decoded events here; one task takes them out and,
once an event is handled, acknowledges its message (`Message.ack`) to the transport.
When `max_queue_size` events wait, the transport is paused (it delivers no more:
over MQTT it withholds PUBACKs, so the broker holds the rest) and resumed at half.

Nothing a handler, a ``filter_func`` or a middleware raises stops dispatch: any
exception, ``asyncio.CancelledError`` and ``GeneratorExit`` included, is that
callable's failure (a dead letter plus ERROR_OCCURRED, through `report_failure`)
and dispatch goes on with the next subscription and the next event. A raising
pre middleware drops its event (fails closed): the handlers never see it. Only
``KeyboardInterrupt`` and ``SystemExit`` pass through: they end the dispatch task
and, as asyncio re-raises them from the event loop, the process.

A ``CancelledError`` is the bus's own (obeyed: dispatch ends, the event is not
acknowledged) only when the dispatch task itself was asked to cancel: by `stop`
(which sets a flag before it cancels) or by anyone calling ``cancel()`` on the
task, such as ``asyncio.run`` cancelling what is left at exit
(``Task.cancelling()``). One a handler raised or let through from something it
awaited, while nobody cancelled the dispatch task, is that handler's failure.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..transport import CONSUMER, Transport
from ..wire.events import Event
from .monitor import HandlerStats, Monitor
from .subscriptions import Subscription, SubscriptionRegistry, handler_name

log = logging.getLogger("voicebus")

Middleware = Callable[[Event], Any]
FailureReport = Callable[[Event, str, BaseException, str], None]
"""Called as ``report(event, handler_name, exception, component)``."""

_FATAL = (KeyboardInterrupt, SystemExit)
"""What a handler may raise to end the process: never caught here."""


class Dispatcher:
    """The receiving end of a bus: queue, middleware, handlers by priority, stats."""

    def __init__(
        self,
        registry: SubscriptionRegistry,
        monitor: Monitor,
        report_failure: FailureReport,
        remove_subscription: Callable[[Subscription], None],
        *,
        own_ids: str,
        max_queue_size: int,
    ) -> None:
        self._registry = registry
        self._monitor = monitor
        self._report = report_failure
        self._remove = remove_subscription
        self._own_ids = own_ids
        self.max_queue_size = max_queue_size
        self.pre: list[Middleware] = []
        self.post: list[Middleware] = []
        self._handler_stats: dict[tuple[str, str], HandlerStats] = {}
        self.group_sids: set[int] = set()
        self._queue: deque[tuple[Event, tuple[int, ...], object | None]] = deque()
        self._transport: Transport | None = None
        self._paused = False
        self._delivering = False
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        """Set by `stop` before it cancels the task: that cancellation is obeyed."""

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> bool:
        """Events are waiting or being handled."""
        return bool(self._queue) or self._delivering

    def start(self, transport: Transport) -> None:
        self._transport = transport
        self._paused = False
        self._stopping = False
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="voicebus-dispatch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._queue.clear()  # not acknowledged: a persistent session gets them again
        self._transport = None

    def is_group_copy(self, sids: tuple[int, ...]) -> bool:
        """The broker's copy for this bus's shared subscription(s) only."""
        return bool(self.group_sids and sids and self.group_sids.issuperset(sids))

    def enqueue(self, event: Event, sids: tuple[int, ...], ack: object | None = None) -> None:
        """Queue a received event (from the transport callback; never blocks); `ack`
        goes to the transport once it is handled."""
        queue = self._queue
        queue.append((event, sids, ack))
        if len(queue) == 1 and self._wakeup is not None:
            self._wakeup.set()
        if len(queue) >= self.max_queue_size and not self._paused and self._transport:
            self._paused = True
            self._transport.pause_reading()

    async def _run(self) -> None:
        CONSUMER.set(self._transport)
        queue = self._queue
        wakeup = self._wakeup
        assert wakeup is not None
        resume_at = self.max_queue_size // 2
        task = asyncio.current_task()
        assert task is not None
        while not (self._stopping or task.cancelling()):  # even if a handler swallowed it
            if not queue:
                wakeup.clear()
                await wakeup.wait()
                continue
            event, sids, ack = queue.popleft()
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
            # Not when cancelled (`stop`): unacknowledged, a persistent session gets it again.
            if ack is not None and self._transport is not None:
                self._transport.ack(ack)

    def _own_cancellation(self) -> bool:
        """The dispatch task was asked to cancel (by `stop`, or by whoever cancels it)."""
        if self._stopping:
            return True
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    def _failed(self, event: Event, name: str, exc: BaseException, component: str) -> None:
        """`name` raised `exc` on `event`: a failure, unless it is the bus's own
        cancellation or `KeyboardInterrupt` / `SystemExit` (re-raised)."""
        if isinstance(exc, _FATAL):
            raise exc
        if isinstance(exc, asyncio.CancelledError) and self._own_cancellation():
            raise exc
        try:
            self._report(event, name, exc, component)
        except Exception:  # an exception that cannot even be reported (str() raises)
            log.exception("could not report the failure of %s on %s", name, event)
            try:
                self._report(
                    event, name, RuntimeError(f"{type(exc).__name__} (unprintable)"), component
                )
            except Exception:
                log.exception("could not report the failure of %s on %s", name, event)

    async def _deliver(self, event: Event, sids: tuple[int, ...]) -> None:
        perf = time.perf_counter
        started = perf()
        for middleware in self.pre:
            if await self._run_middleware(middleware, event) is False:
                return  # dropped, or failed: fails closed
        registry = self._registry
        group_copy = self.is_group_copy(sids)
        for sub in registry.matching(event.topic):
            if not sub.active:
                continue
            if sub.group is not None:
                if registry.subscription_id(sub.broker_filter) not in sids:
                    continue
            elif group_copy:
                continue
            if sub.filter_func is not None:
                try:
                    if not sub.filter_func(event):
                        continue
                except BaseException as exc:
                    self._failed(event, sub.name, exc, sub.component)
                    continue
            if sub.once:  # removed before it runs, so it runs once
                self._remove(sub)
            stats = self._stats_for(sub)
            begin = perf()
            try:
                result = sub.handler(event)
                if result is not None and inspect.isawaitable(result):
                    await result
            except BaseException as exc:
                self._failed(event, sub.name, exc, sub.component)  # or re-raised
                stats.error_count += 1
            stats.call_count += 1
            stats.total_duration += perf() - begin
        for middleware in self.post:
            await self._run_middleware(middleware, event)
        monitor = self._monitor
        monitor.processed += 1
        monitor.processing_time += perf() - started
        if not event.id.startswith(self._own_ids):  # emitted here: counted by emit
            monitor.record(event)

    async def _run_middleware(self, middleware: Middleware, event: Event) -> Any:
        """What `middleware` returned; ``False`` when it raised (a failure)."""
        try:
            result = middleware(event)
            if inspect.isawaitable(result):
                result = await result
            return result
        except BaseException as exc:
            self._failed(event, handler_name(middleware), exc, "bus")
            return False

    @property
    def handler_stats(self) -> list[HandlerStats]:
        """One entry per handler and event type (or filter), however often subscribed."""
        return list(self._handler_stats.values())

    def _stats_for(self, sub: Subscription) -> HandlerStats:
        stats = sub.stats
        if stats is None:
            label = str(sub.event_type.value if sub.event_type is not None else sub.topic_filter)
            stats = self._handler_stats.get((sub.name, label))
            if stats is None:
                stats = self._handler_stats[sub.name, label] = HandlerStats(sub.name, label)
            sub.stats = stats
        return stats
