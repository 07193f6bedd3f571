"""Settings of the MQTT transport: `MqttOptions`, read from the bus URL and keyword
options, and the TLS context they describe."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from ..errors import TLSError
from ..status import status_topic
from . import BusURL
from .backoff import backoff_delay
from .base import Message


@dataclass
class MqttOptions:
    """Connection settings of the MQTT transport.

    Reconnect: the n-th attempt waits ``min(reconnect_max_delay, reconnect_delay *
    2**n)``, shortened by up to ``reconnect_jitter`` (a fraction) at random.
    ``outbox_size`` bounds the messages kept while the link is down.
    ``resend_window`` (seconds, 0 = off): QoS 1 messages the broker acknowledged
    this recently before the link dropped are sent again after the reconnect. A
    broker killed with SIGKILL loses what it acknowledged after its last save;
    voicebus receivers drop the copies by event id, other peers may see them twice
    (QoS 1 is at-least-once). See mosquitto/README.md.
    ``status`` publishes the retained online/offline status and Last Will (ignored
    when `will` is given).
    ``max_unacked``: with a persistent session, at most this many received QoS 1
    messages wait for their PUBACK until their handlers ran; beyond it the oldest
    is acknowledged at once. It must stay below the broker's in-flight window
    (Mosquitto's ``max_inflight_messages``, 20 by default), or a handler awaiting
    a reply behind a full queue would wait for a message the broker holds back.
    """

    client_id: str
    username: str | None = None
    password: str | None = None
    keepalive: int = 60
    session_expiry: int | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    connect_timeout: float = 10.0
    publish_timeout: float = 10.0
    max_payload_size: int = 256 * 1024
    will: Message | None = None
    reconnect: bool = True
    reconnect_delay: float = 0.5
    reconnect_max_delay: float = 30.0
    reconnect_jitter: float = 0.5
    outbox_size: int = 10_000
    resend_window: float = 0.0
    status: bool = True
    max_unacked: int = 10

    @classmethod
    def from_url(cls, url: BusURL, **options: Any) -> MqttOptions:
        q = url.query
        opts = cls(
            client_id=str(options.pop("client_id", None) or q.get("client_id") or ""),
            username=url.username,
            password=url.password,
            ca_file=q.get("ca"),
            cert_file=q.get("cert"),
            key_file=q.get("key"),
            tls_insecure=q.get("insecure", "") in ("1", "true", "yes"),
        )
        for key, value in options.items():
            if value is None:
                continue
            if not hasattr(opts, key):
                raise TypeError(f"unknown MQTT option {key!r}")
            setattr(opts, key, value)
        return opts

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt `attempt` (0, 1, ...)."""
        return backoff_delay(
            attempt, self.reconnect_delay, self.reconnect_max_delay, self.reconnect_jitter
        )

    def status_topic(self) -> str | None:
        """The retained status topic (and Last Will) of this client, if it has one."""
        if not self.status or self.will is not None or not self.client_id:
            return None
        return status_topic(self.client_id)


def tls_context(url: BusURL, options: MqttOptions) -> ssl.SSLContext | None:
    """The TLS context for an ``mqtts://`` `url` (None for ``mqtt://``)."""
    if not url.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=options.ca_file)
        if options.cert_file:
            context.load_cert_chain(options.cert_file, options.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSError(f"cannot load TLS files for {url.redacted()}: {exc}") from None
    if options.tls_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
