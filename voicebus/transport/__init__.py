"""Transports: ``memory://`` (embedded, the default) and ``mqtt://`` / ``mqtts://``."""

from __future__ import annotations

from ..config import MqttSettings
from .base import CONSUMER, InProcessTransport, LocalMessage, Message, MessageCallback, Transport
from .url import DEFAULT_URL, BusURL, parse_url, resolve_url

__all__ = [
    "CONSUMER",
    "DEFAULT_URL",
    "BusURL",
    "InProcessTransport",
    "LocalMessage",
    "Message",
    "MessageCallback",
    "Transport",
    "open_transport",
    "parse_url",
    "resolve_url",
]


def open_transport(
    url: BusURL, *, client_id: str = "", settings: MqttSettings | None = None
) -> Transport:
    """A transport for `url`; `settings` apply to ``mqtt://`` and ``mqtts://`` only."""
    if url.scheme == "memory":
        from .memory import MemoryTransport

        return MemoryTransport(url.name)
    from .mqtt import MqttOptions, MqttTransport

    return MqttTransport(url, MqttOptions.from_url(url, settings, client_id=client_id))
