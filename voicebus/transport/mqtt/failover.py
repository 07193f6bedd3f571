"""Failover across the broker addresses of one bus URL (``mqtt://a:1883,b:1883``).

The transport connects to the first address that answers; after a loss, each
reconnect attempt (with the usual backoff) goes to the next address, round robin.
Everything the transport keeps for itself holds across a switch: the outbox is
sent to the new broker, every filter is subscribed again, the status announced.

What a switch between two *independent* brokers (not a cluster) can lose: the
session, retained messages and QoS 1 messages in flight live on the broker that
went away. The new broker has no session for this client (``session_present``
false): messages queued there for an offline subscriber, and messages published
to the new broker before this client's subscriptions were made there, never reach
it. Retained messages (status, dead letters) published to the old broker are
not on the new one. A QoS 1 message the old broker acknowledged but had not yet
forwarded to a subscriber is gone with it. Messages still unacknowledged when
the link dropped are resent from the outbox (receivers drop copies by id).
"""

from __future__ import annotations

from ..url import Address, format_address


class Brokers:
    """The broker addresses of one transport, and which one is in use."""

    __slots__ = ("_at", "addresses")

    def __init__(self, addresses: tuple[Address, ...]) -> None:
        self.addresses = addresses
        self._at = 0

    def __len__(self) -> int:
        return len(self.addresses)

    @property
    def current(self) -> Address:
        return self.addresses[self._at]

    def __str__(self) -> str:
        return format_address(self.current)

    def advance(self) -> None:
        """Use the next address (round robin)."""
        self._at = (self._at + 1) % len(self.addresses)
