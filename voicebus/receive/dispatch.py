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

**Interrupting one handler**: handlers run inline in the dispatch task (a task
per call would cost more than the rest of dispatch), so `interrupt` cancels the
dispatch task while it awaits that handler, after noting why (`_interrupt`).
Back in the dispatcher, the note tells this cancellation from any other: it is
taken back (``Task.uncancel``) and the handler's end is recorded as what was
asked for: a handler deadline (``subscribe(..., timeout=)``) is a failure,
`HandlerTimeout` (dead letter ``handler_timeout``); a cancellation of its
correlation id (`cancel_running`) is counted as cancelled, no failure, and the
event's other handlers are skipped. Dispatch goes on with the next event. A
handler that swallows the ``CancelledError`` and returns is recorded the same.

**Causality**: around each event's handlers `HANDLING` holds the event, so an
``emit`` made from a handler, or from a task it created (tasks copy the context),
inherits its correlation id and records its id as ``parent_id``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from inspect import isawaitable
from types import CoroutineType
from typing import Any

from ..errors import HandlerTimeout
from ..transport import CONSUMER, Transport
from ..wire.events import Event, seal_metadata, unseal_metadata
from .monitor import HandlerStats, Monitor
from .subscriptions import Subscription, SubscriptionRegistry, handler_name

log = logging.getLogger("voicebus")

Middleware = Callable[[Event], Any]
FailureReport = Callable[[Event, str, BaseException, str], None]
"""Called as ``report(event, handler_name, exception, component)``."""

_COROUTINE = CoroutineType
"""What an ``async def`` handler returns: awaited without `inspect.isawaitable`'s checks."""

_FATAL = (KeyboardInterrupt, SystemExit)
"""What a handler may raise to end the process: never caught here."""

HANDLING: ContextVar[Event | None] = ContextVar("voicebus_handling", default=None)
"""The event whose handlers are running (set by the dispatcher; see the module doc)."""


class Cancelled(Exception):
    """Why a handler was interrupted: its correlation id was cancelled."""


