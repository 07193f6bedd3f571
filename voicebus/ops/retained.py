"""Read retained messages from the bus's broker over a short-lived side connection.

The side connection has the bus's URL, credentials and TLS, its own client id, no
session and no status, so reading never disturbs the bus itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from ..config import BusConfig
from ..errors import BrokerTimeoutError
from ..transport import Message, Transport, open_transport
from ..wire.status import STATUS_PREFIX, status_topic

if TYPE_CHECKING:
    from ..bus import EventBus

SYNC_PREFIX = "$voicebus/sync/"
"""Marker topics of `scan_retained` and `clear_retained`: ``$voicebus/sync/<side client
id>/<random>``, never retained. A topic that starts with ``$`` matches no filter that
starts with a wildcard (MQTT 5, 4.7.2), so no flow on ``#`` or ``voicebus/#`` (Node-RED,
Home Assistant, ``voicebus listen``, a bus) sees them: only the side connection that
subscribes to its own marker. An ACL must allow it (mosquitto/acl:
``pattern readwrite $voicebus/sync/%c/#``)."""


def side_client_id(bus: EventBus) -> str:
    """A fresh client id for a side connection of `bus`."""
    return f"{bus.client_id}-admin-{uuid.uuid4().hex[:6]}"


def marker_topic(client_id: str) -> str:
    """A fresh marker topic of the side connection `client_id`."""
    level = status_topic(client_id)[len(STATUS_PREFIX) :]  # one topic level
    return f"{SYNC_PREFIX}{level}/{uuid.uuid4().hex}"


@asynccontextmanager
async def side_connection(
    bus: EventBus,
    on_message: Callable[[Message], None],
    connect_timeout: float,
    client_id: str | None = None,
) -> AsyncIterator[Transport]:
    """A short-lived connection of its own to the bus's broker (same credentials and
    TLS; no session, no status, no reconnect), as `client_id` (default: a fresh one)."""
    settings = replace(
        bus.config,
        session_expiry=None,
        status=False,
        reconnect=False,
        connect_timeout=connect_timeout,
    )
    if bus.broker.scheme == "memory":
        settings = BusConfig()
    client_id = client_id or side_client_id(bus)
    transport = open_transport(bus.broker, client_id=client_id, settings=settings)
    await transport.connect(on_message)
    try:
        yield transport
    finally:
        await transport.close()


async def scan_retained(
    bus: EventBus,
    topic_filter: str,
    found: Callable[[str, bytes], None],
    timeout: float = 5.0,
) -> None:
    """Call ``found(topic, payload)`` for each retained message matching `topic_filter`
    on the bus's broker.

    Complete, not a guess after a quiet period: after subscribing, a marker message
    is published to a topic of our own (`SYNC_PREFIX`: no one else sees it); the
    broker delivers a client's messages in order, so every retained message has
    arrived when the marker does. `timeout` bounds each wait for the broker, not the
    whole read: however many messages are retained, the read goes on while they keep
    coming.
    """
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    received = 0
    client_id = side_client_id(bus)
    marker = marker_topic(client_id)

    def on_message(message: Message) -> None:
        nonlocal received
        if message.topic == marker:
            if not done.done():
                done.set_result(None)
        elif message.retain and message.payload:
            received += 1
            found(message.topic, message.payload)

    # The connect has its own timeout (connect_timeout: BrokerUnavailableError);
    # cancelling aiomqtt in the middle of its handshake leaves callbacks behind.
    async with side_connection(bus, on_message, timeout, client_id) as side:
        try:
            async with asyncio.timeout(timeout):
                await side.subscribe(topic_filter, 1)
                await side.subscribe(marker, 2)
                await side.publish(Message(marker, b"sync", 1, False))
            while not done.done():
                seen = received
                await asyncio.wait((done,), timeout=timeout)
                if not done.done() and received == seen:  # nothing came for `timeout`
                    raise TimeoutError
        except TimeoutError:
            raise BrokerTimeoutError(
                f"reading retained {topic_filter} from {bus.redacted_url}: the broker "
                f"sent nothing for {timeout}s"
            ) from None


async def read_retained(bus: EventBus, topic_filter: str, timeout: float = 5.0) -> dict[str, bytes]:
    """The retained messages matching `topic_filter` on the bus's broker:
    ``{topic: payload}`` (see `scan_retained`)."""
    found: dict[str, bytes] = {}
    await scan_retained(bus, topic_filter, found.__setitem__, timeout)
    return found


async def clear_retained(
    bus: EventBus, topics: Iterable[str], timeout: float = 5.0, batch: int = 1000
) -> int:
    """Clear the retained messages on `topics`; how many clears were sent.

    Each is an empty retained publish at QoS 0, `batch` at a time, each batch
    followed by a QoS 1 marker: the broker handles one client's packets in order,
    so when the marker is acknowledged the batch is done (and the next may go).
    `timeout` bounds each batch, not the whole. A clear lost with the link is found
    by reading again (`voicebus.ops.dlq.purge_dead_letters` does).
    """
    cleared = 0
    client_id = side_client_id(bus)
    marker = Message(marker_topic(client_id), b"sync", 1, False)
    async with side_connection(bus, lambda _m: None, timeout, client_id) as side:
        for chunk in _chunks(topics, batch):
            try:
                async with asyncio.timeout(timeout):
                    for topic in chunk:
                        await side.publish(Message(topic, b"", 0, True))
                    await side.publish(marker)
            except TimeoutError:
                raise BrokerTimeoutError(
                    f"clearing retained messages on {bus.redacted_url}: a batch of {len(chunk)} "
                    f"was not done within {timeout}s ({cleared} cleared before)"
                ) from None
            cleared += len(chunk)
    return cleared


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
