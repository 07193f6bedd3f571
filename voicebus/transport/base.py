"""The transport seam: what the bus needs from a broker connection, nothing more.

A transport pushes each inbound `Message` to the callback given to `connect`
(like an asyncio ``Protocol``: no task hop per message), and honours
`pause_reading` / `resume_reading` so a full receive queue stops the flow instead
of dropping anything (over MQTT by flow control: the link stays up).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

CONSUMER: ContextVar[object | None] = ContextVar("voicebus_consumer", default=None)
"""Set by a bus's dispatcher to its transport, so an in-process transport never
makes a dispatcher wait on its own paused queue."""


@dataclass(slots=True)
class Message:
    """One MQTT application message as both transports carry it."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    content_type: str | None = None
    subscription_ids: tuple[int, ...] = ()
    validated: bool = False
    """Set by `codec.encode` and kept only in-process (never on the wire): the
    payload already passed its model's validation in this process."""
    ack: object | None = None
    """In-process only: for a received QoS 1 message whose receiver asked to
    acknowledge it itself (``connect(..., defer_acks=True)``), the token to pass to
    `Transport.ack` once done with it."""
    expires: float | None = None
    """When the message goes stale (``time.monotonic()``), None: never. On the wire
    as the MQTT 5 Message Expiry Interval (the seconds left when it is sent); a
    stale message is dropped, not sent or delivered (outbox, ``memory://``)."""
    local: object | None = None
    """In-process only (never on the wire): set by the emitting bus on a fresh,
    not retained message to hand its validated event to the receivers of this
    process without the JSON round trip (`voicebus.wire.handover`). ``memory://``
    passes it on; MQTT ignores it."""

    def expired(self, now: float) -> bool:
        """Past its expiry at monotonic time `now`."""
        return self.expires is not None and self.expires <= now


MessageCallback = Callable[[Message], None]


class Transport(Protocol):
    """A connection to a broker (in-process or MQTT)."""

    url: str

    async def connect(self, on_message: MessageCallback, *, defer_acks: bool = False) -> None:
        """Connect; every inbound message is passed to `on_message`.

        With `defer_acks`, a received QoS 1 message carrying an `ack` token is
        acknowledged only when the receiver passes that token to `ack`.
        """

    def ack(self, token: object) -> None:
        """Acknowledge a received message by its `Message.ack` token (once)."""

    async def close(self) -> None:
        """Disconnect cleanly (idempotent)."""

    async def publish(self, message: Message) -> None:
        """Publish; returns once the broker has taken the message (QoS 1: PUBACK)."""

    async def subscribe(self, topic_filter: str, subscription_id: int, qos: int = 1) -> None:
        """Subscribe `topic_filter`, tagging its messages with `subscription_id`."""

    async def unsubscribe(self, topic_filter: str) -> None:
        """Remove the subscription for `topic_filter`."""

    def pause_reading(self) -> None:
        """Stop delivering messages until `resume_reading` (back-pressure)."""

    def resume_reading(self) -> None:
        """Deliver messages again after `pause_reading`."""
