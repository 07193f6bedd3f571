"""Every service's status, read from the retained ``voicebus/status/+`` topics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire.status import STATUS_PREFIX
from .retained import read_retained

if TYPE_CHECKING:
    from ..bus import EventBus


async def get_statuses(bus: EventBus, timeout: float = 5.0) -> dict[str, str]:
    """Every service's retained status on the bus's broker: ``{client_id: "online"}``."""
    found = await read_retained(bus, STATUS_PREFIX + "+", timeout=timeout)
    return {
        topic[len(STATUS_PREFIX) :]: payload.decode("utf-8", "replace")
        for topic, payload in found.items()
    }
