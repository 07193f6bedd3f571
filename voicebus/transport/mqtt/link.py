"""One link to the broker: a fresh aiomqtt client with voicebus's hot paths on it.

aiomqtt owns the connection (connect, TLS, socket integration with asyncio,
keepalive, disconnect). On its paho client we take over:

- received PUBLISH packets (QoS 0 and 1): decoded here (properties by
  `properties.py`), the 2nd.. copy of an overlap dropped (`is_copy`), handed to
  `deliver` without a task per message; the PUBACK (paho's public manual
  acknowledgement) is sent right after, or, when acks are deferred, once the
  receiver is done (`Acks`, in receive order);
- PUBACKs: they complete the futures the transport registered in flight;
- connecting: a link that breaks before CONNACK fails at once (`enter`);
- reading again after `stop_reading`: `start_reading`, like aiomqtt's own reader.

The private paho/aiomqtt names this needs are reached through `paho_internals`
only (the one module that touches them; it says which and why).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

import aiomqtt
import paho.mqtt.client as paho_mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ...wire.status import OFFLINE
from ..base import Message, MessageCallback
from ..url import BusURL
from .options import MqttOptions
from .paho_internals import (
    close_socket,
    end_link,
    link_lost,
    paho_client,
    report_loss,
    take_over_publish,
)
from .properties import MalformedProperties, unpack_publish_properties

log = logging.getLogger("voicebus.mqtt")

paho_log = logging.getLogger("voicebus.mqtt.paho")
"""paho's own messages (``failed to receive on socket`` when a broker goes away is
reported again, as a warning, by the transport)."""

T = TypeVar("T")

Connack = Callable[[bool, int | None], None]
"""Takes a CONNACK: session present, the broker's Maximum Packet Size."""


class LinkLost(Exception):
    """The connection an operation was running on dropped."""


def new_client(url: BusURL, options: MqttOptions, tls: ssl.SSLContext | None) -> aiomqtt.Client:
    """A fresh, unconnected aiomqtt client (a reused paho client re-sends its own
    in-flight messages on reconnect, which duplicates them)."""
    o = options
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if o.session_expiry:
        props.SessionExpiryInterval = int(o.session_expiry)
    will = None
    if o.will is not None:
        will = aiomqtt.Will(o.will.topic, o.will.payload, o.will.qos, o.will.retain)
    else:
        topic = o.status_topic()
        if topic is not None:
            will = aiomqtt.Will(topic, OFFLINE, 1, True)
    persistent = bool(o.session_expiry)
    return aiomqtt.Client(
        url.host,
        url.port,
        identifier=o.client_id or None,
        username=o.username,
        password=o.password,
        protocol=aiomqtt.ProtocolVersion.V5,
        keepalive=o.keepalive,
        timeout=o.connect_timeout,
        clean_start=not persistent,
        properties=props if o.session_expiry else None,
        tls_context=tls,
        # Without TCP_NODELAY a PUBACK followed by a small publish waits for the
        # peer's delayed ACK: ~40 ms per hop (measured: QoS 1 round trip 88 ms).
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        will=will,
        logger=paho_log,
    )


class PendingAck:
    """The PUBACK due for one received QoS 1 PUBLISH (a `Message.ack` token)."""

    __slots__ = ("acks", "done", "mid")

    def __init__(self, acks: Acks, mid: int) -> None:
        self.acks = acks
        self.mid = mid
        self.done = False


