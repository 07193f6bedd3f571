"""Settings of the MQTT transport: `MqttOptions`, read from the bus URL and keyword
options, and the TLS context they describe."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from ...config import MQTT_FIELDS, MqttSettings, mqtt_protocol
from ...errors import TLSError
from ...wire.status import is_generated, offline_payload, status_topic
from ..base import Message
from ..url import BusURL
from .backoff import backoff_delay


@dataclass(frozen=True, kw_only=True)
class MqttOptions(MqttSettings):
    """What one MQTT transport runs with: the user's `MqttSettings` (documented in
    `voicebus.config`), completed from the URL, plus the client id and Last Will."""

    client_id: str = ""
    will: Message | None = None
    """Last Will instead of the offline status (a transport of its own)."""

    @classmethod
    def from_url(
        cls,
        url: BusURL,
        settings: MqttSettings | None = None,
        *,
        client_id: str = "",
        will: Message | None = None,
    ) -> MqttOptions:
        """`settings` completed from `url`: credentials, and TLS files from ``?ca=``,
        ``?cert=``, ``?key=``, ``?insecure=1`` (the settings win where both give one)."""
        s = settings or MqttSettings()
        q = url.query
        values = {name: getattr(s, name) for name in MQTT_FIELDS}
        values.update(
            username=s.username if s.username is not None else url.username,
            password=s.password if s.password is not None else url.password,
            ca_file=s.ca_file or q.get("ca"),
            cert_file=s.cert_file or q.get("cert"),
            key_file=s.key_file or q.get("key"),
            tls_insecure=s.tls_insecure or q.get("insecure", "") in ("1", "true", "yes"),
            protocol=mqtt_protocol(s, q),
        )
        return cls(client_id=client_id or q.get("client_id", ""), will=will, **values)

    @property
    def v5(self) -> bool:
        """MQTT 5 (else 3.1.1: no properties, the envelope in the payload)."""
        return self.protocol != "3.1.1"

    @property
    def receive_maximum(self) -> int:
        """The Receive Maximum this client announces in CONNECT: QoS 1 messages the
        broker may leave unacknowledged, twice `max_unacked` (so the broker's window
        stays open for replies while `max_unacked` wait for their handlers)."""
        return min(65_535, 2 * max(1, self.max_unacked))

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt `attempt` (0, 1, ...)."""
        return backoff_delay(
            attempt, self.reconnect_delay, self.reconnect_max_delay, self.reconnect_jitter
        )

    def status_topic(self) -> str | None:
        """The retained status topic (and Last Will) of this client, if it has one."""
        if self.status is False or self.will is not None or not self.client_id:
            return None
        if self.status is None and is_generated(self.client_id):
            return None  # `voicebus.wire.status`: no status for a generated id by default
        return status_topic(self.client_id)

    @property
    def offline(self) -> bytes:
        """The status of a clean stop and the Last Will (`voicebus.wire.status`)."""
        return offline_payload(self.client_id)


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
