"""aiomqtt/paho errors and MQTT reason codes, translated into the `VoicebusError` tree.

Each message says what went wrong and what to check; `url` is always the redacted
bus URL (no password).
"""

from __future__ import annotations

from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from ...errors import (
    AuthenticationError,
    BrokerUnavailableError,
    NotAuthorizedError,
    TLSError,
    TopicError,
    TransportError,
    VoicebusError,
)

BROKER_HINT = "is Mosquitto running? start one with: mosquitto -c mosquitto/mosquitto.conf"
_AUTH_CODES = {4, 5, 134, 135, 140}
"""CONNACK reason codes that mean bad credentials or not authorized (MQTT 3 and 5)."""
_NOT_AUTHORIZED = 0x87
_TOPIC_FILTER_INVALID = 0x8F


def connect_error(url: str, exc: aiomqtt.MqttError) -> TransportError:
    """A failed connect: authentication, TLS, or the broker is not there."""
    text = str(exc)
    code = getattr(exc, "rc", None)
    value = getattr(code, "value", code)
    if isinstance(exc, MqttConnectError) and value in _AUTH_CODES:
        return AuthenticationError(
            f"{url} refused the connection ({text}): check the username and "
            "password (VOICEBUS_URL=mqtt://user:pass@host) and the broker's ACL"
        )
    lowered = text.lower()
    if "ssl" in lowered or "certificate" in lowered or "tls" in lowered:
        return TLSError(
            f"TLS with {url} failed: {text} (check the CA file, the client "
            "certificate and key, and that the server certificate names this host)"
        )
    return BrokerUnavailableError(f"cannot connect to {url}: {text}; {BROKER_HINT}")


def publish_error(url: str, topic: str, code: int) -> TransportError:
    """The broker refused a publish on `topic` with reason `code` (>= 0x80)."""
    if code == _NOT_AUTHORIZED:
        return NotAuthorizedError(
            f"{url} refused the publish on {topic} (not authorized: check the ACL for this user)"
        )
    return TransportError(f"{url} refused the publish on {topic} (code {code})")


def subscribe_error(url: str, topic_filter: str, code: Any) -> VoicebusError | None:
    """The error for a SUBACK reason `code` refusing `topic_filter`; None if granted."""
    value = int(code.value) if hasattr(code, "value") else int(code)
    if value < 0x80:
        return None
    if value == _NOT_AUTHORIZED:
        return NotAuthorizedError(f"{url} refused subscription {topic_filter!r}")
    if value == _TOPIC_FILTER_INVALID:
        return TopicError(f"{url} refused subscription {topic_filter!r} ({code})")
    return TransportError(f"{url} refused subscription {topic_filter!r} ({code})")


_NOT_A_REFUSAL = frozenset({0x8B, 0x8D, 0x8E, 0x9C, 0x9D})
"""DISCONNECT reason codes that say nothing about what we sent: server shutting
down, keepalive timeout, session taken over, use another server, server moved."""


def refusal(said: list[int]) -> bool:
    """Did the broker close the link over something we sent? Only when it said so
    with a DISCONNECT (Mosquitto: 0x81 malformed packet): a link that just broke
    looks the same whether the broker crashed, restarted or refused, and a
    message must not be dropped for a broker restart."""
    return bool(said) and said[-1] >= 0x80 and said[-1] not in _NOT_A_REFUSAL
