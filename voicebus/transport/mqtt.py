"""The MQTT 5 transport (``mqtt://``, ``mqtts://``) on aiomqtt.

aiomqtt owns each connection (connect, TLS, socket integration with asyncio,
keepalive, disconnect); the transport owns what aiomqtt leaves to its users:

- **Reconnect**: when the link drops, a supervisor task reconnects with
  exponential backoff and jitter, using a *fresh* aiomqtt client per connection
  (a reused paho client silently re-sends its own in-flight messages, which
  duplicates them), re-subscribes every filter and flushes the outbox.
- **Outbox**: while the link is down, `publish` puts messages in a bounded
  outbox and returns (`BackpressureError` when it is full; nothing is dropped
  silently). QoS 1 messages still waiting for their PUBACK when the link drops
  are put back at the head of the outbox and sent again (receivers de-duplicate
  by event id).
- **Status**: a retained ``voicebus/status/<clientId>`` ``online`` on every
  connect, ``offline`` on `close` and as the Last Will.

The per-message hot path talks to the paho client directly: publishes carry
pre-packed properties and complete on our own PUBACK futures; received PUBLISH
packets are decoded by `properties.py` and handed to the bus callback without a
task per message. aiomqtt/paho errors are translated here into the
`VoicebusError` tree.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiomqtt
import paho.mqtt.client as paho_mqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..errors import (
    AuthenticationError,
    BackpressureError,
    BrokerUnavailableError,
    BusStateError,
    NotAuthorizedError,
    PayloadTooLargeError,
    PublishTimeoutError,
    TLSError,
    TopicError,
    TransportError,
)
from ..status import OFFLINE, ONLINE, status_topic
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
paho_log = logging.getLogger("voicebus.mqtt.paho")
"""paho's own messages (``failed to receive on socket`` when a broker goes away is
reported again, as a warning, by the transport)."""

T = TypeVar("T")

BROKER_HINT = "is Mosquitto running? start one with: mosquitto -c mosquitto/mosquitto.conf"
_AUTH_CODES = {4, 5, 134, 135, 140}
_REQUEUED = -1
"""PUBACK future result of a message put back into the outbox when the link dropped."""
_FLUSH_WINDOW = 100
"""QoS 1 messages in flight while the outbox is flushed after a reconnect."""
_PACKET_OVERHEAD = 16
"""Fixed header, lengths and packet id of a PUBLISH, on top of topic, properties, payload."""


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
        delay = min(self.reconnect_max_delay, self.reconnect_delay * 2 ** min(attempt, 30))
        jitter = min(max(self.reconnect_jitter, 0.0), 1.0)
        return float(delay * (1.0 - jitter * random.random()))


class _LinkLost(Exception):
    """The connection an operation was running on dropped."""


class MqttTransport:
    """A connection to an MQTT 5 broker that survives broker restarts."""

    def __init__(self, url: BusURL, options: MqttOptions) -> None:
        self.url = url.redacted()
        self._url = url
        self.options = options
        self._client: aiomqtt.Client | None = None
        self._paho: paho_mqtt.Client | None = None
        self._on_message: MessageCallback | None = None
        self._inflight: dict[int, tuple[Message, asyncio.Future[int]]] = {}
        self._outbox: deque[Message] = deque()
        self._recent: deque[tuple[float, Message]] = deque()
        self._online = False
        self._closing = False
        self._failed: Exception | None = None
        self._filters: dict[str, int] = {}
        self._dropped_filters: set[str] = set()
        self._expected: dict[str, frozenset[int]] = {}
        self._copies: dict[tuple[Any, ...], set[int]] = {}
        self._paused = False
        self._tls: ssl.SSLContext | None = None
        self._link_lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._broker_max_packet: int | None = None
        self._payload_limit = options.max_payload_size
        self.session_present = False
        self.reconnects = 0
        self.on_publish_failed: Callable[[Message, Exception], None] | None = None
        """Called for an outbox message the broker refused after a reconnect (no
        caller is waiting for it any more); the bus records a dead letter."""

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def outbox_size(self) -> int:
        """Messages waiting for the link (not counting those in flight)."""
        return len(self._outbox)

    # --- connection ------------------------------------------------------------

    def _status_topic(self) -> str | None:
        o = self.options
        if not o.status or o.will is not None or not o.client_id:
            return None
        return status_topic(o.client_id)

    def _tls_context(self) -> ssl.SSLContext | None:
        o = self.options
        if not self._url.tls:
            return None
        if self._tls is not None:
            return self._tls
        try:
            context = ssl.create_default_context(cafile=o.ca_file)
            if o.cert_file:
                context.load_cert_chain(o.cert_file, o.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(f"cannot load TLS files for {self.url}: {exc}") from None
        if o.tls_insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._tls = context
        return context

    def _new_client(self) -> aiomqtt.Client:
        o = self.options
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if o.session_expiry:
            props.SessionExpiryInterval = int(o.session_expiry)
        will = None
        if o.will is not None:
            will = aiomqtt.Will(o.will.topic, o.will.payload, o.will.qos, o.will.retain)
        else:
            topic = self._status_topic()
            if topic is not None:
                will = aiomqtt.Will(topic, OFFLINE, 1, True)
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
            # Without TCP_NODELAY a PUBACK followed by a small publish waits for the
            # peer's delayed ACK: ~40 ms per hop (measured: QoS 1 round trip 88 ms).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            will=will,
            logger=paho_log,
        )

    async def connect(self, on_message: MessageCallback) -> None:
        """Connect once (typed errors, no retry); reconnect on later losses."""
        self._on_message = on_message
        self._closing = False
        self._failed = None
        client = await self._open()
        if not await self._resume(client):
            raise BrokerUnavailableError(f"connection to {self.url} dropped right after connecting")
        self._link_lost.clear()
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"voicebus-mqtt-{self.options.client_id}"
        )

    async def _open(self) -> aiomqtt.Client:
        """A fresh, connected aiomqtt client with our hot paths installed."""
        client = self._new_client()
        self._install(client)
        paho = client._client
        loop = asyncio.get_running_loop()
        # The link can break after the TCP/TLS handshake but before CONNACK (a TLS 1.3
        # server refusing our certificate sends its alert then): aiomqtt would wait
        # out its timeout. paho logs the cause and reports the loss; we race both.
        failure: asyncio.Future[str] = loop.create_future()
        errors: list[str] = []
        aiomqtt_on_disconnect: Any = paho.on_disconnect

        def on_log(c: Any, userdata: Any, level: int, buf: str) -> None:
            if level == paho_mqtt.MQTT_LOG_ERR:
                errors.append(buf)

        def on_disconnect(c: Any, userdata: Any, *args: Any) -> None:
            if not failure.done():
                reason = errors[-1] if errors else f"connection closed ({args[1:2]})"
                loop.call_soon_threadsafe(_set_result, failure, reason)
            aiomqtt_on_disconnect(c, userdata, *args)

        paho.on_log = on_log
        paho.on_disconnect = on_disconnect
        entering = asyncio.ensure_future(client.__aenter__())
        try:
            await asyncio.wait((entering, failure), return_when=asyncio.FIRST_COMPLETED)
            if not entering.done():  # a CONNACK read just before the loss still counts
                await asyncio.wait((entering,), timeout=0.05)
            if not entering.done():
                entering.cancel()
                paho._sock_close()
                raise self._connect_error(aiomqtt.MqttError(failure.result()))
            entering.result()
        except aiomqtt.MqttError as exc:
            raise self._connect_error(exc) from None
        except asyncio.CancelledError:
            entering.cancel()
            paho.disconnect()
            raise
        finally:
            paho.on_log = None
            paho.on_disconnect = aiomqtt_on_disconnect
            if not failure.done():
                failure.cancel()
        self._client = client
        self._paho = client._client
        self._payload_limit = self.options.max_payload_size
        if self._broker_max_packet:
            self._payload_limit = min(
                self._payload_limit, self._broker_max_packet - _PACKET_OVERHEAD
            )
        client._disconnected.add_done_callback(lambda fut: self._lost(client, fut))
        return client

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
            return TLSError(
                f"TLS with {self.url} failed: {text} (check the CA file, the client "
                "certificate and key, and that the server certificate names this host)"
            )
        return BrokerUnavailableError(f"cannot connect to {self.url}: {text}; {BROKER_HINT}")

    def _install(self, client: aiomqtt.Client) -> None:
        """Take over aiomqtt's hot paths on a new client (before it connects, so a
        persistent session's queued messages already take our path)."""
        paho = client._client
        aiomqtt_on_publish: Any = paho.on_publish
        aiomqtt_on_connect: Any = paho.on_connect
        inflight = self._inflight

        def on_connect(
            c: paho_mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
        ) -> None:
            self.session_present = bool(getattr(flags, "session_present", False))
            self._broker_max_packet = getattr(props, "MaximumPacketSize", None)
            aiomqtt_on_connect(c, userdata, flags, reason, props)

        def on_publish(
            c: paho_mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
        ) -> None:
            entry = inflight.get(mid)
            if entry is not None:
                fut = entry[1]
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

        paho.on_connect = on_connect
        paho.on_publish = on_publish
        paho._handle_publish = handle_publish  # type: ignore[method-assign]

    def _lost(self, client: aiomqtt.Client, fut: asyncio.Future[None]) -> None:
        """`client`'s link dropped: requeue what is in flight, wake the supervisor."""
        error = None if fut.cancelled() else fut.exception()
        if client is not self._client:
            return
        self._client = None
        self._paho = None
        self._online = False
        inflight = list(self._inflight.values())
        self._inflight.clear()
        for _, pending in inflight:  # wake whoever waits for a PUBACK
            if not pending.done():
                pending.set_result(_REQUEUED)
        if self._closing:
            if inflight:
                log.warning("%d unacknowledged message(s) lost at stop", len(inflight))
            return
        log.warning("connection to %s lost: %s", self.url, error or "closed by the broker")
        requeue = self._recently_acknowledged() + [message for message, _ in inflight]
        self._outbox.extendleft(reversed(requeue))
        if not self.options.reconnect:
            self._failed = TransportError(f"connection to {self.url} lost: {error}")
        self._link_lost.set()

    async def _supervise(self) -> None:
        while not self._closing:
            await self._link_lost.wait()
            self._link_lost.clear()
            if self._closing or not self.options.reconnect:
                return
            await self._reconnect()

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._closing:
            await asyncio.sleep(self.options.backoff(attempt))
            attempt += 1
            try:
                client = await self._open()
            except (AuthenticationError, TLSError) as exc:
                log.error("reconnect to %s refused: %s", self.url, exc)
                continue
            except TransportError as exc:
                log.info("reconnect to %s failed (attempt %d): %s", self.url, attempt, exc)
                continue
            except Exception:  # never let the supervisor die: retry with backoff
                log.exception("reconnect to %s failed (attempt %d)", self.url, attempt)
                continue
            if await self._resume(client):
                self.reconnects += 1
                log.info(
                    "reconnected to %s (session %s)",
                    self.url,
                    "resumed" if self.session_present else "new",
                )
                return
            self._link_lost.clear()

    async def _resume(self, client: aiomqtt.Client) -> bool:
        """Announce, re-subscribe and flush the outbox on a new connection.

        True when `client` is connected and the outbox empty; publish goes direct then.
        """
        try:
            topic = self._status_topic()
            if topic is not None:
                await self._step(self._announce(client, topic, ONLINE), "announcing online")
            for topic_filter in list(self._dropped_filters):
                unsubscribing = self._until_lost(client, client.unsubscribe(topic_filter))
                await self._step(unsubscribing, f"unsubscribing {topic_filter!r}")
            self._dropped_filters.clear()
            for topic_filter, sid in list(self._filters.items()):
                subscribing = self._subscribe_on(client, topic_filter, sid, 1, resubscribe=True)
                await self._step(subscribing, f"re-subscribing {topic_filter!r}")
            await self._flush(client)
        except _LinkLost:
            return False
        if self._client is not client:
            return False
        self._online = True
        if self._paused:
            self._stop_reading()
        return True

    async def _step(self, operation: Coroutine[Any, Any, Any], what: str) -> None:
        """One step of resuming a session: a failure is logged, the link loss raised."""
        try:
            await operation
        except (aiomqtt.MqttError, TransportError, TimeoutError) as exc:
            log.error("%s on %s failed: %s", what, self.url, exc)

    async def _announce(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        fut = self._send(client._client, Message(topic, payload, 1, True))
        if fut is None:
            return
        code = await asyncio.wait_for(fut, self.options.publish_timeout)
        if code == _REQUEUED:
            raise _LinkLost
        if code >= 0x80:
            log.warning(
                "%s refused the status on %s (code %d): check the ACL", self.url, topic, code
            )

    async def _flush(self, client: aiomqtt.Client) -> None:
        """Send the outbox in order, up to `_FLUSH_WINDOW` QoS 1 messages in flight."""
        paho = client._client
        outbox = self._outbox
        window: deque[tuple[Message, asyncio.Future[int]]] = deque()
        while outbox or window:
            while outbox and len(window) < _FLUSH_WINDOW:
                if self._client is not client:
                    raise _LinkLost
                message = outbox.popleft()
                fut = self._send(paho, message)
                if fut is not None:
                    window.append((message, fut))
            if not window:
                continue
            message, fut = window.popleft()
            code = await fut
            if code == _REQUEUED:
                raise _LinkLost
            if code >= 0x80:
                self._refused(message, code)
            elif self.options.resend_window:
                self._acknowledged(message)

    def _send(self, paho: paho_mqtt.Client, message: Message) -> asyncio.Future[int] | None:
        """Publish on `paho`; the PUBACK future for QoS 1 (registered in flight)."""
        info = paho.publish(
            message.topic,
            message.payload,
            message.qos,
            message.retain,
            _pack(message),  # type: ignore[arg-type]
        )
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            self._outbox.appendleft(message)
            raise _LinkLost
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._refused(message, int(info.rc))
            return None
        if message.qos == 0:
            return None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._inflight[info.mid] = (message, fut)
        fut.add_done_callback(lambda _: self._forget(info.mid, fut))
        return fut

    def _forget(self, mid: int, fut: asyncio.Future[int]) -> None:
        entry = self._inflight.get(mid)
        if entry is not None and entry[1] is fut:
            del self._inflight[mid]

    def _refused(self, message: Message, code: int) -> None:
        """A message nobody awaits any more was refused: log it and tell the bus."""
        error = self._publish_error(message, code)
        log.error("%s", error)
        if self.on_publish_failed is not None:
            self.on_publish_failed(message, error)

    def _publish_error(self, message: Message, code: int) -> TransportError:
        if code == 0x87:
            return NotAuthorizedError(
                f"{self.url} refused the publish on {message.topic} (not authorized: "
                "check the ACL for this user)"
            )
        return TransportError(f"{self.url} refused the publish on {message.topic} (code {code})")

    async def _until_lost(self, client: aiomqtt.Client, operation: Coroutine[Any, Any, T]) -> T:
        """Await `operation`, or raise `_LinkLost` as soon as `client`'s link drops
        (aiomqtt would wait out its timeout)."""
        task = asyncio.ensure_future(operation)
        lost = client._disconnected
        try:
            await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return task.result()
        task.cancel()
        raise _LinkLost

    async def close(self) -> None:
        """Flush what the outbox holds (briefly), publish ``offline``, disconnect."""
        self._closing = True
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            try:
                await supervisor
            except asyncio.CancelledError:
                pass
        client = self._client
        if client is not None:
            try:
                if self._outbox:
                    await asyncio.wait_for(self._flush(client), self.options.publish_timeout)
                topic = self._status_topic()
                if topic is not None:
                    await self._announce(client, topic, OFFLINE)
            except (_LinkLost, TimeoutError, TransportError) as exc:
                log.debug("clean stop on %s: %s", self.url, exc)
        if self._outbox:
            log.warning(
                "%d message(s) in the outbox of %s were not sent before stop",
                len(self._outbox),
                self.url,
            )
            self._outbox.clear()
        self._client = None
        self._paho = None
        self._online = False
        if client is None:
            return
        try:
            await client.__aexit__(None, None, None)
        except aiomqtt.MqttError as exc:
            log.debug("disconnect from %s: %s", self.url, exc)

    # --- receiving --------------------------------------------------------------

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

    # --- publish / subscribe -----------------------------------------------------

    def _check_open(self) -> None:
        if self._closing or self._on_message is None:
            raise BusStateError(f"not connected to {self.url}")
        if self._failed is not None:
            raise self._failed

    def _enqueue(self, message: Message) -> None:
        self._check_open()
        if len(self._outbox) >= self.options.outbox_size:
            raise BackpressureError(
                f"the outbox for {self.url} is full ({self.options.outbox_size} messages "
                "waiting for the broker to come back); slow down or raise outbox_size"
            )
        self._outbox.append(message)

    async def publish(self, message: Message) -> None:
        """Publish; QoS 1 returns on the PUBACK, or once the message is in the outbox
        while the link is down."""
        if not message.validated:  # encode() built the topic from a checked template
            check_topic(message.topic)
        size = len(message.payload)
        if size > self._payload_limit:
            raise self._too_large(message)
        if not self._online:
            self._enqueue(message)
            return
        paho = self._paho
        assert paho is not None
        props = _pack(message)
        if (
            self._broker_max_packet
            and size + len(props.packed) + 4 * len(message.topic) + _PACKET_OVERHEAD
            > self._broker_max_packet
        ):
            raise self._too_large(message)
        info = paho.publish(message.topic, message.payload, message.qos, message.retain, props)  # type: ignore[arg-type]
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                self._enqueue(message)
                return
            raise TransportError(f"cannot publish to {self.url}: {paho_mqtt.error_string(info.rc)}")
        if message.qos == 0:
            return
        mid = info.mid
        inflight = self._inflight
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        inflight[mid] = (message, fut)
        try:
            code = await asyncio.wait_for(fut, self.options.publish_timeout)
        except TimeoutError:
            raise PublishTimeoutError(
                f"{self.url} did not acknowledge a publish on {message.topic} within "
                f"{self.options.publish_timeout}s"
            ) from None
        finally:
            entry = inflight.get(mid)
            if entry is not None and entry[1] is fut:
                del inflight[mid]
        if code >= 0x80:
            raise self._publish_error(message, code)
        if self.options.resend_window:
            self._acknowledged(message)

    def _acknowledged(self, message: Message) -> None:
        """Keep an acknowledged message for `resend_window` seconds."""
        recent = self._recent
        now = asyncio.get_running_loop().time()
        recent.append((now, message))
        horizon = now - self.options.resend_window
        while recent and (recent[0][0] < horizon or len(recent) > self.options.outbox_size):
            recent.popleft()

    def _recently_acknowledged(self) -> list[Message]:
        """Messages acknowledged within `resend_window` before now (and forget them)."""
        if not self._recent:
            return []
        horizon = asyncio.get_running_loop().time() - self.options.resend_window
        again = [message for at, message in self._recent if at >= horizon and message.qos]
        self._recent.clear()
        if again:
            log.info("sending %d recently acknowledged message(s) again", len(again))
        return again

    def _too_large(self, message: Message) -> PayloadTooLargeError:
        limit = self._payload_limit
        where = "max_payload_size"
        if self._broker_max_packet and limit >= self._broker_max_packet - _PACKET_OVERHEAD:
            where = f"the broker's maximum packet size {self._broker_max_packet}"
        return PayloadTooLargeError(
            f"payload of {len(message.payload)} bytes on {message.topic} exceeds the "
            f"limit of {limit} bytes ({where}); send large data out of band"
        )

    async def subscribe(self, topic_filter: str, subscription_id: int, qos: int = 1) -> None:
        """Subscribe now, or on the next connection while the link is down."""
        self._check_open()
        check_filter(topic_filter)
        self._filters[topic_filter] = subscription_id
        self._dropped_filters.discard(topic_filter)
        self._expected.clear()
        client = self._client
        if client is None:
            return
        try:
            await self._subscribe_on(client, topic_filter, subscription_id, qos)
        except _LinkLost:
            return

    async def _subscribe_on(
        self,
        client: aiomqtt.Client,
        topic_filter: str,
        subscription_id: int,
        qos: int,
        *,
        resubscribe: bool = False,
    ) -> None:
        props = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
        props.SubscriptionIdentifier = subscription_id
        # On a re-subscribe, retained messages only come for a subscription the
        # broker did not keep (retain handling 1): no replay of what we had.
        options = SubscribeOptions(qos=qos, retainHandling=1 if resubscribe else 0)
        try:
            codes = await self._until_lost(
                client, client.subscribe(topic_filter, options=options, properties=props)
            )
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
        client = self._client
        if client is None:
            if self.options.session_expiry and not self._closing:
                self._dropped_filters.add(topic_filter)
            return
        try:
            await self._until_lost(client, client.unsubscribe(topic_filter))
        except _LinkLost:
            if self.options.session_expiry:
                self._dropped_filters.add(topic_filter)
        except aiomqtt.MqttError as exc:
            log.debug("unsubscribe %s: %s", topic_filter, exc)

    # --- flow control --------------------------------------------------------------

    # A paused transport keeps reading while a new connection is being resumed
    # (status, re-subscribe, outbox: their acknowledgements must be read), and
    # stops once that is done.

    def pause_reading(self) -> None:
        if self._paused:
            return
        self._paused = True
        if self._online:
            self._stop_reading()

    def _stop_reading(self) -> None:
        sock = self._paho.socket() if self._paho is not None else None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        paho = self._paho
        client = self._client
        sock = paho.socket() if paho is not None else None
        if paho is None or client is None or sock is None:
            return

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


def _set_result(fut: asyncio.Future[str], value: str) -> None:
    if not fut.done():
        fut.set_result(value)


def _pack(message: Message) -> PackedProperties:
    return PackedProperties(
        pack_publish_properties(
            content_type=message.content_type,
            correlation_data=message.correlation_data,
            user_properties=message.user_properties,
        )
    )
