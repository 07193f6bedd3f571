"""Wake-word arbitration: when several sites hear one wake word, one answers.

In a multi-room setup every satellite within earshot reports
``wake_word_detected``, and without arbitration each starts its own utterance.
The arbiter (one per installation: ``voicebus arbiter``, or `Arbiter` in your
own service) collects the reports: the first opens a window of `window` seconds
(default 0.3); when it closes, the report with the highest ``likelihood`` (else
``confidence``; missing: 0; a tie goes to the earliest) wins, and the utterances
of the others are cancelled with `EventBus.cancel` (reason
``arbitration_lost``), so every service stops working for them.

Each site must give its wake word the correlation id of its utterance (a fresh
one per wake word, e.g. ``f"{site_id}-{uuid4()}"``); a report without one cannot
be cancelled and is only counted (`Decision.uncancellable`).

```python
arbiter = Arbiter(bus, window=0.3)   # subscribes; decisions in arbiter.decisions
```
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass, field

from .bus import EventBus
from .wire.events import Event, EventType

log = logging.getLogger("voicebus.arbiter")

REASON = "arbitration_lost"
"""The reason of the cancellations the arbiter publishes."""


def likelihood(event: Event) -> float:
    """How sure the site is: ``likelihood``, else ``confidence``, else 0."""
    for key in ("likelihood", "confidence"):
        value = event.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            return float(value)
    return 0.0


@dataclass
class Decision:
    """One closed window: the winning report and the cancelled ones."""

    winner: Event
    losers: list[Event] = field(default_factory=list)
    uncancellable: int = 0
    """Losing reports without a correlation id (nothing to cancel)."""


class Arbiter:
    """Picks one wake word per window; cancels the other sites' utterances.

    Args:
        bus: the bus to listen and cancel on (started when needed).
        window: seconds from the first report during which others compete.
        history: decisions kept in `decisions`.
    """

    def __init__(self, bus: EventBus, *, window: float = 0.3, history: int = 100) -> None:
        if not window > 0:
            raise ValueError(f"window must be a number of seconds > 0, got {window!r}")
        self.bus = bus
        self.window = window
        self.decisions: deque[Decision] = deque(maxlen=max(history, 1))
        self._round: list[Event] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscription = bus.subscribe(EventType.WAKE_WORD_DETECTED, self._report)

    def close(self) -> None:
        """Stop arbitrating (unsubscribe; a window already open is still decided)."""
        self.bus.unsubscribe(self._subscription)

    def _report(self, event: Event) -> None:
        """A site heard the wake word: join the open window, or open one."""
        if not self._round:
            asyncio.get_running_loop().call_later(self.window, self._close_window)
        self._round.append(event)

    def _close_window(self) -> None:
        reports, self._round = self._round, []
        if not reports:
            return
        winner = max(reports, key=likelihood)  # max keeps the first of equals
        decision = Decision(winner, [e for e in reports if e is not winner])
        self.decisions.append(decision)
        task = asyncio.create_task(self._cancel_losers(decision))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel_losers(self, decision: Decision) -> None:
        winner = decision.winner
        log.info(
            "wake word: %s wins (%.2f) over %d",
            winner.data.get("siteId"),
            likelihood(winner),
            len(decision.losers),
        )
        for loser in decision.losers:
            cid = loser.correlation_id
            if not cid or cid == winner.correlation_id:
                decision.uncancellable += 1
                continue
            await self.bus.cancel(cid, reason=REASON)

    async def settle(self) -> None:
        """Wait until the cancellations of closed windows are published."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
