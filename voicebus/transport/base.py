"""The transport seam: what the bus needs from a broker connection, nothing more.

A transport pushes each inbound `Message` to the callback given to `connect`
(like an asyncio ``Protocol``: no task hop per message), and honours
`pause_reading` / `resume_reading` so a full receive queue stops the flow instead
of dropping anything (over MQTT by flow control: the link stays up).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Protocol

from ..wire.message import Message as Message  # re-exported: what transports carry

CONSUMER: ContextVar[object | None] = ContextVar("voicebus_consumer", default=None)
"""Set by a bus's dispatcher to its transport, so an in-process transport never
makes a dispatcher wait on its own paused queue."""


MessageCallback = Callable[[Message], None]


class LocalMessage(Protocol):
    """An event published in-process without its MQTT message being made
    (`voicebus.wire.handover.Handover`): its topic, its payload bytes, when it goes
    stale, and `message` to make the message for a receiver that needs one."""

    topic: str
    payload: bytes
    expires: float | None

    def message(self) -> Message:
        """The full message (made once), carrying this as `Message.local`."""
        ...


LocalCallback = Callable[[LocalMessage, tuple[int, ...]], None]
"""``on_local(local, subscription_ids)``: an in-process receiver takes a hand-over."""


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


class InProcessTransport(Transport, Protocol):
    """A transport whose receivers live in this process (``memory://``): it also
    takes events handed over without their MQTT message (the optional seam a bus
    uses when the transport has it; see `voicebus.wire.handover`)."""

    on_local: LocalCallback | None
    """Set by a receiving bus: takes a hand-over with its subscription ids."""

    def publish_local(self, local: LocalMessage) -> Awaitable[None] | None:
        """Publish `local` to this process's receivers at once (a receiver that cannot
        take a hand-over now gets `local.message()`). None when done; else an
        awaitable to await before the next publish: it waits for room in the
        receivers now paused (back-pressure, as `publish` does), or gives them a
        turn now and then (`memory.TURN_EVERY`). Not a coroutine function, so the
        common case costs no coroutine."""
