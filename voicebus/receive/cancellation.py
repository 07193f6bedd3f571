"""Cancellation of one utterance (a correlation id) on every bus that hears of it.

`EventBus.cancel` publishes CANCELLED (``voicebus/cancelled``, the correlation id
in the envelope, ``reason`` in the payload) and applies it at once; every bus
that receives it (every bus subscribes to the topic) applies it too, idempotently:

- the handler running for an event with that correlation id is cancelled (it
  sees ``asyncio.CancelledError``; counted in ``handlers_cancelled``, no dead
  letter: see `dispatch`),
- queued events with it are skipped (acknowledged, not handled), and events
  with it that arrive within ``cancel_window`` seconds are dropped on arrival
  (both counted in ``events_cancelled``),
- `wait_for` / `request` waiting on it raise `RequestCancelled`, and so do the
  ones started on it within ``cancel_window`` (``waits_cancelled``).

The CANCELLED event itself is dispatched like any other (an arbiter or a trace may
subscribe to it). The cancelled ids are remembered for ``cancel_window`` seconds,
at most `MAX_IDS` of them and `MAX_BYTES` together (the oldest forgotten first),
however many and however long the ids peers send.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from ..errors import RequestCancelled
from ..wire.events import Event
from .dispatch import Dispatcher
from .waiters import Waiter, Waiters

MAX_IDS = 10_000
"""Cancelled correlation ids remembered at most."""
MAX_BYTES = 1024 * 1024
"""Characters of cancelled correlation ids remembered at most, together."""


class CancelledIds:
    """Correlation ids cancelled within the last `window` seconds (bounded)."""

    def __init__(self, window: float, max_ids: int = MAX_IDS, max_bytes: int = MAX_BYTES) -> None:
        self.window = window
        self.max_ids = max_ids
        self.max_bytes = max_bytes
        self.until: OrderedDict[str, float] = OrderedDict()
        """Cancelled id -> when its window ends (``time.monotonic()``), oldest first."""
        self._bytes = 0

    def __len__(self) -> int:
        return len(self.until)

    def add(self, correlation_id: str) -> None:
        """Remember `correlation_id` as cancelled for `window` seconds from now."""
        until = self.until
        if correlation_id in until:
            until.move_to_end(correlation_id)
        else:
            self._bytes += len(correlation_id)
        now = time.monotonic()
        while until and next(iter(until.values())) <= now:  # the oldest, whose window ended
            old, _ = until.popitem(last=False)
            self._bytes -= len(old)
        until[correlation_id] = now + self.window
        while until and (len(until) > self.max_ids or self._bytes > self.max_bytes):
            old, _ = until.popitem(last=False)
            self._bytes -= len(old)

    def __contains__(self, correlation_id: object) -> bool:
        until = self.until
        expires = until.get(correlation_id)  # type: ignore[call-overload]
        if expires is None:
            return False
        if expires > time.monotonic():
            return True
        self._forget_stale()
        return False

    def _forget_stale(self) -> None:
        until = self.until
        now = time.monotonic()
        # not strictly ordered by expiry (a re-cancel moves to the end with a later one)
        for key in [k for k, t in until.items() if t <= now]:
            del until[key]
            self._bytes -= len(key)


class Cancellations:
    """Applies cancellations to one bus's dispatcher and waiters; counts them."""

    def __init__(self, window: float, dispatcher: Dispatcher, waiters: Waiters) -> None:
        self.ids = CancelledIds(window)
        self._dispatcher = dispatcher
        self._waiters = waiters
        self.events_cancelled = 0
        """Events skipped in the queue or dropped on arrival for a cancelled id."""
        self.waits_cancelled = 0
        """`wait_for` / `request` calls ended with `RequestCancelled`."""
        self.received = 0
        """CANCELLED events received (the bus's own included)."""

    def apply(self, correlation_id: str, reason: str) -> None:
        """Cancel `correlation_id` here (idempotent)."""
        self.ids.add(correlation_id)
        self._dispatcher.cancel_running(correlation_id, reason)
        self.events_cancelled += self._dispatcher.drop_correlation(correlation_id)
        self.waits_cancelled += self._waiters.fail(
            correlation_id, lambda: RequestCancelled(correlation_id, reason)
        )

    def check_wait(self, waiter: Waiter) -> None:
        """A new wait on an id cancelled within the window fails at once."""
        cid = waiter.correlation_id
        if cid is not None and self.ids.until and cid in self.ids:
            waiter.future.set_exception(RequestCancelled(cid, "cancelled earlier"))
            self.waits_cancelled += 1

    def on_event(self, event: Event) -> None:
        """A CANCELLED event arrived: apply it when it names a correlation id."""
        self.received += 1
        if event.correlation_id:
            reason = event.data.get("reason")
            self.apply(event.correlation_id, reason if isinstance(reason, str) else "cancelled")

    def drops(self, event: Event) -> bool:
        """Drop `event` (arrived with a cancelled correlation id)? Counted if so."""
        if event.correlation_id in self.ids:
            self.events_cancelled += 1
            return True
        return False

    def stats(self) -> dict[str, int]:
        return {
            "cancellations_received": self.received,
            "handlers_cancelled": self._dispatcher.cancelled_handlers,
            "events_cancelled": self.events_cancelled,
            "waits_cancelled": self.waits_cancelled,
            "cancelled_ids": len(self.ids),
        }