class Dispatcher:
    """The receiving end of a bus: queue, middleware, handlers by priority, stats."""

    def __init__(
        self,
        registry: SubscriptionRegistry,
        monitor: Monitor,
        report_failure: FailureReport,
        remove_subscription: Callable[[Subscription], None],
        *,
        max_queue_size: int,
    ) -> None:
        self._registry = registry
        self._monitor = monitor
        self._report = report_failure
        self._remove = remove_subscription
        self.max_queue_size = max_queue_size
        self.pre: list[Middleware] = []
        self.post: list[Middleware] = []
        self._handler_stats: dict[tuple[str, str], HandlerStats] = {}
        self.group_sids: set[int] = set()
        self._queue: deque[tuple[Event, tuple[int, ...], object | None, bool]] = deque()
        self._transport: Transport | None = None
        self._paused = False
        self._delivering = False
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        """Set by `stop` before it cancels the task: that cancellation is obeyed."""
        self._awaiting: Event | None = None
        """The event whose handler the dispatch task is awaiting (interruptible)."""
        self._call = 0
        """Counts awaited handler calls: tells a deadline which call it belongs to."""
        self._interrupt: BaseException | None = None
        """Why the dispatch task was cancelled by `interrupt` (taken back after)."""
        self.cancelled_handlers = 0
        """Handler calls ended by `cancel_running` (not failures)."""
        self._exempt: Event | None = None
        """An event whose handler cancelled its own correlation id: not interrupted."""

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

    def drop_correlation(self, correlation_id: str) -> int:
        """Skip the queued events with `correlation_id` (acknowledged, not handled);
        how many."""
        queue = self._queue
        keep = [item for item in queue if item[0].correlation_id != correlation_id]
        dropped = len(queue) - len(keep)
        if not dropped:
            return 0
        transport = self._transport
        if transport is not None:
            for event, _, ack, _own in queue:
                if ack is not None and event.correlation_id == correlation_id:
                    transport.ack(ack)
        queue.clear()
        queue.extend(keep)
        if self._paused and len(queue) <= self.max_queue_size // 2 and transport is not None:
            self._paused = False
            transport.resume_reading()
        return dropped

    def is_group_copy(self, sids: tuple[int, ...]) -> bool:
        """The broker's copy for this bus's shared subscription(s) only."""
        return bool(self.group_sids and sids and self.group_sids.issuperset(sids))

    def enqueue(
        self, event: Event, sids: tuple[int, ...], ack: object | None = None, own: bool = False
    ) -> None:
        """Queue a received event (from the transport callback; never blocks); `ack`
        goes to the transport once it is handled; `own`: this bus emitted it (its
        history and stats counted it then)."""
        queue = self._queue
        queue.append((event, sids, ack, own))
        if len(queue) == 1 and self._wakeup is not None:
            self._wakeup.set()
        if len(queue) >= self.max_queue_size and not self._paused and self._transport:
            self._paused = True
            self._transport.pause_reading()

    async def _run(self) -> None:
        """Take queued events out, one at a time, and run each one's middleware and
        handlers here (no coroutine per event: one fewer frame on the hot path)."""
        CONSUMER.set(self._transport)
        queue = self._queue
        wakeup = self._wakeup
        assert wakeup is not None
        resume_at = self.max_queue_size // 2
        task = asyncio.current_task()
        assert task is not None
        registry = self._registry
        monitor = self._monitor
        perf = time.perf_counter
        while not (self._stopping or task.cancelling()):  # even if a handler swallowed it
            if not queue:
                wakeup.clear()
                await wakeup.wait()
                continue
            event, sids, ack, own = queue.popleft()
            if self._paused and len(queue) <= resume_at and self._transport is not None:
                self._paused = False
                self._transport.resume_reading()
            self._delivering = True
            try:
                started = perf()
                HANDLING.set(event)
                if self.pre and not await self._run_pre(event):
                    continue  # dropped, or a middleware failed: fails closed (acknowledged)
                group_copy = bool(self.group_sids) and self.is_group_copy(sids)
                # One clock reading per handler: each handler's time runs from the end
                # of the previous one (the checks of skipped subscriptions in between,
                # a few dozen nanoseconds, count towards it). A reading costs ~80 ns
                # here: none is taken twice for the same moment.
                begin = perf() if self.pre else started
                cancelled = False
                subs = registry.by_topic.get(event.topic)
                for sub in subs if subs is not None else registry.matching(event.topic):
                    if sub.plain:  # active; no group, filter or once: one check, the common case
                        if group_copy:
                            continue
                    elif not sub.active:
                        continue
                    else:
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
                    stats = sub.stats or self._stats_for(sub)
                    try:
                        result = sub.handler(event)
                        if result is not None and (
                            type(result) is _COROUTINE or isawaitable(result)
                        ):
                            self._awaiting = event
                            if sub.timeout is None:
                                await result
                            else:
                                await self._with_deadline(result, sub.timeout)
                            self._awaiting = None
                    except BaseException as exc:
                        self._awaiting = None
                        if self._interrupt is None:
                            self._failed(event, sub.name, exc, sub.component)  # or re-raised
                            stats.error_count += 1
                        else:  # True: its correlation id was cancelled, no more handlers
                            cancelled = self._interrupted(event, sub, exc, stats)
                    else:  # (only an awaited handler can be interrupted: `result` is set)
                        if result is not None and self._interrupt is not None:
                            cancelled = self._interrupted(event, sub, None, stats)
                    stats.call_count += 1
                    end = perf()
                    stats.total_duration += end - begin
                    begin = end
                    if cancelled:
                        break
                if self.post:
                    for middleware in self.post:
                        await self._run_middleware(middleware, event)
                    begin = perf()
                monitor.processed += 1
                monitor.processing_time += begin - started
                if not own:  # emitted here: counted by emit
                    monitor.record(event)
            except Exception:  # never let one event stop the bus
                log.exception("dispatch of %s failed", event)
            except BaseException:  # cancelled (`stop`), or an exit: not acknowledged,
                ack = None  # so a persistent session gets it again
                raise
            finally:
                self._delivering = False
                if ack is not None and self._transport is not None:
                    self._transport.ack(ack)

    async def _run_pre(self, event: Event) -> bool:
        """Run the pre middleware on `event` (they may change its metadata; nobody
        after them); False when one dropped it or failed."""
        unseal_metadata(event)  # if sealed before the first was added
        for middleware in self.pre:
            if await self._run_middleware(middleware, event) is False:
                return False
        seal_metadata(event)
        return True

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

    async def _with_deadline(self, result: Any, timeout: float) -> None:
        """Await a handler's `result`, interrupted after `timeout` seconds."""
        self._call += 1
        call = self._call
        deadline = HandlerTimeout(f"handler still running after its timeout of {timeout} s")

        def expire() -> None:
            if self._call == call and self._awaiting is not None:
                self.interrupt(deadline)

        timer = asyncio.get_running_loop().call_later(timeout, expire)
        try:
            await result
        finally:
            timer.cancel()

    def interrupt(self, cause: BaseException) -> bool:
        """Cancel the handler being awaited now (see the module doc); False when none
        is, or when the handler itself asks (it cancels its own utterance: it and the
        other handlers of its event go on, the utterance's further events are dropped)."""
        task = self._task
        if self._awaiting is None or self._interrupt is not None or task is None:
            return False
        if asyncio.current_task() is task:
            self._exempt = self._awaiting  # also from the echo of its cancellation
            return False
        self._interrupt = cause
        task.cancel()
        return True

    def cancel_running(self, correlation_id: str, reason: str) -> bool:
        """Interrupt the running handler if its event has `correlation_id`."""
        event = self._awaiting
        if event is None or event.correlation_id != correlation_id or event is self._exempt:
            return False
        return self.interrupt(Cancelled(reason))

    def _interrupted(
        self, event: Event, sub: Subscription, exc: BaseException | None, stats: HandlerStats
    ) -> bool:
        """A handler ended after `interrupt` (raising `exc`, or returning): take the
        cancellation back and record what it was for. True when the event's correlation
        id was cancelled (skip its other handlers)."""
        cause, self._interrupt = self._interrupt, None
        task = self._task
        if task is not None and task.cancelling():
            task.uncancel()
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            self._failed(event, sub.name, exc, sub.component)  # it raised something else
            stats.error_count += 1
            return isinstance(cause, Cancelled)
        if exc is not None and self._own_cancellation():  # `stop` came too: obey it
            raise exc
        if isinstance(cause, Cancelled):
            self.cancelled_handlers += 1
            return True
        assert cause is not None
        self._failed(event, sub.name, cause, sub.component)
        stats.error_count += 1
        return False

    async def _run_middleware(self, middleware: Middleware, event: Event) -> Any:
        """What `middleware` returned; ``False`` when it raised (a failure)."""
        try:
            result = middleware(event)
            if isawaitable(result):
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
