"""Small test helpers."""

from __future__ import annotations

import asyncio

from voicebus import Event


class Collector:
    """A handler that records events and lets a test wait for a count."""

    def __init__(self, name: str = "collector") -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self.__name__ = self.__qualname__ = name

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait(self, count: int, timeout: float = 5.0) -> list[Event]:
        async def until() -> None:
            while len(self.events) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)
        return self.events

    async def settle(self, delay: float = 0.2) -> list[Event]:
        """Wait a little and return what arrived (for 'nothing more arrives')."""
        await asyncio.sleep(delay)
        return self.events
