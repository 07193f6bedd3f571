"""The process-wide bus and the seed's convenience functions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any

from .bus import EventBus

if TYPE_CHECKING:
    from .receive.side import Target
    from .receive.subscriptions import EventFilter, Handler, Subscription
    from .wire.events import Event
    from .wire.models import Payload

def get_bus() -> EventBus:
    """The singleton bus, made from ``$VOICEBUS_URL`` on first use (not started):
    `EventBus.shared`. A stopped singleton is discarded (`EventBus.stop`)."""
    return EventBus.shared()


async def emit_event(
    event_type: Enum | str,
    data: Mapping[str, Any] | Payload | None = None,
    source: str | None = None,
    correlation_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Event:
    """`EventBus.emit` on the singleton (started on first use)."""
    bus = get_bus()
    await bus.start()
    return await bus.emit(event_type, data, source, correlation_id, metadata)


def subscribe_to_events(
    event_type: Target,
    handler: Handler,
    priority: int = 0,
    filter_func: EventFilter | None = None,
) -> Subscription:
    """`EventBus.subscribe` on the singleton (started in the background when a loop runs)."""
    bus = get_bus()
    sub = bus.subscribe(event_type, handler, priority, filter_func)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return sub
    if not bus.is_running:
        task = loop.create_task(bus.start())
        task.add_done_callback(_log_start_failure)
    return sub


def _log_start_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger("voicebus").error(
            "the bus could not start for subscribe_to_events: %s", task.exception()
        )
