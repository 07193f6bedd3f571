"""The topic filters an MQTT session holds, and the copies their overlap causes."""

from __future__ import annotations

from ...wire.cache import TopicCache
from ...wire.topics import matches
from ..base import Message

_COPIES_LIMIT = 4096
"""Messages whose further copies `SessionFilters` waits for before it starts over."""

CopyKey = tuple[int, int, int]
"""A received message as `is_copy` remembers it: topic length, payload length and
the hash of (topic, payload, correlation data, user properties); never the bytes."""


class SessionFilters:
    """The filters the transport keeps subscribed across reconnects.

    `ids` maps each filter to its subscription identifier (re-subscribed on every
    new connection); `dropped` holds filters unsubscribed while the link was down
    that a persistent session still has (unsubscribed on the next connection).

    When several of our filters match a topic, Mosquitto sends one copy of the
    message per matching subscription; `is_copy` recognises the 2nd.. copy by the
    subscription identifiers it carries, so the bus sees each message once.

    Its caches, whatever peers send: `_expected` (topic -> our matching
    subscription ids) is a `TopicCache` (topics over 1,024 characters not cached;
    worst case ~3 MiB with its values); `_copies` (a message whose other copies are
    still due -> their ids) keeps a fixed-size `CopyKey` per message, never the
    topic or payload, at most `_COPIES_LIMIT` of them: worst case ~2 MiB.
    """

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.dropped: set[str] = set()
        self._expected: TopicCache[frozenset[int]] = TopicCache()
        self._copies: dict[CopyKey, set[int]] = {}

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
            expected = self._expected.put(
                message.topic,
                frozenset(
                    sid
                    for flt, sid in self.ids.items()
                    if not flt.startswith("$share/") and matches(flt, message.topic)
                ),
            )
        if len(expected) < 2:
            return False
        topic, payload = message.topic, message.payload
        # A 64-bit keyed hash (the interpreter's, seeded per process) stands for the
        # message: two different messages of the same sizes colliding is a 2**-64 chance.
        key = (
            len(topic),
            len(payload),
            hash((topic, payload, message.correlation_data, message.user_properties)),
        )
        got = set(message.subscription_ids)
        pending = self._copies.get(key)
        if pending is not None and got and got <= pending:
            pending -= got
            if not pending:
                del self._copies[key]
            return True
        remaining = set(expected) - got
        if remaining:
            if len(self._copies) >= _COPIES_LIMIT:
                self._copies.clear()
            self._copies[key] = remaining
        return False
