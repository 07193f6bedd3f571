"""The MQTT 5 transport (``mqtt://``, ``mqtts://``) on aiomqtt.

aiomqtt owns each connection; `MqttTransport` owns what aiomqtt leaves to its
users, composed from one module per concept:

- **Reconnect**: when the link drops, a supervisor task reconnects with
  exponential backoff and jitter (`backoff.py`), using a *fresh* aiomqtt client
  per connection (`link.py`), re-subscribes every filter
  (`subscriber.py`) and flushes the outbox (`publisher.py`).
- **Outbox** (`outbox.py`): while the link is down, `publish` puts messages in a
  bounded outbox and returns (`BackpressureError` when it is full; nothing is
  dropped silently). QoS 1 messages still waiting for their PUBACK when the link
  drops are put back at the head of the outbox and sent again (receivers
  de-duplicate by source and event id).
- **Failover** (`failover.py`): a URL may name several brokers; the first that
  answers is used, and each reconnect attempt goes to the next.
- **MQTT 3.1.1** (``protocol="3.1.1"``): no properties; the envelope is folded
  into the payload on ``voicebus/`` topics (`wire/envelope311.py`).
- **Status**: a retained ``voicebus/status/<clientId>`` ``online`` on every
  connect, ``offline`` on `close` and as the Last Will (cleared instead for a
  generated client id: `voicebus.wire.status`).
- **Flow control** (`receiver.py`): `pause_reading` never stops reading the
  socket (keepalives go on); received messages are held and their PUBACKs
  withheld, and the broker stops at the client's Receive Maximum.

The per-message hot paths talk to the paho client directly: publishing
(`publisher.py`) with pre-packed properties, completing our own PUBACK futures;
receiving (`receiver.py`): PUBLISH packets decoded by `properties.py` and handed
to the bus callback without a task per message. Settings live in `options.py`;
aiomqtt/paho errors become the `VoicebusError` tree in `errors.py`; every private
paho/aiomqtt access is in `paho_internals.py`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, cast

import aiomqtt
import paho.mqtt.client as paho_mqtt

from ...errors import (
    AuthenticationError,
    BrokerUnavailableError,
    BusStateError,
    TLSError,
    TransportError,
)
from ...wire.status import ONLINE
from ..base import Message, MessageCallback
from ..url import BusURL
from .errors import BROKER_HINT, connect_error, refusal
from .failover import Brokers
from .link import (
    LinkLost,
    enter,
    give_up,
    install,
    new_client,
    paho_log,
)
from .options import MqttOptions, tls_context
from .paho_internals import check_versions, link_lost, paho_client
from .publisher import Publisher, PublishFailed
from .receiver import PendingAck, Receiver
from .subscriber import Subscriber

__all__ = ["BROKER_HINT", "MqttOptions", "MqttTransport", "paho_log"]

log = logging.getLogger("voicebus.mqtt")


class MqttTransport:
    """A connection to an MQTT 5 broker that survives broker restarts."""

    def __init__(self, url: BusURL, options: MqttOptions) -> None:
        self.url = url.redacted()
        self._url = url
        self._brokers = Brokers(url.brokers)
        self.options = options
        self._link: aiomqtt.Client | None = None  # the current link (its aiomqtt client)
        self._paho: paho_mqtt.Client | None = None
        self._on_message: MessageCallback | None = None
        self._receiver: Receiver | None = None
        self._publisher = Publisher(self.url, options, self._check_open)
        self._outbox = self._publisher.outbox
        self._inflight = self._outbox.inflight  # the hot paths' shortcut
        self._closing = False
        self._failed: Exception | None = None
        self._subscriber = Subscriber(self.url, options)
        self._tls: ssl.SSLContext | None = None
        self._link_lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._broker_max_packet: int | None = None
        self.session_present = False
        self.reconnects = 0

    @property
    def on_publish_failed(self) -> PublishFailed | None:
        """Called for an outbox message the broker refused after a reconnect (no
        caller is waiting for it any more); the bus records a dead letter."""
        return self._publisher.on_publish_failed

    @on_publish_failed.setter
    def on_publish_failed(self, callback: PublishFailed | None) -> None:
        self._publisher.on_publish_failed = callback

    @property
    def connected(self) -> bool:
        return self._link is not None

    @property
    def broker(self) -> str:
        """The ``host:port`` in use (or last tried) of the URL's broker addresses."""
        return str(self._brokers)

    @property
    def online(self) -> bool:
        """Connected and resumed (status, subscriptions, outbox): publishes go direct."""
        return self._publisher.online

    @property
    def outbox_size(self) -> int:
        """Messages waiting for the link (not counting those in flight)."""
        return len(self._outbox)

    @property
    def expired(self) -> int:
        """Messages dropped from the outbox because they went stale (`Message.expires`)."""
        return self._publisher.expired

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
        self._receiver = Receiver(
            on_message,
            self._subscriber.filters.is_copy,
            defer_acks=defer_acks,
            max_unacked=self.options.max_unacked,
            v5=self.options.v5,
        )
        self._closing = False
        self._failed = None
        client = await self._open_first()
        try:
            if not await self._resume(client):
                raise BrokerUnavailableError(
                    f"connection to {self.url} dropped right after connecting"
                )
        except BaseException:  # failed or cancelled: leave no client behind
            self._link = None
            self._paho = None
            self._publisher.link_down()
            await self._exit(client)
            raise
        self._link_lost.clear()
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"voicebus-mqtt-{self.options.client_id}"
        )

    async def _open_first(self) -> aiomqtt.Client:
        """Connect to the first broker address that answers (`failover.py`)."""
        for _ in range(len(self._brokers) - 1):
            try:
                return await self._open()
            except BrokerUnavailableError as exc:
                log.warning("%s did not answer (%s); trying the next address", self.broker, exc)
                self._brokers.advance()
        return await self._open()

    async def _open(self) -> aiomqtt.Client:
        """A fresh, connected aiomqtt client with our hot paths installed."""
        receiver = self._receiver
        assert receiver is not None  # made by `connect`
        client = new_client(self._brokers.current, self.options, self._tls_context())
        said: list[int] = []  # the reason of a DISCONNECT the broker sent, if it did
        acks = install(client, self._inflight, receiver, self._connack, said.append)
        try:
            await enter(client)
        except aiomqtt.MqttError as exc:
            address, tls = self._brokers.current, self._url.tls
            raise connect_error(self.url, exc, address, tls, self.options.connect_timeout) from None
        self._link = client
        self._paho = paho_client(client)
        self._publisher.link_up(self._paho, self._broker_max_packet)
        lost = link_lost(client)
        lost.add_done_callback(lambda _: acks.close())
        lost.add_done_callback(lambda fut: self._lost(client, fut, said))
        return client

    def _connack(self, session_present: bool, max_packet: int | None) -> None:
        self.session_present = session_present
        self._broker_max_packet = max_packet

    def _lost(
        self, client: aiomqtt.Client, fut: asyncio.Future[None], said: list[int]
    ) -> None:
        """`client`'s link dropped: requeue what is in flight, wake the supervisor.
        `said`: the reason code of the broker's DISCONNECT, if it sent one."""
        error = None if fut.cancelled() else fut.exception()
        if client is not self._link:
            return
        self._link = None
        self._paho = None
        self._publisher.link_down()
        if self._closing:
            self._abandon()
            return
        reason = error or "the broker closed the connection"
        log.warning("connection to %s lost: %s", self.url, reason)
        self._publisher.requeue(refusal(said), reason)  # wakes the PUBACK waiters
        if not self.options.reconnect:
            self._failed = TransportError(f"connection to {self.url} lost: {reason}")
        self._link_lost.set()

    def _give_up(self, client: aiomqtt.Client, reason: str) -> None:
        """End `client`'s link now, as lost (what is in flight goes back to the outbox)."""
        give_up(client, TransportError(reason))
        self._lost(client, link_lost(client), [])

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
            if len(self._brokers) > 1:  # failover: each attempt goes to the next address
                self._brokers.advance()
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
                    "reconnected to %s at %s (session %s)",
                    self.url,
                    self.broker,
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
            await self._subscriber.resubscribe(client, self._step)
            await self._publisher.flush(paho_client(client), self._giving_up(client))
        except LinkLost:
            return False
        if self._link is not client:
            return False
        self._publisher.online = True
        return True

    def _giving_up(self, client: aiomqtt.Client) -> Callable[[str], None]:
        return lambda reason: self._give_up(client, reason)

    async def _announce(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        await self._publisher.announce(paho_client(client), topic, payload)

    async def _step(self, operation: Coroutine[Any, Any, Any], what: str) -> None:
        """One step of resuming a session: a failure is logged, the link loss raised."""
        try:
            await operation
        except (aiomqtt.MqttError, TransportError, TimeoutError) as exc:
            log.error("%s on %s failed: %s", what, self.url, exc)

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
                settling = self._publisher.settle(paho_client(client), self._giving_up(client))
                await asyncio.wait_for(settling, self.options.publish_timeout)
                topic = self.options.status_topic()
                if topic is not None and self._link is client:
                    await self._announce(client, topic, self.options.offline)
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
        self._publisher.link_down()
        self._subscriber.reset()
        if self._receiver is not None and (held := self._receiver.clear()):
            log.info("%d received message(s) not handed to the bus before stop", held)
        if client is not None:
            await self._exit(client)

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
        await self._publisher.publish(message)

    async def subscribe(self, topic_filter: str, subscription_id: int, qos: int = 1) -> None:
        """Subscribe now, or on the next connection while the link is down."""
        self._check_open()
        await self._subscriber.subscribe(self._link, topic_filter, subscription_id, qos)

    async def unsubscribe(self, topic_filter: str) -> None:
        await self._subscriber.unsubscribe(self._link, topic_filter, closing=self._closing)

    # --- flow control (`receiver.py`: the socket is always read) -------------------------

    @property
    def held(self) -> int:
        """Messages received but not yet handed to the bus, which paused reading."""
        return self._receiver.held if self._receiver is not None else 0

    @property
    def dropped_qos0(self) -> int:
        """QoS 0 messages dropped because too many were held (`receiver.QOS0_HELD_MAX`)."""
        return self._receiver.dropped_qos0 if self._receiver is not None else 0

    def pause_reading(self) -> None:
        """Hand no more messages to the bus, and acknowledge none more, until
        `resume_reading`; the broker stops at Receive Maximum unacknowledged."""
        if self._receiver is not None:
            self._receiver.pause()

    def resume_reading(self) -> None:
        """Hand over what was held, then messages as they come."""
        if self._receiver is not None:
            self._receiver.resume()