class Acks:
    """The PUBACKs due on one connection, sent in the order their PUBLISH packets
    came (MQTT 5 §4.6): one released behind one not yet released waits for it.

    `close` (the link dropped) discards them: packet ids belong to that connection,
    and a persistent session's broker sends the unacknowledged messages again.
    """

    __slots__ = ("_limit", "_paho", "_pending")

    def __init__(self, paho: paho_mqtt.Client, limit: int = 10) -> None:
        self._paho: paho_mqtt.Client | None = paho
        self._pending: deque[PendingAck] = deque()
        self._limit = max(1, limit)

    def __len__(self) -> int:
        return len(self._pending)

    def expect(self, mid: int) -> PendingAck:
        """A token for the PUBACK of packet `mid`, just received."""
        token = PendingAck(self, mid)
        self._pending.append(token)
        if len(self._pending) > self._limit:  # keep the broker's window open for replies
            self.release(self._pending[0])
        return token

    def release(self, token: PendingAck) -> None:
        """`token`'s message is done with: send every PUBACK now due (idempotent)."""
        if token.done:
            return
        token.done = True
        pending = self._pending
        paho = self._paho
        while pending and pending[0].done:
            mid = pending.popleft().mid
            if paho is not None:
                paho.ack(mid, 1)

    def close(self) -> None:
        """The link is gone: send nothing more."""
        self._paho = None
        self._pending.clear()


