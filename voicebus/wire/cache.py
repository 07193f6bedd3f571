"""`TopicCache`: a per-topic cache whose worst case is small, whatever peers send.

Topics come from peers (up to 65,535 bytes each, as many distinct ones as they
like), so a cache keyed by topic is bounded in entries *and* characters, and a
topic longer than `MAX_CACHED_TOPIC` characters is never cached (it is matched
anew each time it comes, which costs a little time, never memory).
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["MAX_CACHED_TOPIC", "TopicCache"]

MAX_CACHED_TOPIC = 1024
"""Longest topic, in characters, any cache keeps; longer ones are not cached."""

V = TypeVar("V")


class TopicCache(dict[str, V]):
    """A dict from topic to a value computed from it, emptied when it is full.

    Look up with the plain dict operations (the hot path stays C); add with `put`.
    Holds at most `max_entries` topics of at most `MAX_CACHED_TOPIC` characters
    and at most `max_chars` characters of topics together. Worst case with the
    defaults: 256 Ki characters of keys (1 MiB even if every character takes 4
    bytes) plus 4,096 entries' overhead (~0.5 MiB), plus the values.
    """

    __slots__ = ("_chars", "max_chars", "max_entries")

    def __init__(self, max_entries: int = 4096, max_chars: int = 256 * 1024) -> None:
        super().__init__()
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._chars = 0

    def put(self, topic: str, value: V) -> V:
        """Remember `value` for `topic` (unless the topic is too long); return `value`."""
        size = len(topic)
        if size > MAX_CACHED_TOPIC:
            return value
        if topic in self:
            self[topic] = value
            return value
        if len(self) >= self.max_entries or self._chars + size > self.max_chars:
            self.clear()
        self[topic] = value
        self._chars += size
        return value

    def clear(self) -> None:
        super().clear()
        self._chars = 0
