"""The receiving half of a bus, wired in one place.

``transport -> inbound (decode, de-dup) -> waiters -> dispatcher -> handlers``,
plus what keeps the broker's subscriptions in step with the local ones
(`SubscriptionRegistry`, `BrokerFilters`) and the cancelled correlation ids.
`EventBus` owns one `ReceiveSide` and delegates to it; nothing here opens a
connection.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from enum import Enum
from typing import Any

from ..wire.events import Event, EventType, event_type_named
from ..wire.routes import RouteTable
from ..wire.topics import check_filter
from .broker_sync import BrokerFilters
from .cancellation import Cancellations
from .dispatch import Dispatcher, FailureReport
from .inbound import Inbound, InboundFailure
from .monitor import Monitor
from .subscriptions import EventFilter, Subscription, SubscriptionRegistry
from .waiters import Waiter, Waiters

Target = Enum | str
"""What `subscribe` and `wait_for` accept: an event type or an MQTT topic filter."""


class ReceiveSide:
    """Local subscriptions, broker subscription sync, waits, dispatch, cancellations."""

    def __init__(
        self,
        routes: RouteTable,
        monitor: Monitor,
        *,
        max_queue_size: int,
        max_payload: int,
        cancel_window: float,
        new_id: Callable[[], str],
        handler_failed: FailureReport,
        inbound_failed: InboundFailure,
    ) -> None:
        self.routes = routes
        self.subs = SubscriptionRegistry()
        self.filters = BrokerFilters(self.subs)
        self.waiters = Waiters()
        self.dispatcher = Dispatcher(
            self.subs, monitor, handler_failed, self.remove, max_queue_size=max(1, max_queue_size)
        )
        self.inbound = Inbound(
            routes, max_payload, new_id, self.dispatcher, self.waiters, monitor, inbound_failed
        )
        self.cancels = Cancellations(cancel_window, self.dispatcher, self.waiters)
        self.inbound.cancellations = self.cancels
        self.subs.acquire(routes.get(EventType.CANCELLED).filter)  # every bus hears it

    def target(self, target: Target) -> tuple[str, Enum | None]:
        """The MQTT filter (and event type, if any) of a `subscribe`/`wait_for` target."""
        if isinstance(target, Enum):
            return self.routes.get(target).filter, target
        if not isinstance(target, str):
            raise TypeError(f"expected an EventType or an MQTT topic filter, got {target!r}")
        if "/" not in target and target not in ("#", "+", "*"):
            event_type = event_type_named(target)
            return self.routes.get(event_type).filter, event_type
        return check_filter("#" if target == "*" else target), None

    def add(self, sub: Subscription) -> None:
        """Register `sub`; its broker filter is subscribed when it is the first one."""
        if self.subs.add(sub):
            self.filters.subscribe(sub.broker_filter)
        if sub.group:
            self.dispatcher.group_sids.add(self.subs.filters[sub.broker_filter].subscription_id)

    def remove(self, sub: Subscription) -> None:
        """Forget `sub`; its broker filter is unsubscribed when it was the last one."""
        sid = self.subs.subscription_id(sub.broker_filter)
        if self.subs.remove(sub):
            self.dispatcher.group_sids.discard(sid or 0)
            self.filters.unsubscribe(sub.broker_filter)

    def register_wait(
        self, target: Target, correlation_id: str | None, filter_func: EventFilter | None
    ) -> Waiter:
        """A pending wait, resolved by the next matching event (registered at once)."""
        topic_filter, _ = self.target(target)
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        waiter = Waiter(topic_filter, future, correlation_id, filter_func)
        self.cancels.check_wait(waiter)  # on an id cancelled within cancel_window
        self.waiters.add(waiter)
        if self.subs.acquire(topic_filter):
            self.filters.subscribe(topic_filter)
        return waiter

    def end_wait(self, waiter: Waiter) -> None:
        """Remove `waiter` (idempotent); its filter lingers a while for the next wait."""
        if waiter.ended:
            return
        waiter.ended = True
        self.waiters.discard(waiter)
        try:
            self.filters.linger(waiter.topic_filter)
        except RuntimeError:  # finalized with no event loop running: nothing to send
            pass

    def wait(
        self, waiter: Waiter, timeout: float | None, first: Callable[[], Awaitable[object]]
    ) -> Coroutine[Any, Any, Event | None]:
        """A coroutine that runs `first` (start, settle, or emit the request), then
        returns `waiter`'s event, or ``None`` after `timeout` seconds.

        The wait ends when the coroutine finishes, however it finishes, and also
        when it is dropped or cancelled before its first step (which would never
        run its ``finally``).
        """
        waiting = self._wait(waiter, timeout, first)
        weakref.finalize(waiting, self.end_wait, waiter)
        return waiting

    async def _wait(
        self, waiter: Waiter, timeout: float | None, first: Callable[[], Awaitable[object]]
    ) -> Event | None:
        try:
            await first()  # what it raises goes to the caller as it is
            if timeout is None:
                return await waiter.future
            # Not `asyncio.wait_for`: its extra task hop is round-trip time.
            timer = asyncio.get_running_loop().call_later(timeout, _time_out, waiter.future)
            try:
                return await waiter.future
            except TimeoutError:
                return None
            finally:
                timer.cancel()
        finally:
            self.end_wait(waiter)

    def stats(self) -> dict[str, Any]:
        """The receive side's part of `EventBus.get_stats`."""
        return {
            "subscriptions": len(self.subs),
            "broker_filters": sorted(self.subs.filters),
            "queue_size": len(self.dispatcher),
            "max_queue_size": self.dispatcher.max_queue_size,
            "pending_waits": len(self.waiters),
        }


def _time_out(future: asyncio.Future[Event]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
