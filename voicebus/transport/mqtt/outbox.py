"""The outbox: what the MQTT transport has taken but the broker has not (yet) kept."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from ...errors import BackpressureError
from ..base import Message

log = logging.getLogger("voicebus.mqtt")

REQUEUED = -1
"""PUBACK future result of a message put back into the outbox when the link dropped."""


class Outbox:
    """Messages between `publish` and the broker, kept across link losses.

    - `queued`: messages waiting for the link, sent in order after a reconnect;
      at most `size` (`put` raises `BackpressureError`: nothing is dropped silently).
    - `inflight`: QoS 1 messages sent on the current link, by packet id, each with
      the future its PUBACK completes (with the reason code).
    - recently acknowledged: with a `resend_window` (seconds, 0 = off), QoS 1
      messages the broker acknowledged that recently, sent again after a link loss
      (a broker killed with SIGKILL loses what it acknowledged after its last save).

    When the link drops, `release` wakes every PUBACK waiter with `REQUEUED` and
    `requeue` puts the recently acknowledged and the released messages back at the
    head of `queued`. When the transport closes, `fail` fails the waiters instead
    and `drop` empties the rest. The per-message hot paths use `queued` and
    `inflight` directly; the methods cover the rest.
    """

    def __init__(self, url: str, size: int, resend_window: float) -> None:
        self.url = url
        self.size = size
        self.resend_window = resend_window
        self.queued: deque[Message] = deque()
        self.inflight: dict[int, tuple[Message, asyncio.Future[int]]] = {}
        self._recent: deque[tuple[float, Message]] = deque()

    def __len__(self) -> int:
        """Messages waiting for the link (not counting those in flight)."""
        return len(self.queued)

    def put(self, message: Message) -> None:
        """Queue `message` until the link is back."""
        if len(self.queued) >= self.size:
            raise BackpressureError(
                f"the outbox for {self.url} is full ({self.size} messages "
                "waiting for the broker to come back); slow down or raise outbox_size"
            )
        self.queued.append(message)

    def forget(self, mid: int, fut: asyncio.Future[int]) -> None:
        """Remove in-flight packet `mid` if it still belongs to `fut`."""
        entry = self.inflight.get(mid)
        if entry is not None and entry[1] is fut:
            del self.inflight[mid]

    def acknowledged(self, message: Message) -> None:
        """Keep an acknowledged message for `resend_window` seconds."""
        recent = self._recent
        now = asyncio.get_running_loop().time()
        recent.append((now, message))
        horizon = now - self.resend_window
        while recent and (recent[0][0] < horizon or len(recent) > self.size):
            recent.popleft()

    def release(self) -> list[Message]:
        """The link dropped: wake every PUBACK waiter with `REQUEUED`; the messages
        still waiting for their PUBACK (one answered in the same read as the loss is
        not sent twice)."""
        inflight = list(self.inflight.values())
        self.inflight.clear()
        unacknowledged = []
        for message, pending in inflight:
            if not pending.done():  # done: the broker answered (its callback still due)
                pending.set_result(REQUEUED)
                unacknowledged.append(message)
        return unacknowledged

    def requeue(self, unacknowledged: list[Message]) -> None:
        """Put the recently acknowledged messages, then `unacknowledged`, back at the
        head of the queue (in that order)."""
        again = self._recently_acknowledged() + unacknowledged
        self.queued.extendleft(reversed(again))

    def _recently_acknowledged(self) -> list[Message]:
        """Messages acknowledged within `resend_window` before now (and forget them)."""
        if not self._recent:
            return []
        horizon = asyncio.get_running_loop().time() - self.resend_window
        again = [message for at, message in self._recent if at >= horizon and message.qos]
        self._recent.clear()
        if again:
            log.info("sending %d recently acknowledged message(s) again", len(again))
        return again

    def fail(self, error: Callable[[Message], Exception]) -> int:
        """The link is closing: fail every PUBACK waiter with `error(message)`; how
        many were still waiting."""
        inflight = list(self.inflight.values())
        self.inflight.clear()
        failed = 0
        for message, pending in inflight:
            if not pending.done():
                pending.set_exception(error(message))
                pending.exception()  # one sent from the outbox has no waiter: no "never retrieved"
                failed += 1
        return failed

    def drop(self) -> int:
        """Empty the queue and forget the recently acknowledged (the transport
        closes); how many messages were queued."""
        count = len(self.queued)
        self.queued.clear()
        self._recent.clear()
        return count
