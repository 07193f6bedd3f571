"""Every setting of an `EventBus`, typed and documented in one place.

`BusConfig` holds them all (a frozen dataclass: name, type, default, one line of
doc each); `EventBus(url, config=BusConfig(...))` takes one, and the same names
are accepted as keyword arguments (`BusSettings`, so mypy and an IDE see them)::

    bus = EventBus("mqtt://127.0.0.1:1883", session_expiry=3600, keepalive=30)

`MqttSettings` are the fields that only an ``mqtt://`` / ``mqtts://`` bus uses;
setting one of them on a ``memory://`` bus raises `ConfigError`. This module is
a leaf: plain data, no I/O, imported by the bus and the transports alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypedDict

from .errors import ConfigError

__all__ = ["BusConfig", "BusSettings", "MqttSettings", "mqtt_settings_in_use"]


@dataclass(frozen=True, kw_only=True)
class MqttSettings:
    """Settings of the MQTT connection (``mqtt://``, ``mqtts://`` only)."""

    username: str | None = None
    """Broker user name; overrides the one in the URL."""
    password: str | None = field(default=None, repr=False)
    """Broker password; overrides the one in the URL. Never printed or logged."""
    keepalive: int = 60
    """Seconds between MQTT PINGs when idle; the broker drops a silent link after 1.5x."""
    session_expiry: int | None = None
    """Seconds the broker keeps this client's session (with a fixed `client_id`):
    set it for no loss across restarts; QoS 1 messages are then acknowledged only
    after their handlers ran. ``None``: no persistent session."""
    ca_file: str | None = None
    """CA bundle that signs the broker's certificate (``mqtts://``); ``?ca=`` in the URL."""
    cert_file: str | None = None
    """Client certificate for mutual TLS; ``?cert=`` in the URL."""
    key_file: str | None = None
    """Private key of `cert_file`; ``?key=`` in the URL."""
    tls_insecure: bool = False
    """Skip verifying the broker's certificate and host name (tests only); ``?insecure=1``."""
    connect_timeout: float = 10.0
    """Seconds a connect may take before `BrokerUnavailableError`."""
    publish_timeout: float = 10.0
    """Seconds to wait for a QoS 1 PUBACK before `PublishTimeoutError`."""
    max_payload_size: int = 256 * 1024
    """Largest payload in bytes, sent or received; larger inbound ones are dead-lettered."""
    reconnect: bool = True
    """Reconnect after a lost link (with backoff), resubscribe, resend the outbox."""
    reconnect_delay: float = 0.5
    """First reconnect delay in seconds; doubles per attempt."""
    reconnect_max_delay: float = 30.0
    """Longest reconnect delay in seconds."""
    reconnect_jitter: float = 0.5
    """Each delay is shortened by up to this fraction at random."""
    outbox_size: int = 10_000
    """Messages kept while the link is down; beyond it `emit` raises `BackpressureError`."""
    resend_window: float = 0.0
    """Seconds: QoS 1 messages acknowledged this recently before a loss are sent
    again after the reconnect (0 = off; see mosquitto/README.md)."""
    status: bool | None = None
    """Publish the retained ``voicebus/status/<clientId>`` online/offline and Last Will.
    None: only with a client id of your own (a generated one is new every run);
    True: also with a generated one, whose status is cleared at stop and by its Will."""
    max_unacked: int = 10
    """With a persistent session, received QoS 1 messages whose PUBACK waits for
    their handlers. The client's Receive Maximum is twice this: the broker's window
    (it sends no more QoS 1 messages while that many are unacknowledged), which
    also bounds what the transport holds while the bus is behind."""
    protocol: str = "5"
    """MQTT version: ``"5"``, or ``"3.1.1"`` for brokers without MQTT 5 (NATS, RabbitMQ
    < 3.13; also ``?protocol=3.1.1`` in the URL): envelope in the payload, no ``group=``."""


@dataclass(frozen=True, kw_only=True)
class BusConfig(MqttSettings):
    """All settings of an `EventBus` (the MQTT ones are inherited from `MqttSettings`)."""

    max_queue_size: int = 1000
    """Received events waiting for dispatch before the transport holds the next ones
    back (MQTT: withheld PUBACKs, the broker stops at the Receive Maximum)."""
    enable_history: bool = True
    """Keep the last `history_size` events for `get_event_history`."""
    history_size: int = 100
    """Events kept in the history."""
    dead_letter_size: int = 1000
    """Dead letters kept in memory for `get_dead_letter_queue` (fewer once their
    payloads, topics and properties pass 16 MiB together)."""
    dead_letter_retained_max: int = 1000
    """Dead letters this bus keeps retained on the broker; past it, the oldest it
    published is cleared (0: none are published)."""
    dead_letter_rate: float = 10.0
    """Dead letters per second published retained, ERROR_OCCURRED events and failure
    log lines per second, each after a burst of `dead_letter_burst`; the rest are
    counted in `get_stats` (``dead_letters_not_retained``, ``error_events_suppressed``)."""
    dead_letter_burst: int = 100
    """Dead letters (and ERROR_OCCURRED events) published at once before
    `dead_letter_rate` applies."""
    component: str = "bus"
    """Name of this service in ERROR_OCCURRED events (``voicebus/error/<component>``)."""
    cancel_window: float = 30.0
    """Seconds after a cancellation (`EventBus.cancel`) during which events of that
    correlation id that arrive are dropped (counted in ``events_cancelled``)."""


class BusSettings(TypedDict, total=False):
    """The keyword arguments `EventBus` accepts: the fields of `BusConfig`."""

    username: str | None
    password: str | None
    keepalive: int
    session_expiry: int | None
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    tls_insecure: bool
    connect_timeout: float
    publish_timeout: float
    max_payload_size: int
    reconnect: bool
    reconnect_delay: float
    reconnect_max_delay: float
    reconnect_jitter: float
    outbox_size: int
    resend_window: float
    status: bool | None
    max_unacked: int
    protocol: str
    max_queue_size: int
    enable_history: bool
    history_size: int
    dead_letter_size: int
    dead_letter_retained_max: int
    dead_letter_rate: float
    dead_letter_burst: int
    component: str
    cancel_window: float


MQTT_FIELDS = tuple(f.name for f in fields(MqttSettings))
PROTOCOLS = ("5", "3.1.1")
"""The MQTT versions `MqttSettings.protocol` accepts."""


def mqtt_protocol(config: MqttSettings, query: dict[str, str]) -> str:
    """The MQTT version a bus speaks: `config`'s, else the URL's ``?protocol=``,
    else 5; `ConfigError` for any other."""
    value = config.protocol if config.protocol != "5" else query.get("protocol", "5")
    value = {"5.0": "5", "v5": "5", "3.1.1": "3.1.1", "311": "3.1.1"}.get(value, value)
    if value not in PROTOCOLS:
        raise ConfigError(f"protocol {value!r} is not supported: use \"5\" or \"3.1.1\"")
    return value
CONFIG_FIELDS = frozenset(f.name for f in fields(BusConfig))


def mqtt_settings_in_use(config: BusConfig) -> list[str]:
    """The MQTT-only settings of `config` that differ from their defaults."""
    default = BusConfig()
    return [name for name in MQTT_FIELDS if getattr(config, name) != getattr(default, name)]


def check_applies(config: BusConfig, scheme: str) -> None:
    """Refuse MQTT-only settings on a ``memory://`` bus (they would do nothing)."""
    if scheme == "memory" and (used := mqtt_settings_in_use(config)):
        raise ConfigError(
            f"{', '.join(used)} only appl{'ies' if len(used) == 1 else 'y'} to mqtt:// "
            "and mqtts:// buses; this bus is memory://"
        )


def resolve_config(
    config: BusConfig | None, settings: Mapping[str, Any], scheme: str
) -> BusConfig:
    """`config` (or the defaults) with the keyword `settings` applied: `ConfigError`
    for an unknown name or an MQTT-only setting on a ``memory://`` bus; a ``None``
    value keeps the default."""
    unknown = set(settings) - CONFIG_FIELDS
    if unknown:
        raise ConfigError(f"unknown EventBus option(s): {', '.join(sorted(unknown))}")
    given = {name: value for name, value in settings.items() if value is not None}
    resolved = replace(config or BusConfig(), **given)
    check_applies(resolved, scheme)
    return resolved


def positive_seconds(name: str, seconds: float | None) -> float | None:
    """`seconds` when it is ``None`` or > 0, else `ValueError` naming `name`."""
    if seconds is not None and not seconds > 0:
        raise ValueError(f"{name} must be a number of seconds > 0 (or None), got {seconds!r}")
    return seconds
