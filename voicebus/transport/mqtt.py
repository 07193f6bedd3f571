"""The MQTT 5 transport (``mqtt://``, ``mqtts://``) on aiomqtt.

aiomqtt owns the connection (connect, TLS, socket integration with asyncio,
keepalive, disconnect). The per-message hot path talks to its paho client
directly: publishes carry pre-packed properties and complete on our own PUBACK
futures; received PUBLISH packets are decoded by `properties.py` and handed to
the bus callback without a task per message. aiomqtt/paho errors are translated
here into the `VoicebusError` tree.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as paho_mqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..errors import (
    AuthenticationError,
    BrokerUnavailableError,
    BusStateError,
    NotAuthorizedError,
    PayloadTooLargeError,
    PublishTimeoutError,
    TLSError,
    TopicError,
    TransportError,
)
from ..topics import check_filter, check_topic, matches
from . import BusURL
from .base import Message, MessageCallback
from .properties import (
    MalformedProperties,
    PackedProperties,
    pack_publish_properties,
    unpack_publish_properties,
)

log = logging.getLogger("voicebus.mqtt")

BROKER_HINT = "is Mosquitto running? start one with: mosquitto -c mosquitto/mosquitto.conf"
_AUTH_CODES = {4, 5, 134, 135, 140}


@dataclass
class MqttOptions:
    """Connection settings of the MQTT transport."""

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


class MqttTransport:
    """A connection to an MQTT 5 broker."""

    def __init__(self, url: BusURL, options: MqttOptions) -> None:
        self.url = url.redacted()
        self._url = url
        self.options = options
        self._client: aiomqtt.Client | None = None
        self._paho: paho_mqtt.Client | None = None
        self._on_message: MessageCallback | None = None
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._filters: dict[str, int] = {}
        self._expected: dict[str, frozenset[int]] = {}
        self._copies: dict[tuple[Any, ...], set[int]] = {}
        self._paused = False
        self._watch: asyncio.Task[None] | None = None
        self.connection_lost: asyncio.Future[Exception | None] | None = None

    # --- connection ------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext | None:
        o = self.options
        if not self._url.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=o.ca_file)
            if o.cert_file:
                context.load_cert_chain(o.cert_file, o.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(f"cannot load TLS files for {self.url}: {exc}") from None
        if o.tls_insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _new_client(self) -> aiomqtt.Client:
        o = self.options
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if o.session_expiry:
            props.SessionExpiryInterval = int(o.session_expiry)
        will = None
        if o.will is not None:
            will = aiomqtt.Will(o.will.topic, o.will.payload, o.will.qos, o.will.retain)
        persistent = bool(o.session_expiry)
        return aiomqtt.Client(
            self._url.host,
            self._url.port,
            identifier=o.client_id or None,
            username=o.username,
            password=o.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=o.keepalive,
            timeout=o.connect_timeout,
            clean_start=not persistent,
            properties=props if o.session_expiry else None,
            tls_context=self._tls_context(),
            will=will,
        )

    async def connect(self, on_message: MessageCallback) -> None:
        self._on_message = on_message
        client = self._new_client()
        try:
            await client.__aenter__()
        except MqttConnectError as exc:
            raise self._connect_error(exc) from None
        except aiomqtt.MqttError as exc:
            raise self._connect_error(exc) from None
        self._install(client)

    def _connect_error(self, exc: aiomqtt.MqttError) -> TransportError:
        text = str(exc)
        code = getattr(exc, "rc", None)
        value = getattr(code, "value", code)
        if isinstance(exc, MqttConnectError) and value in _AUTH_CODES:
            return AuthenticationError(
                f"{self.url} refused the connection ({text}): check the username and "
                "password (VOICEBUS_URL=mqtt://user:pass@host) and the broker's ACL"
            )
        lowered = text.lower()
        if "ssl" in lowered or "certificate" in lowered or "tls" in lowered:
            return TLSError(f"TLS with {self.url} failed: {text} (check the CA file and host name)")
        return BrokerUnavailableError(f"cannot connect to {self.url}: {text}; {BROKER_HINT}")

    def _install(self, client: aiomqtt.Client) -> None:
        """Take over aiomqtt's hot paths on a freshly connected client."""
        paho = client._client
        aiomqtt_on_publish: Any = paho.on_publish

        def on_publish(
            c: paho_mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
        ) -> None:
            fut = self._pending.get(mid)
            if fut is not None:
                if not fut.done():
                    fut.set_result(int(getattr(reason, "value", reason or 0)))
            elif aiomqtt_on_publish is not None:
                aiomqtt_on_publish(c, userdata, mid, reason, props)

        original_handle_publish = paho._handle_publish

        def handle_publish() -> MQTTErrorCode:
            packet = paho._in_packet
            header = packet["command"]
            qos = (header & 0x06) >> 1
            if qos == 2:
                return original_handle_publish()
            data = packet["packet"]
            self._receive(data, header, qos)
            if qos == 1:
                pos = 2 + int.from_bytes(data[0:2], "big")
                return paho._send_puback(int.from_bytes(data[pos : pos + 2], "big"))
            return MQTTErrorCode.MQTT_ERR_SUCCESS

        paho.on_publish = on_publish
        paho._handle_publish = handle_publish  # type: ignore[method-assign]
        self._client = client
        self._paho = paho
        self._paused = False
        loop = asyncio.get_running_loop()
        self.connection_lost = loop.create_future()
        self._watch = loop.create_task(self._watch_connection(client))

    def _receive(self, data: bytearray, header: int, qos: int) -> None:
        size = int.from_bytes(data[0:2], "big")
        pos = 2 + size
        try:
            topic = bytes(data[2:pos]).decode("utf-8")
        except UnicodeDecodeError:
            log.warning("dropping a PUBLISH whose topic is not UTF-8 (protocol violation)")
            return
        if qos:
            pos += 2
        try:
            props, pos = unpack_publish_properties(data, pos)
        except MalformedProperties as exc:
            log.warning("malformed properties on %s: %s", topic, exc)
            return
        message = Message(
            topic,
            bytes(data[pos:]),
            qos,
            bool(header & 0x01),
            props.correlation_data,
            props.user_properties,
            props.content_type,
            props.subscription_ids,
        )
        if not message.retain and self._is_copy(message):
            return
        if self._on_message is not None:
            self._on_message(message)

    def _is_copy(self, message: Message) -> bool:
        """True for the 2nd.. copy Mosquitto sends when several of our filters match."""
        expected = self._expected.get(message.topic)
        if expected is None:
            expected = frozenset(
                sid
                for flt, sid in self._filters.items()
                if not flt.startswith("$share/") and matches(flt, message.topic)
            )
            if len(self._expected) > 10_000:
                self._expected.clear()
            self._expected[message.topic] = expected
        if len(expected) < 2:
            return False
        key = (message.topic, message.payload, message.correlation_data, message.user_properties)
        got = set(message.subscription_ids)
        pending = self._copies.get(key)
        if pending is not None and got and got <= pending:
            pending -= got
            if not pending:
                del self._copies[key]
            return True
        remaining = set(expected) - got
        if remaining:
            if len(self._copies) > 10_000:
                self._copies.clear()
            self._copies[key] = remaining
        return False

    async def _watch_connection(self, client: aiomqtt.Client) -> None:
        lost = self.connection_lost
        try:
            await client._disconnected
            error: Exception | None = None
        except Exception as exc:  # the link broke
            error = exc
            log.warning("connection to %s lost: %s", self.url, exc)
        except asyncio.CancelledError:
            return
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(TransportError(f"connection to {self.url} lost"))
        if lost is not None and not lost.done():
            lost.set_result(error)

    async def close(self) -> None:
        client, self._client = self._client, None
        self._paho = None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if client is None:
            return
        try:
            await client.__aexit__(None, None, None)
        except aiomqtt.MqttError as exc:
            log.debug("disconnect from %s: %s", self.url, exc)

    # --- publish / subscribe -----------------------------------------------------

    def _connected_paho(self) -> paho_mqtt.Client:
        if self._paho is None:
            raise BusStateError(f"not connected to {self.url}")
        return self._paho

    async def publish(self, message: Message) -> None:
        paho = self._connected_paho()
        check_topic(message.topic)
        if len(message.payload) > self.options.max_payload_size:
            raise PayloadTooLargeError(
                f"payload of {len(message.payload)} bytes on {message.topic} exceeds the "
                f"limit of {self.options.max_payload_size} bytes (max_payload_size)"
            )
        props = PackedProperties(
            pack_publish_properties(
                content_type=message.content_type,
                correlation_data=message.correlation_data,
                user_properties=message.user_properties,
            )
        )
        info = paho.publish(message.topic, message.payload, message.qos, message.retain, props)  # type: ignore[arg-type]
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransportError(
                f"cannot publish to {self.url}: {paho_mqtt.error_string(info.rc)}"
            )
        if message.qos == 0:
            return
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[info.mid] = fut
        try:
            code = await asyncio.wait_for(fut, self.options.publish_timeout)
        except TimeoutError:
            raise PublishTimeoutError(
                f"{self.url} did not acknowledge a publish on {message.topic} within "
                f"{self.options.publish_timeout}s"
            ) from None
        finally:
            self._pending.pop(info.mid, None)
        if code >= 0x80:
            if code == 0x87:
                raise NotAuthorizedError(
                    f"{self.url} refused the publish on {message.topic} (not authorized: "
                    "check the ACL for this user)"
                )
            raise TransportError(f"{self.url} refused the publish on {message.topic} (code {code})")

    async def subscribe(self, topic_filter: str, subscription_id: int, qos: int = 1) -> None:
        if self._client is None:
            raise BusStateError(f"not connected to {self.url}")
        check_filter(topic_filter)
        props = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
        props.SubscriptionIdentifier = subscription_id
        self._filters[topic_filter] = subscription_id
        self._expected.clear()
        try:
            codes = await self._client.subscribe(topic_filter, qos=qos, properties=props)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"cannot subscribe {topic_filter!r}: {exc}") from None
        for code in codes:
            value = int(code.value) if hasattr(code, "value") else int(code)
            if value >= 0x80:
                self._filters.pop(topic_filter, None)
                if value == 0x87:
                    raise NotAuthorizedError(f"{self.url} refused subscription {topic_filter!r}")
                raise TopicError(f"{self.url} refused subscription {topic_filter!r} ({code})")

    async def unsubscribe(self, topic_filter: str) -> None:
        self._filters.pop(topic_filter, None)
        self._expected.clear()
        self._copies.clear()
        if self._client is None:
            return
        try:
            await self._client.unsubscribe(topic_filter)
        except aiomqtt.MqttError as exc:
            log.debug("unsubscribe %s: %s", topic_filter, exc)

    # --- flow control --------------------------------------------------------------

    def pause_reading(self) -> None:
        sock = self._paho.socket() if self._paho is not None else None
        if self._paused or sock is None:
            return
        self._paused = True
        asyncio.get_running_loop().remove_reader(sock.fileno())

    def resume_reading(self) -> None:
        paho = self._paho
        sock = paho.socket() if paho is not None else None
        if not self._paused or paho is None or sock is None:
            self._paused = False
            return
        self._paused = False
        client = self._client
        assert client is not None

        def read() -> None:
            try:
                while True:
                    paho.loop_read()
                    raw: Any = paho._sock
                    if hasattr(raw, "pending") and raw.pending() > 0:
                        continue
                    break
            except Exception as exc:
                if not client._disconnected.done():
                    client._disconnected.set_exception(exc)

        asyncio.get_running_loop().add_reader(sock.fileno(), read)
