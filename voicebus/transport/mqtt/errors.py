"""aiomqtt/paho errors and MQTT reason codes, translated into the `VoicebusError` tree.

Each message says what went wrong and what to check; `url` is always the redacted
bus URL (no password).
"""

from __future__ import annotations

import re
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
from ..url import Address

BROKER_HINT = "is Mosquitto running? start one with: mosquitto -p {port}"
"""The hint for a refused connection to this machine: Mosquitto 2 with no config file
listens on the loopback interface, anonymous clients allowed (any install)."""
_AUTH_CODES = {4, 5, 134, 135, 140}
"""CONNACK reason codes that mean bad credentials or not authorized (MQTT 3 and 5)."""
_NOT_AUTHORIZED = 0x87
_TOPIC_FILTER_INVALID = 0x8F
_NAME_NOT_RESOLVED = re.compile(
    r"\[errno -\d+\]|name or service not known|name resolution", re.IGNORECASE
)
"""getaddrinfo's errors (negative errno): the host name does not resolve."""
_LOCAL = ("localhost", "127.", "::1")


def connect_error(
    url: str, exc: aiomqtt.MqttError, address: Address, tls: bool, timeout: float
) -> TransportError:
    """A failed connect to `address` (``mqtts://`` when `tls`), named by its cause:
    authentication, TLS, a host name that does not resolve, nothing listening, a
    port that closed the connection (TLS on one side only), no answer in `timeout`."""
    text = str(exc)
    code = getattr(exc, "rc", None)
    value = getattr(code, "value", code)
    host, port = address
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
    where = f"cannot connect to {url}:"
    if _NAME_NOT_RESOLVED.search(lowered):
        return BrokerUnavailableError(
            f"{where} the host name {host!r} does not resolve ({text}): check the host in the URL"
        )
    if "refused" in lowered:
        hint = (
            BROKER_HINT.format(port=port)
            if host.startswith(_LOCAL)
            else f"is the broker running on {host}, and is port {port} open to this machine?"
        )
        return BrokerUnavailableError(f"{where} nothing listens on port {port} ({text}); {hint}")
    if "reset" in lowered or "closed" in lowered:
        if tls:
            return TLSError(
                f"TLS with {url} failed: {host}:{port} closed the connection in the handshake "
                f"({text}); if that port speaks plain MQTT, use mqtt://"
            )
        return BrokerUnavailableError(
            f"{where} {host}:{port} closed the connection before answering ({text}); if that "
            "port expects TLS, use mqtts:// (with ?ca=CA_FILE)"
        )
    if "timed out" in lowered:
        return BrokerUnavailableError(
            f"{where} no MQTT answer (CONNACK) from {host}:{port} within {timeout:g}s: is it an "
            "MQTT broker, and not overloaded? (a firewall that drops packets looks the same)"
        )
    return BrokerUnavailableError(f"{where} {text}")


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