def install(
    client: aiomqtt.Client,
    inflight: dict[int, tuple[Message, asyncio.Future[int]]],
    deliver: MessageCallback,
    is_copy: Callable[[Message], bool],
    connack: Connack,
    *,
    defer_acks: bool = False,
    max_unacked: int = 10,
) -> Acks:
    """Take over aiomqtt's hot paths on a new client (before it connects, so a
    persistent session's queued messages already take our path).

    PUBACKs complete the futures in `inflight` (by packet id) with their reason
    code; QoS 0/1 messages go to `deliver` unless `is_copy`; CONNACK details to
    `connack`. Received QoS 1 messages are acknowledged after `deliver` returns,
    or with `defer_acks` when their `Message.ack` token is released on the
    returned `Acks` (at once for a copy, a malformed one or a failing `deliver`).
    """
    paho = paho_client(client)
    paho.manual_ack_set(True)  # PUBACKs are ours to send (`Acks`), with `ack`
    acks = Acks(paho, max_unacked)
    aiomqtt_on_publish: Any = paho.on_publish
    aiomqtt_on_connect: Any = paho.on_connect

    def on_connect(c: paho_mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        connack(
            bool(getattr(flags, "session_present", False)),
            getattr(props, "MaximumPacketSize", None),
        )
        aiomqtt_on_connect(c, userdata, flags, reason, props)

    def on_publish(c: paho_mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        entry = inflight.get(mid)
        if entry is not None:
            fut = entry[1]
            if not fut.done():
                fut.set_result(int(getattr(reason, "value", reason or 0)))
        elif aiomqtt_on_publish is not None:
            aiomqtt_on_publish(c, userdata, mid, reason, props)

    def safe_deliver(message: Message) -> None:
        if not message.retain and is_copy(message):
            if message.ack is not None:
                acks.release(cast(PendingAck, message.ack))
            return
        try:
            deliver(message)
        except Exception:  # a failing receiver must not cost the PUBACK or the link
            log.exception("receiving %s failed", message.topic)
            if message.ack is not None:
                acks.release(cast(PendingAck, message.ack))

    def on_message(c: paho_mqtt.Client, userdata: Any, pm: paho_mqtt.MQTTMessage) -> None:
        """QoS 2 messages take paho's path (it runs their handshake; voicebus
        subscribes at QoS 1, so a broker sends none): PUBCOMP once delivered."""
        props: Any = pm.properties
        try:
            topic = pm.topic
        except UnicodeDecodeError:
            log.warning("dropping a PUBLISH whose topic is not UTF-8 (protocol violation)")
            c.ack(pm.mid, pm.qos)
            return
        safe_deliver(
            Message(
                topic,
                bytes(pm.payload),
                pm.qos,
                bool(pm.retain),
                getattr(props, "CorrelationData", None),
                tuple(getattr(props, "UserProperty", None) or ()),
                getattr(props, "ContentType", None),
                tuple(getattr(props, "SubscriptionIdentifier", None) or ()),
            )
        )
        c.ack(pm.mid, pm.qos)

    def handle_publish(header: int, data: bytearray) -> bool:
        qos = (header & 0x06) >> 1
        if qos == 2:
            return False
        message = _parse_publish(data, header, qos)
        if qos == 1:
            pos = 2 + int.from_bytes(data[0:2], "big")
            token = acks.expect(int.from_bytes(data[pos : pos + 2], "big"))
            if message is not None:
                if defer_acks:
                    message.ack = token
                    safe_deliver(message)
                    return True
                safe_deliver(message)
            acks.release(token)
        elif message is not None:
            safe_deliver(message)
        return True

    paho.on_connect = on_connect
    paho.on_publish = on_publish
    paho.on_message = on_message
    take_over_publish(paho, handle_publish)
    return acks


def _parse_publish(data: bytearray, header: int, qos: int) -> Message | None:
    """The message in a PUBLISH packet (variable header and payload); None, logged,
    for a malformed one."""
    size = int.from_bytes(data[0:2], "big")
    pos = 2 + size
    try:
        topic = bytes(data[2:pos]).decode("utf-8")
    except UnicodeDecodeError:
        log.warning("dropping a PUBLISH whose topic is not UTF-8 (protocol violation)")
        return None
    if qos:
        pos += 2
    try:
        props, pos = unpack_publish_properties(data, pos)
    except MalformedProperties as exc:
        log.warning("malformed properties on %s: %s", topic, exc)
        return None
    return Message(
        topic,
        bytes(data[pos:]),
        qos,
        bool(header & 0x01),
        props.correlation_data,
        props.user_properties,
        props.content_type,
        props.subscription_ids,
    )


async def enter(client: aiomqtt.Client) -> None:
    """Connect `client` (enter its context); `aiomqtt.MqttError` on failure.

    The link can break after the TCP/TLS handshake but before CONNACK (a TLS 1.3
    server refusing our certificate sends its alert then): aiomqtt would wait out
    its timeout. paho logs the cause and reports the loss; we race both.
    """
    paho = paho_client(client)
    loop = asyncio.get_running_loop()
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
            close_socket(paho)
            raise aiomqtt.MqttError(failure.result())
        entering.result()
    except asyncio.CancelledError:
        entering.cancel()
        paho.disconnect()
        raise
    finally:
        paho.on_log = None
        paho.on_disconnect = aiomqtt_on_disconnect
        if not failure.done():
            failure.cancel()


def _set_result(fut: asyncio.Future[str], value: str) -> None:
    if not fut.done():
        fut.set_result(value)


async def until_lost(client: aiomqtt.Client, operation: Coroutine[Any, Any, T]) -> T:
    """Await `operation`, or raise `LinkLost` as soon as `client`'s link drops
    (aiomqtt would wait out its timeout)."""
    task = asyncio.ensure_future(operation)
    lost = link_lost(client)
    try:
        await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.done():
        return task.result()
    task.cancel()
    raise LinkLost


def give_up(client: aiomqtt.Client, error: Exception) -> None:
    """End `client`'s link now (its broker stopped answering): the loss is reported
    as `error`, the socket closed."""
    end_link(client, error)


def stop_reading(paho: paho_mqtt.Client | None) -> None:
    """Stop reading `paho`'s socket (`start_reading` resumes)."""
    sock = paho.socket() if paho is not None else None
    if sock is not None:
        asyncio.get_running_loop().remove_reader(sock.fileno())


def start_reading(client: aiomqtt.Client) -> None:
    """Read `client`'s socket again after `stop_reading`."""
    sock = paho_client(client).socket()
    if sock is not None:
        asyncio.get_running_loop().add_reader(sock.fileno(), _reader(client))


def _reader(client: aiomqtt.Client) -> Callable[[], None]:
    """A socket read callback for `client`, as aiomqtt's own (which `stop_reading`
    removed): it also drains what TLS has already decrypted, and a read error ends
    the link."""
    paho = paho_client(client)

    def read() -> None:
        try:
            while True:
                paho.loop_read()
                raw: Any = paho.socket()
                if hasattr(raw, "pending") and raw.pending() > 0:
                    continue
                break
        except Exception as exc:
            report_loss(client, exc)

    return read
