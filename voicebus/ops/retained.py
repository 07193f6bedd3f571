"""Read retained messages from the bus's broker over a short-lived side connection.

The side connection has the bus's URL, credentials and TLS, its own client id, no
session and no status, so reading never disturbs the bus itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from ..config import BusConfig
from ..errors import BrokerTimeoutError
from ..transport import Message, Transport, open_transport

if TYPE_CHECKING:
    from ..bus import EventBus

SYNC_PREFIX = "voicebus/deadLetter/sync/"
"""Marker topics of `read_retained` (never retained, ignored by every bus)."""


@asynccontextmanager
async def side_connection(
    bus: EventBus, on_message: Callable[[Message], None], connect_timeout: float
) -> AsyncIterator[Transport]:
    """A short-lived connection of its own to the bus's broker (same credentials and
    TLS; no session, no status, no reconnect)."""
    settings = replace(
        bus.config,
        session_expiry=None,
        status=False,
        reconnect=False,
        connect_timeout=connect_timeout,
    )
    if bus.broker.scheme == "memory":
        settings = BusConfig()
    client_id = f"{bus.client_id}-admin-{uuid.uuid4().hex[:6]}"
    transport = open_transport(bus.broker, client_id=client_id, settings=settings)
    await transport.connect(on_message)
    try:
        yield transport
    finally:
        await transport.close()


async def read_retained(bus: EventBus, topic_filter: str, timeout: float = 5.0) -> dict[str, bytes]:
    """The retained messages matching `topic_filter` on the bus's broker: ``{topic: payload}``.

    Complete, not a guess after a quiet period: after subscribing, a marker message
    is published to a topic of our own; the broker delivers a client's messages in
    order, so every retained message has arrived when the marker does.
    """
    found: dict[str, bytes] = {}
    marker = f"{SYNC_PREFIX}{uuid.uuid4().hex}"
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_message(message: Message) -> None:
        if message.topic == marker:
            if not done.done():
                done.set_result(None)
        elif message.retain and message.payload:
            found[message.topic] = message.payload

    # The connect has its own timeout (connect_timeout: BrokerUnavailableError);
    # cancelling aiomqtt in the middle of its handshake leaves callbacks behind.
    async with side_connection(bus, on_message, timeout) as side:
        try:
            async with asyncio.timeout(timeout):
                await side.subscribe(topic_filter, 1)
                await side.subscribe(marker, 2)
                await side.publish(Message(marker, b"sync", 1, False))
                await done
        except TimeoutError:
            raise BrokerTimeoutError(
                f"reading retained {topic_filter} from {bus.redacted_url} took longer "
                f"than {timeout}s"
            ) from None
    return found
