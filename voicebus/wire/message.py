"""`Message`: one MQTT application message, as the codec builds it and every
transport carries it (plain data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Message"]


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
