"""Small test helpers: a recording handler, a wait for a condition, and a marker
for "nothing more arrived". Tests wait for conditions, never for a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from voicebus import Event, EventBus, EventType

T = TypeVar("T")

MARKER = EventType.SYSTEM_STOPPED
"""The event type `marker` emits by default (no test uses it otherwise)."""


class Collector:
    """A named handler that records the events it gets; a test can wait for a count.

    `log`, a list shared by several collectors, gets the collector's name on each
    call: the order in which the handlers ran.
    """

    def __init__(self, name: str = "collector", log: list[str] | None = None) -> None:
        self.__name__ = self.__qualname__ = name
        self.events: list[Event] = []
        self.log = log if log is not None else []
        self._changed = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.log.append(self.__name__)
        self._changed.set()

    async def wait(self, count: int, timeout: float = 5.0) -> list[Event]:
        """The events so far, once there are at least `count` of them."""

        async def until() -> None:
            while len(self.events) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.__name__} got {len(self.events)} event(s) in {timeout} s, "
                f"expected {count}: {self.events}"
            ) from None
        return self.events


async def eventually(
    predicate: Callable[[], T | Awaitable[T]], timeout: float = 5.0, interval: float = 0.005
) -> T:
    """The first true value of `predicate()` (sync or async), polled every `interval`
    seconds; `AssertionError` after `timeout` seconds. An exception raised by
    `predicate` (an assertion on the way there) ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            name = getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"{name} was not true within {timeout} s (last: {result!r})")
        await asyncio.sleep(interval)


async def marker(
    sender: EventBus,
    *receivers: EventBus,
    event_type: EventType = MARKER,
    timeout: float = 10.0,
) -> Event:
    """Emit a marker event from `sender`; return it once every receiver (default:
    `sender` itself) has handled it. For "nothing more arrived" checks.

    The broker delivers one client's messages in the order it took them (and takes
    a QoS 1 message before acknowledging it), and a bus handles what it receives
    one event at a time, in order. So once the marker is handled, so is everything
    `sender` published before it and everything the broker had queued for the
    receivers (a duplicate, a redelivery, an event that must not come): what has
    not arrived by then does not come. The marker (``{"marker": <token>}``) goes to a
    lowest-priority handler named ``marker``, removed afterwards; the receivers'
    own handlers of `event_type` (or of ``#``) see it too.
    """
    token = uuid.uuid4().hex
    waits = []
    for receiver in receivers or (sender,):
        got = Collector("marker")
        sub = receiver.subscribe(
            event_type, got, priority=-(10**9), filter_func=lambda e: e.data.get("marker") == token
        )
        waits.append((receiver, sub, got))
    try:
        for receiver, _, _ in waits:
            await receiver.ready()
        sent = await sender.emit(event_type, {"marker": token})
        for _, _, got in waits:
            await got.wait(1, timeout)
    finally:
        for receiver, sub, _ in waits:
            receiver.unsubscribe(sub)
    return sent
