"""Every service's status, read from the retained ``voicebus/status/+`` topics; the
offline ones cleared on request (`prune_offline`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire.status import ONLINE, STATUS_PREFIX
from .retained import clear_retained, read_retained

if TYPE_CHECKING:
    from ..bus import EventBus


async def get_statuses(bus: EventBus, timeout: float = 5.0) -> dict[str, str]:
    """Every service's retained status on the bus's broker: ``{client_id: "online"}``."""
    found = await read_retained(bus, STATUS_PREFIX + "+", timeout=timeout)
    return {
        topic[len(STATUS_PREFIX) :]: payload.decode("utf-8", "replace")
        for topic, payload in found.items()
    }


async def prune_offline(bus: EventBus, timeout: float = 5.0) -> list[str]:
    """Clear every retained ``offline`` status (services that are gone); their client ids."""
    statuses = await get_statuses(bus, timeout)
    gone = [cid for cid, status in statuses.items() if status != ONLINE.decode()]
    await clear_retained(bus, (STATUS_PREFIX + cid for cid in gone), timeout)
    return gone
