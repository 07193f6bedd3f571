"""Pending `wait_for` calls, resolved as messages arrive (before dispatch)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from ..wire.events import Event
from ..wire.topics import matches
from .subscriptions import EventFilter


@dataclass(eq=False)
class Waiter:
    """One pending `wait_for`: the filter, correlation id and predicate to satisfy."""

    topic_filter: str
    future: asyncio.Future[Event]
    correlation_id: str | None = None
    predicate: EventFilter | None = None
    ended: bool = False

    def accepts(self, event: Event) -> bool:
        if self.correlation_id is not None and event.correlation_id != self.correlation_id:
            return False
        if not matches(self.topic_filter, event.topic):
            return False
        return self.predicate is None or bool(self.predicate(event))


class Waiters:
    """The set of pending waiters of one bus."""

    def __init__(self) -> None:
        self.pending: list[Waiter] = []
        """The waiters, oldest first (empty: nothing to resolve, checked per event)."""

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, waiter: Waiter) -> None:
        self.pending.append(waiter)

    def discard(self, waiter: Waiter) -> None:
        if waiter in self.pending:
            self.pending.remove(waiter)

    def fail(self, correlation_id: str, error: Callable[[], BaseException]) -> int:
        """Fail every pending waiter on `correlation_id` with `error()`; how many."""
        failed = 0
        for waiter in self.pending:
            if waiter.correlation_id == correlation_id and not waiter.future.done():
                waiter.future.set_exception(error())
                failed += 1
        return failed

    def resolve(self, event: Event) -> None:
        """Complete every waiter that `event` satisfies (each waiter at most once)."""
        for waiter in self.pending:
            if waiter.future.done():
                continue
            try:
                accepted = waiter.accepts(event)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # a failing predicate fails its own wait only,
                waiter.future.set_exception(exc)  # CancelledError and GeneratorExit too
                continue
            if accepted:
                waiter.future.set_result(event)
