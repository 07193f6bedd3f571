"""Local subscriptions: which handlers run for a topic, in which order.

One transport subscription per distinct filter (reference counted here; over
MQTT 5 the transport sends the broker only a covering set of them:
`transport/mqtt/session_filters.py`); dispatch is local, so overlapping filters
still give each subscription every event once.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..wire.cache import TopicCache
from ..wire.events import Event
from ..wire.topics import check_filter, matches
from .monitor import HandlerStats

Handler = Callable[[Event], Awaitable[Any] | Any]
EventFilter = Callable[[Event], bool]


def handler_name(handler: object) -> str:
    """A readable name for a handler (``Class.method`` or function name)."""
    name = getattr(handler, "__qualname__", None) or getattr(handler, "__name__", None)
    return str(name) if name else repr(handler)


@dataclass(eq=False)
class Subscription:
    """A handle returned by `EventBus.subscribe`; pass it to `unsubscribe`."""

    topic_filter: str
    handler: Handler
    priority: int = 0
    filter_func: EventFilter | None = None
    once: bool = False
    event_type: Enum | None = None
    group: str | None = None
    component: str = "bus"
    timeout: float | None = None
    """Seconds the handler may run per event before it is cancelled (None: no limit)."""
    seq: int = 0
    active: bool = True
    name: str = field(default="")
    stats: HandlerStats | None = field(default=None, repr=False)

    plain: bool = field(default=False, repr=False)
    """Active, with no group, ``filter_func`` or ``once``: dispatch checks nothing
    else (kept by the registry: `SubscriptionRegistry.add` and `remove`)."""

    def __post_init__(self) -> None:
        if not self.name:
            self.name = handler_name(self.handler)

    @property
    def broker_filter(self) -> str:
        """The filter subscribed on the broker (``$share/<group>/...`` for a group)."""
        if self.group:
            return f"$share/{self.group}/{self.topic_filter}"
        return self.topic_filter


@dataclass
class FilterRef:
    """A broker subscription shared by every local user of one filter."""

    subscription_id: int
    users: int = 0


class SubscriptionRegistry:
    """The bus's subscriptions, ordered for dispatch, and its broker filters."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self.by_topic: TopicCache[list[Subscription]] = TopicCache()
        """Topic -> matching subscriptions (`matching` fills it; dispatch reads it
        first); worst case ~2 MiB (`TopicCache`) plus a list of the subscriptions per
        entry."""
        self.filters: dict[str, FilterRef] = {}

    def __len__(self) -> int:
        return len(self._subs)

    def add(self, sub: Subscription) -> bool:
        """Add `sub`; True when its broker filter is new (needs SUBSCRIBE)."""
        check_filter(sub.topic_filter)
        sub.seq = next(self._seq)
        sub.plain = sub.active and sub.group is None and sub.filter_func is None and not sub.once
        self._subs.append(sub)
        self.by_topic.clear()
        return self.acquire(sub.broker_filter)

    def remove(self, sub: Subscription) -> bool:
        """Remove `sub`; True when its broker filter has no users left (UNSUBSCRIBE)."""
        if not sub.active:
            return False
        sub.active = sub.plain = False
        self._subs.remove(sub)
        self.by_topic.clear()
        return self.release(sub.broker_filter)

    def find(self, handler: object) -> list[Subscription]:
        """Subscriptions made for `handler` (or the handle itself)."""
        if isinstance(handler, Subscription):
            return [handler] if handler.active else []
        return [s for s in self._subs if s.handler == handler]

    def acquire(self, broker_filter: str) -> bool:
        ref = self.filters.get(broker_filter)
        if ref is None:
            ref = self.filters[broker_filter] = FilterRef(next(self._ids))
        ref.users += 1
        return ref.users == 1

    def release(self, broker_filter: str) -> bool:
        ref = self.filters.get(broker_filter)
        if ref is None:
            return False
        ref.users -= 1
        if ref.users <= 0:
            del self.filters[broker_filter]
            return True
        return False

    def matching(self, topic: str) -> list[Subscription]:
        """Subscriptions whose filter matches `topic`: highest priority first, then
        subscription order."""
        found = self.by_topic.get(topic)
        if found is None:
            found = self.by_topic.put(
                topic,
                sorted(
                    (s for s in self._subs if matches(s.topic_filter, topic)),
                    key=lambda s: (-s.priority, s.seq),
                ),
            )
        return found

    def subscription_id(self, broker_filter: str) -> int | None:
        ref = self.filters.get(broker_filter)
        return ref.subscription_id if ref else None
