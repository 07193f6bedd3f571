"""The MQTT 5 transport (``mqtt://``, ``mqtts://``) on aiomqtt.

aiomqtt owns each connection; `MqttTransport` owns what aiomqtt leaves to its
users, composed from one module per concept:

- **Reconnect**: when the link drops, a supervisor task reconnects with
  exponential backoff and jitter (`backoff.py`), using a *fresh* aiomqtt client
  per connection (`link.py`), re-subscribes every filter
  (`session_filters.py`) and flushes the outbox.
- **Outbox** (`outbox.py`): while the link is down, `publish` puts messages in a
  bounded outbox and returns (`BackpressureError` when it is full; nothing is
  dropped silently). QoS 1 messages still waiting for their PUBACK when the link
  drops are put back at the head of the outbox and sent again (receivers
  de-duplicate by event id).
- **Status**: a retained ``voicebus/status/<clientId>`` ``online`` on every
  connect, ``offline`` on `close` and as the Last Will.

The per-message hot path talks to the paho client directly: publishes carry
pre-packed properties and complete on our own PUBACK futures; received PUBLISH
packets are decoded by `properties.py` and handed to the bus callback without a
task per message (`link.py`). Settings live in `options.py`;
aiomqtt/paho errors become the `VoicebusError` tree in `errors.py`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, cast

import aiomqtt
import paho.mqtt.client as paho_mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ...errors import (
    AuthenticationError,
    BrokerUnavailableError,
    BusStateError,
    PayloadTooLargeError,
    PublishTimeoutError,
    TLSError,
    TransportError,
)
from ...wire.status import OFFLINE, ONLINE
from ...wire.topics import check_filter, check_topic
from ..base import Message, MessageCallback
from ..url import BusURL
from .errors import BROKER_HINT, connect_error, publish_error, subscribe_error
from .link import (
    LinkLost,
    PendingAck,
    enter,
    give_up,
    install,
    new_client,
    paho_log,
    start_reading,
    stop_reading,
    until_lost,
)
from .options import MqttOptions, tls_context
from .outbox import REQUEUED, Outbox
from .paho_internals import check_versions, link_lost, paho_client
from .properties import pack_message_properties
from .session_filters import SessionFilters

__all__ = ["BROKER_HINT", "MqttOptions", "MqttTransport", "paho_log"]

log = logging.getLogger("voicebus.mqtt")

_FLUSH_WINDOW = 100
"""QoS 1 messages in flight while the outbox is flushed after a reconnect."""
_PACKET_OVERHEAD = 16
"""Fixed header, lengths and packet id of a PUBLISH, on top of topic, properties, payload."""


class MqttTransport:
    """A connection to an MQTT 5 broker that survives broker restarts."""

    def __init__(self, url: BusURL, options: MqttOptions) -> None:
        self.url = url.redacted()
        self._url = url
        self.options = options
        self._link: aiomqtt.Client | None = None  # the current link (its aiomqtt client)
        self._paho: paho_mqtt.Client | None = None
        self._on_message: MessageCallback | None = None
        self._defer_acks = False
        self._outbox = Outbox(self.url, options.outbox_size, options.resend_window)
        self._inflight = self._outbox.inflight  # the hot paths' shortcut
        self._online = False
        self._closing = False
        self._failed: Exception | None = None
        self._filters = SessionFilters()
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
        return self._link is not None

    @property
    def outbox_size(self) -> int:
        """Messages waiting for the link (not counting those in flight)."""
        return len(self._outbox)

    # --- connection ------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext | None:
        if self._tls is None:
            self._tls = tls_context(self._url, self.options)
        return self._tls

    async def connect(self, on_message: MessageCallback, *, defer_acks: bool = False) -> None:
        """Connect once (typed errors, no retry); reconnect on later losses.

        With `defer_acks`, a received QoS 1 message is acknowledged when its
        `Message.ack` token comes back through `ack` (PUBACKs in receive order;
        none for a connection that is gone: the broker resends those messages).
        `UnsupportedDependencyError` when paho-mqtt or aiomqtt is not a version
        the transport was verified with.
        """
        check_versions()
        self._on_message = on_message
        self._defer_acks = defer_acks
        self._closing = False
        self._failed = None
        client = await self._open()
        try:
            if not await self._resume(client):
                raise BrokerUnavailableError(
                    f"connection to {self.url} dropped right after connecting"
                )
        except BaseException:  # failed or cancelled: leave no client behind
            self._link = None
            self._paho = None
            self._online = False
            await self._exit(client)
            raise
        self._link_lost.clear()
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"voicebus-mqtt-{self.options.client_id}"
        )

    async def _open(self) -> aiomqtt.Client:
        """A fresh, connected aiomqtt client with our hot paths installed."""
        deliver = self._on_message
        assert deliver is not None  # set by `connect`
        client = new_client(self._url, self.options, self._tls_context())
        acks = install(
            client,
            self._inflight,
            deliver,
            self._filters.is_copy,
            self._connack,
            defer_acks=self._defer_acks,
            max_unacked=self.options.max_unacked,
        )
        try:
            await enter(client)
        except aiomqtt.MqttError as exc:
            raise connect_error(self.url, exc) from None
        self._link = client
        self._paho = paho_client(client)
        self._payload_limit = self.options.max_payload_size
        if self._broker_max_packet:
            self._payload_limit = min(
                self._payload_limit, self._broker_max_packet - _PACKET_OVERHEAD
            )
        lost = link_lost(client)
        lost.add_done_callback(lambda _: acks.close())
        lost.add_done_callback(lambda fut: self._lost(client, fut))
        return client

    def _connack(self, session_present: bool, max_packet: int | None) -> None:
        self.session_present = session_present
        self._broker_max_packet = max_packet

    def _lost(self, client: aiomqtt.Client, fut: asyncio.Future[None]) -> None:
        """`client`'s link dropped: requeue what is in flight, wake the supervisor."""
        error = None if fut.cancelled() else fut.exception()
        if client is not self._link:
            return
        self._link = None
        self._paho = None
        self._online = False
        if self._closing:
            self._abandon()
            return
        reason = error or "the broker closed the connection"
        log.warning("connection to %s lost: %s", self.url, reason)
        self._outbox.requeue(self._outbox.release())  # wakes whoever waits for a PUBACK
        if not self.options.reconnect:
            self._failed = TransportError(f"connection to {self.url} lost: {reason}")
        self._link_lost.set()

    def _give_up(self, client: aiomqtt.Client, reason: str) -> None:
        """End `client`'s link now, as lost (what is in flight goes back to the outbox)."""
        give_up(client, TransportError(reason))
        self._lost(client, link_lost(client))

    def _abandon(self) -> None:
        """Closing: fail every publish still waiting for its PUBACK."""
        lost = self._outbox.fail(
            lambda message: TransportError(
                f"connection to {self.url} closed before the broker acknowledged "
                f"the publish on {message.topic}"
            )
        )
        if lost:
            log.warning("%d unacknowledged message(s) lost at stop", lost)

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
            topic = self.options.status_topic()
            if topic is not None:
                await self._step(self._announce(client, topic, ONLINE), "announcing online")
            for topic_filter in list(self._filters.dropped):
                unsubscribing = until_lost(client, client.unsubscribe(topic_filter))
                await self._step(unsubscribing, f"unsubscribing {topic_filter!r}")
            self._filters.dropped.clear()
            for topic_filter, sid in list(self._filters.ids.items()):
                subscribing = self._subscribe_on(client, topic_filter, sid, 1, resubscribe=True)
                await self._step(subscribing, f"re-subscribing {topic_filter!r}")
            await self._flush(client)
        except LinkLost:
            return False
        if self._link is not client:
            return False
        self._online = True
        if self._paused:
            stop_reading(self._paho)
        return True

    async def _step(self, operation: Coroutine[Any, Any, Any], what: str) -> None:
        """One step of resuming a session: a failure is logged, the link loss raised."""
        try:
            await operation
        except (aiomqtt.MqttError, TransportError, TimeoutError) as exc:
            log.error("%s on %s failed: %s", what, self.url, exc)

    async def _announce(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        fut = self._send(paho_client(client), Message(topic, payload, 1, True))
        if fut is None:
            return
        code = await asyncio.wait_for(fut, self.options.publish_timeout)
        if code == REQUEUED:
            raise LinkLost
        if code >= 0x80:
            log.warning(
                "%s refused the status on %s (code %d): check the ACL", self.url, topic, code
            )

    async def _flush(self, client: aiomqtt.Client) -> None:
        """Send the outbox in order, up to `_FLUSH_WINDOW` QoS 1 messages in flight."""
        paho = paho_client(client)
        queued = self._outbox.queued
        window: deque[tuple[Message, asyncio.Future[int]]] = deque()
        while queued or window:
            while queued and len(window) < _FLUSH_WINDOW:
                if self._link is not client:
                    raise LinkLost
                message = queued.popleft()
                fut = self._send(paho, message)
                if fut is not None:
                    window.append((message, fut))
            if not window:
                continue
            message, fut = window.popleft()
            if not fut.done():  # never cancel `fut`: a lost link requeues its message
                await asyncio.wait((fut,), timeout=self.options.publish_timeout)
                if not fut.done():
                    self._give_up(
                        client,
                        f"no PUBACK within {self.options.publish_timeout}s "
                        "while sending the outbox",
                    )
                    raise LinkLost
            code = fut.result()
            if code == REQUEUED:
                raise LinkLost
            if code >= 0x80:
                self._refused(message, code)
            elif self.options.resend_window:
                self._outbox.acknowledged(message)

    def _send(self, paho: paho_mqtt.Client, message: Message) -> asyncio.Future[int] | None:
        """Publish on `paho`; the PUBACK future for QoS 1 (registered in flight).

        A message too large for the broker (a packet over its Maximum Packet Size
        gets us disconnected) is not sent but refused, like a direct `publish`.
        """
        props = pack_message_properties(message)
        if self._over_broker_limit(message, props.packed):
            self._undeliverable(message, self._too_large(message))
            return None
        info = paho.publish(
            message.topic,
            message.payload,
            message.qos,
            message.retain,
            props,  # type: ignore[arg-type]
        )
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            self._outbox.queued.appendleft(message)
            raise LinkLost
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._refused(message, int(info.rc))
            return None
        if message.qos == 0:
            return None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._inflight[info.mid] = (message, fut)
        fut.add_done_callback(lambda _: self._outbox.forget(info.mid, fut))
        return fut

    def _refused(self, message: Message, code: int) -> None:
        """A message nobody awaits any more was refused with reason `code`."""
        self._undeliverable(message, publish_error(self.url, message.topic, code))

    def _undeliverable(self, message: Message, error: Exception) -> None:
        """A message nobody awaits any more cannot be sent: log it and tell the bus."""
        log.error("%s", error)
        if self.on_publish_failed is not None:
            self.on_publish_failed(message, error)

    async def close(self) -> None:
        """Flush what the outbox holds and wait for the PUBACKs still due (together
        at most `publish_timeout`), publish ``offline``, disconnect.

        A publish still waiting for its PUBACK then fails at once (`TransportError`).
        The session state (filters, outbox) is reset: connected again, the
        transport starts afresh, as a new one would (and as the memory transport does).
        """
        self._closing = True
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            try:
                await supervisor
            except asyncio.CancelledError:
                pass
        client = self._link
        if client is not None:
            try:
                await asyncio.wait_for(self._settle(client), self.options.publish_timeout)
                topic = self.options.status_topic()
                if topic is not None and self._link is client:
                    await self._announce(client, topic, OFFLINE)
            except (LinkLost, TimeoutError, TransportError) as exc:
                log.debug("clean stop on %s: %s", self.url, exc)
        dropped = self._outbox.drop()
        if dropped:
            log.warning(
                "%d message(s) in the outbox of %s were not sent before stop", dropped, self.url
            )
        self._abandon()
        self._link = None
        self._paho = None
        self._online = False
        self._filters = SessionFilters()
        self._paused = False
        if client is not None:
            await self._exit(client)

    async def _settle(self, client: aiomqtt.Client) -> None:
        """Send what the outbox holds, then wait for every PUBACK still due."""
        if self._outbox:
            await self._flush(client)
        waiting = [fut for _, fut in self._inflight.values()]
        if waiting:
            await asyncio.wait(waiting)  # not wait_for/gather: never cancel a publisher's future

    async def _exit(self, client: aiomqtt.Client) -> None:
        """Disconnect `client` (aiomqtt's ``__aexit__``: socket, tasks, lock)."""
        try:
            await client.__aexit__(None, None, None)
        except aiomqtt.MqttError as exc:
            log.debug("disconnect from %s: %s", self.url, exc)

    def ack(self, token: object) -> None:
        """Acknowledge a received QoS 1 message (``connect(..., defer_acks=True)``)."""
        pending = cast(PendingAck, token)
        pending.acks.release(pending)

    # --- publish / subscribe -----------------------------------------------------

    def _check_open(self) -> None:
        if self._closing or self._on_message is None:
            raise BusStateError(f"not connected to {self.url}")
        failed = self._failed
        if failed is not None:  # a fresh error each time: no traceback growing per retry
            raise type(failed)(*failed.args) from None

    async def publish(self, message: Message) -> None:
        """Publish; QoS 1 returns on the PUBACK, or once the message is in the outbox
        while the link is down."""
        if not message.validated:  # encode() built the topic from a checked template
            check_topic(message.topic)
        if len(message.payload) > self._payload_limit:
            raise self._too_large(message)
        if not self._online:
            self._check_open()
            self._outbox.put(message)
            return
        paho = self._paho
        assert paho is not None
        props = pack_message_properties(message)
        if self._over_broker_limit(message, props.packed):
            raise self._too_large(message)
        info = paho.publish(message.topic, message.payload, message.qos, message.retain, props)  # type: ignore[arg-type]
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                self._check_open()
                self._outbox.put(message)
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
            self._outbox.forget(mid, fut)
        if code >= 0x80:
            raise publish_error(self.url, message.topic, code)
        if self.options.resend_window and code != REQUEUED:  # requeued: not acknowledged
            self._outbox.acknowledged(message)

    def _over_broker_limit(self, message: Message, packed_properties: bytes) -> bool:
        """Would this PUBLISH exceed the broker's Maximum Packet Size (from CONNACK)?
        (Topic counted at 4 bytes a character: the UTF-8 worst case.)"""
        limit = self._broker_max_packet
        if not limit:
            return False
        size = len(message.payload) + len(packed_properties) + 4 * len(message.topic)
        return size + _PACKET_OVERHEAD > limit

    def _too_large(self, message: Message) -> PayloadTooLargeError:
        size = len(message.payload)
        if size <= self._payload_limit and self._broker_max_packet:  # topic and properties
            return PayloadTooLargeError(
                f"the publish of {size} bytes on {message.topic} exceeds, with its topic "
                f"and properties, the broker's maximum packet size {self._broker_max_packet}; "
                "send large data out of band"
            )
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
        self._filters.add(topic_filter, subscription_id)
        client = self._link
        if client is None:
            return
        try:
            await self._subscribe_on(client, topic_filter, subscription_id, qos)
        except LinkLost:
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
            codes = await until_lost(
                client, client.subscribe(topic_filter, options=options, properties=props)
            )
        except aiomqtt.MqttError as exc:
            raise TransportError(f"cannot subscribe {topic_filter!r}: {exc}") from None
        for code in codes:
            error = subscribe_error(self.url, topic_filter, code)
            if error is not None:
                self._filters.remove(topic_filter)
                raise error

    async def unsubscribe(self, topic_filter: str) -> None:
        self._filters.remove(topic_filter)
        client = self._link
        if client is None:
            if self.options.session_expiry and not self._closing:
                self._filters.dropped.add(topic_filter)
            return
        try:
            await until_lost(client, client.unsubscribe(topic_filter))
        except LinkLost:
            if self.options.session_expiry:
                self._filters.dropped.add(topic_filter)
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
            stop_reading(self._paho)

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        client = self._link
        if client is not None:
            start_reading(client)
