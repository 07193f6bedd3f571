"""The topic filters an MQTT session holds, and the copies their overlap causes."""

from __future__ import annotations

from typing import Any

from ...wire.topics import matches
from ..base import Message

_CACHE_LIMIT = 10_000
"""Entries kept in each cache of `SessionFilters` before it starts over."""


class SessionFilters:
    """The filters the transport keeps subscribed across reconnects.

    `ids` maps each filter to its subscription identifier (re-subscribed on every
    new connection); `dropped` holds filters unsubscribed while the link was down
    that a persistent session still has (unsubscribed on the next connection).

    When several of our filters match a topic, Mosquitto sends one copy of the
    message per matching subscription; `is_copy` recognises the 2nd.. copy by the
    subscription identifiers it carries, so the bus sees each message once.
    """

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.dropped: set[str] = set()
        self._expected: dict[str, frozenset[int]] = {}
        self._copies: dict[tuple[Any, ...], set[int]] = {}

    def add(self, topic_filter: str, subscription_id: int) -> None:
        self.ids[topic_filter] = subscription_id
        self.dropped.discard(topic_filter)
        self._expected.clear()

    def remove(self, topic_filter: str) -> None:
        self.ids.pop(topic_filter, None)
        self._expected.clear()
        self._copies.clear()

    def is_copy(self, message: Message) -> bool:
        """True for the 2nd.. copy Mosquitto sends when several of our filters match."""
        expected = self._expected.get(message.topic)
        if expected is None:
            expected = frozenset(
                sid
                for flt, sid in self.ids.items()
                if not flt.startswith("$share/") and matches(flt, message.topic)
            )
            if len(self._expected) > _CACHE_LIMIT:
                self._expected.clear()
            self._expected[message.topic] = expected
        if len(expected) < 2:
            return False
        key = (message.topic, message.payload, message.correlation_data, message.user_properties)
        got = set(message.subscription_ids)
        pending = self._copies.get(key)
        if pending is not None and got and got <= pending:
            pending -= got
            if not pending:
                del self._copies[key]
            return True
        remaining = set(expected) - got
        if remaining:
            if len(self._copies) > _CACHE_LIMIT:
                self._copies.clear()
            self._copies[key] = remaining
        return False
