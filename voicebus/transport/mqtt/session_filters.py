"""The topic filters an MQTT session holds: the bus's filters, the covering set of
them the broker is subscribed to, and the copies an overlap still causes."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...wire.cache import TopicCache
from ...wire.topics import covers, matches
from ..base import Message

_COPIES_LIMIT = 4096
"""Messages whose further copies `SessionFilters` waits for before it starts over."""

CopyKey = tuple[int, int, int]
"""A received message as `is_copy` remembers it: topic length, payload length and
the hash of (topic, payload, correlation data, user properties); never the bytes."""

SHARE = "$share/"


def plain(topic_filter: str) -> bool:
    """Not a shared (group) subscription: it may cover, or be covered by, another."""
    return not topic_filter.startswith(SHARE)


@dataclass
class Change:
    """What the broker must be told to bring its subscriptions in step: SUBSCRIBE
    `subscribe` (filter -> QoS) first, then UNSUBSCRIBE `unsubscribe` (so nothing
    is lost in between); `fetch`: a covered filter just added, subscribed and at
    once unsubscribed again only for the retained messages a new subscription gets."""

    subscribe: dict[str, int] = field(default_factory=dict)
    unsubscribe: list[str] = field(default_factory=list)
    fetch: str | None = None
    fresh: str | None = None
    """The filter just added, when it goes on the wire: its retained messages come."""


class SessionFilters:
    """The filters the transport keeps subscribed across reconnects.

    `ids` maps each filter the bus asked for to its subscription identifier (and
    `qos` to its QoS). The broker is subscribed only to `wire`, the **covering
    set** of them: a plain filter that another plain filter of ours covers
    (`wire.topics.covers`: ``a/+`` by ``a/#``) is not sent, so however many of our
    filters match a topic, a message usually arrives once, and the bus matches its
    filters locally. A wire filter's QoS is the highest of those it covers. Shared
    (``$share/<group>/...``) filters are always sent and never cover or are covered:
    the broker hands a group's copy to one member, so no plain filter stands in for
    it, nor it for one. Every filter is subscribed with the same options (no-local
    and retain-as-published off), so a cover delivers all a covered one would.

    `dropped` holds filters a persistent session still has on the broker that are
    no longer wanted on the wire (unsubscribed on the next connection).

    When wire filters overlap without one covering the other (``a/+/c`` and
    ``a/b/+``), Mosquitto sends one copy of the message per matching subscription;
    `is_copy` recognises the 2nd.. copy by the subscription identifiers it carries.

    Its caches, whatever peers send: `_expected` (topic -> our matching
    subscription ids) is a `TopicCache` (topics over 1,024 characters not cached;
    worst case ~3 MiB with its values); `_copies` (a message whose other copies are
    still due -> their ids) keeps a fixed-size `CopyKey` per message, never the
    topic or payload, at most `_COPIES_LIMIT` of them: worst case ~2 MiB.
    """

    def __init__(self, *, covering: bool = True) -> None:
        self._covering = covering
        """False over MQTT 3.1.1 (every filter is sent: no retain handling to keep a
        filter put back on the wire from replaying retained messages; Mosquitto sends
        a 3.1.1 client one copy per message anyway)."""
        self.ids: dict[str, int] = {}
        self.qos: dict[str, int] = {}
        self.wire: dict[str, int] = {}
        """Filter -> QoS of what the broker is (or, on the next link, will be) subscribed to."""
        self.dropped: set[str] = set()
        self.fetches: set[str] = set()
        """Covered filters added while the link was down: their retained messages are
        fetched on the next link (`Change.fetch`)."""
        self._transient: dict[str, int] = {}
        """Filters on the broker for a moment only (being fetched, or unsubscribed
        after what replaces them was subscribed) -> their subscription ids."""
        self._expected: TopicCache[frozenset[int]] = TopicCache()
        self._copies: dict[CopyKey, set[int]] = {}

    def cover_of(self, topic_filter: str) -> str | None:
        """The wire filter that covers `topic_filter` (None: none does)."""
        if not self._covering or not plain(topic_filter):
            return None
        for wired in self.wire:
            if plain(wired) and covers(wired, topic_filter):
                return wired
        return None

    def add(self, topic_filter: str, subscription_id: int, qos: int = 1) -> Change:
        """Want `topic_filter`; what the broker must be told."""
        self.ids[topic_filter] = subscription_id
        self.qos[topic_filter] = max(qos, self.qos.get(topic_filter, 0))
        self.dropped.discard(topic_filter)
        self._expected.clear()
        change = Change()
        cover = self.cover_of(topic_filter)
        if cover is not None:
            if self.wire[cover] < qos:  # the cover takes the highest QoS it covers
                self.wire[cover] = change.subscribe[cover] = qos
            change.fetch = topic_filter
            return change
        level = self.qos[topic_filter]
        change.fresh = topic_filter
        if self._covering and plain(topic_filter):
            for wired in list(self.wire):
                if plain(wired) and covers(topic_filter, wired):
                    level = max(level, self.wire.pop(wired))
                    change.unsubscribe.append(wired)
                    self._transient[wired] = self.ids[wired]
        self.wire[topic_filter] = change.subscribe[topic_filter] = level
        return change

    def remove(self, topic_filter: str) -> Change:
        """No longer want `topic_filter`; what the broker must be told: the filters it
        covered that no other filter of ours covers are subscribed again first."""
        sid = self.ids.pop(topic_filter, None)
        self.qos.pop(topic_filter, None)
        self._expected.clear()
        self._copies.clear()
        change = Change()
        if self.wire.pop(topic_filter, None) is None:
            return change  # covered: the broker never had it
        if sid is not None:
            self._transient[topic_filter] = sid
        if self._covering and plain(topic_filter):
            wanted = [f for f in self.ids if plain(f)]
            for covered in wanted:
                if covered in self.wire or not covers(topic_filter, covered):
                    continue
                if any(covers(other, covered) for other in wanted if other != covered):
                    continue
                level = max(self.qos[f] for f in wanted if f == covered or covers(covered, f))
                self.wire[covered] = change.subscribe[covered] = level
            for covered in wanted:  # still covered by another: at its QoS by one of them
                if covered in self.wire or not covers(topic_filter, covered):
                    continue
                others = [w for w in self.wire if plain(w) and covers(w, covered)]
                if others and max(self.wire[w] for w in others) < self.qos[covered]:
                    self.wire[others[0]] = change.subscribe[others[0]] = self.qos[covered]
        change.unsubscribe.append(topic_filter)
        return change

    def transient(self, topic_filter: str, subscription_id: int) -> None:
        """`topic_filter` is on the broker for a moment (`Change.fetch`, or until its
        UNSUBSCRIBE is acknowledged): `is_copy` expects its copies too."""
        self._transient[topic_filter] = subscription_id
        self._expected.clear()

    def gone(self, topic_filter: str) -> None:
        """The broker no longer has `topic_filter` unless it is on the wire."""
        if self._transient.pop(topic_filter, None) is not None:
            self._expected.clear()
            self._copies.clear()

    def _on_broker(self, topic: str) -> frozenset[int]:
        """The subscription ids of our plain filters on the broker that match `topic`."""
        ids = self.ids
        found = {ids[f] for f in self.wire if f in ids and plain(f) and matches(f, topic)}
        found.update(sid for f, sid in self._transient.items() if plain(f) and matches(f, topic))
        return frozenset(found)

    def is_copy(self, message: Message) -> bool:
        """True for the 2nd.. copy Mosquitto sends when several of our filters match."""
        expected = self._expected.get(message.topic)
        if expected is None:
            expected = self._expected.put(message.topic, self._on_broker(message.topic))
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
