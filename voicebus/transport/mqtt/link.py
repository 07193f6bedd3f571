"""One link to the broker: a fresh aiomqtt client with voicebus's hot paths on it.

aiomqtt owns the connection (connect, TLS, socket integration with asyncio,
keepalive, disconnect). On its paho client we take over:

- the socket's place in the event loop: `sockets.py`;
- received PUBLISH packets: the receive path, `receiver.py`;
- PUBACKs: they complete the futures the transport registered in flight;
- CONNACK: session present and the broker's Maximum Packet Size go to the transport;
- connecting: a link that breaks before CONNACK fails at once (`enter`);
- subscribing with a subscription identifier, waiting for an operation unless the
  link drops first (`until_lost`), ending a link the broker stopped answering.

The private paho/aiomqtt names this needs are reached through `paho_internals`
only (the one module that touches them; it says which and why).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiomqtt
import paho.mqtt.client as paho_mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..url import Address
from .options import MqttOptions
from .paho_internals import (
    buffer_reads,
    close_socket,
    disconnect_reason,
    end_link,
    link_lost,
    paho_client,
    read_packets,
    take_over_pubacks,
)
from .receiver import Acks, Receiver
from .sockets import decrypted, watch_socket

log = logging.getLogger("voicebus.mqtt")

paho_log = logging.getLogger("voicebus.mqtt.paho")
"""paho's own messages (``failed to receive on socket`` when a broker goes away is
reported again, as a warning, by the transport)."""

T = TypeVar("T")

Connack = Callable[[bool, int | None, int | None], None]
"""Takes a CONNACK: session present, the broker's Maximum Packet Size and Receive
Maximum (None: not given)."""
Puback = Callable[[int, int], bool]
"""Takes a PUBACK (or a QoS 2 PUBCOMP): packet id, reason code; False when the
packet id is not one the transport is waiting for."""
Disconnect = Callable[[int], None]
"""Takes the reason code of a DISCONNECT the broker sent (not called for a link
that broke without one)."""


class LinkLost(Exception):
    """The connection an operation was running on dropped."""


def new_client(
    address: Address, options: MqttOptions, tls: ssl.SSLContext | None
) -> aiomqtt.Client:
    """A fresh, unconnected aiomqtt client for the broker at `address` (a reused paho
    client re-sends its own in-flight messages on reconnect, which duplicates them)."""
    o = options
    props: Properties | None = None
    if o.v5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        # Flow control: the broker sends no more QoS 1 messages while this many are
        # unacknowledged (`receiver.py`: what a paused bus holds is bounded by it).
        props.ReceiveMaximum = o.receive_maximum
        if o.session_expiry:
            props.SessionExpiryInterval = int(o.session_expiry)
    will = None
    if o.will is not None:
        will = aiomqtt.Will(o.will.topic, o.will.payload, o.will.qos, o.will.retain)
    else:
        topic = o.status_topic()
        if topic is not None:
            will = aiomqtt.Will(topic, o.offline, 1, True)
    persistent = bool(o.session_expiry)
    return aiomqtt.Client(
        address[0],
        address[1],
        identifier=o.client_id or None,
        username=o.username,
        password=o.password,
        protocol=aiomqtt.ProtocolVersion.V5 if o.v5 else aiomqtt.ProtocolVersion.V311,
        keepalive=o.keepalive,
        timeout=o.connect_timeout,
        # 3.1.1 has no session expiry: a persistent session is clean_session false
        clean_start=not persistent if o.v5 else paho_mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        clean_session=None if o.v5 else not persistent,
        properties=props,
        tls_context=tls,
        # Without TCP_NODELAY a PUBACK followed by a small publish waits for the
        # peer's delayed ACK: ~40 ms per hop (measured: QoS 1 round trip 88 ms).
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        will=will,
        logger=paho_log,
    )


def install(
    client: aiomqtt.Client,
    puback: Puback,
    receiver: Receiver,
    connack: Connack,
    disconnect: Disconnect,
) -> Acks:
    """Take over aiomqtt's hot paths on a new client (before it connects, so a
    persistent session's queued messages already take our path); the PUBACKs
    due on this link.

    PUBACKs go to `puback` (straight from their bytes: `take_over_pubacks`);
    CONNACK details go to `connack`, the reason of a DISCONNECT from the
    broker to `disconnect` (before the loss is reported); received messages to
    `receiver`.
    """
    paho = paho_client(client)
    watch_socket(client)
    acks = receiver.attach(paho)
    aiomqtt_on_publish: Any = paho.on_publish
    aiomqtt_on_connect: Any = paho.on_connect
    aiomqtt_on_disconnect: Any = paho.on_disconnect

    def on_disconnect(c: paho_mqtt.Client, userdata: Any, flags: Any, *args: Any) -> None:
        if getattr(flags, "is_disconnect_packet_from_server", False):
            code = disconnect_reason(c)
            if code is None and args:
                code = int(getattr(args[0], "value", args[0]))
            if code is not None:
                disconnect(code)
        aiomqtt_on_disconnect(c, userdata, flags, *args)

    def on_connect(c: paho_mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        connack(
            bool(getattr(flags, "session_present", False)),
            getattr(props, "MaximumPacketSize", None),
            getattr(props, "ReceiveMaximum", None),
        )
        aiomqtt_on_connect(c, userdata, flags, reason, props)

    def on_publish(c: paho_mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        """What paho itself published (QoS 2: it runs the handshake)."""
        code = int(getattr(reason, "value", reason or 0))
        if not puback(mid, code) and aiomqtt_on_publish is not None:
            aiomqtt_on_publish(c, userdata, mid, reason, props)

    take_over_pubacks(paho, puback)
    paho.on_connect = on_connect
    paho.on_publish = on_publish
    paho.on_disconnect = on_disconnect
    return acks


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


def read_all(client: aiomqtt.Client, acks: Acks) -> None:
    """Once `client` is connected: read every packet its socket holds at each readable
    callback (aiomqtt's reads one, so each further packet costs a loop iteration),
    through a buffer (`buffer_reads`); the PUBACKs due for them go out together."""
    paho = paho_client(client)
    sock = paho.socket()
    if sock is None:
        return
    lost = link_lost(client)
    loop = asyncio.get_running_loop()
    reads = buffer_reads(paho)
    again: list[asyncio.Handle] = []  # a read scheduled for what is left over (one at most)

    def on_readable() -> None:
        again.clear()
        acks.holding = True
        try:
            read_packets(paho, reads)
        except Exception as exc:  # as aiomqtt does: the link is broken
            if not lost.done():
                lost.set_exception(exc)
            return
        finally:
            acks.holding = False
            acks.flush()
        # (`decrypted`: a TLS record with the start of the next packet, left there
        # when a large one's tail was read)
        if (reads.left_over() or decrypted(sock)) and not again and not lost.done():
            again.append(loop.call_soon(on_readable))  # read, not handled: no wake-up comes

    loop.add_reader(sock, on_readable)  # (replaces `sockets.watch_socket`'s reader)


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


async def subscribe_on(
    client: aiomqtt.Client,
    topic_filter: str,
    subscription_id: int,
    qos: int,
    retain_handling: int,
    v5: bool = True,
) -> list[Any]:
    """Subscribe `topic_filter` on `client`, its messages tagged with `subscription_id`
    (MQTT 5; 3.1.1 has neither identifiers nor options); the broker's reason codes,
    as paho gives them (`LinkLost` if the link drops meanwhile). `retain_handling`
    (MQTT 5 §3.8.3.1): 0 the retained messages come, 1 only for a subscription the
    broker did not have (a re-subscribe: no replay of what we had), 2 none."""
    if not v5:
        return list(await until_lost(client, client.subscribe(topic_filter, qos)))
    props = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
    props.SubscriptionIdentifier = subscription_id
    options = SubscribeOptions(qos=qos, retainHandling=retain_handling)
    subscribing = client.subscribe(topic_filter, options=options, properties=props)
    return list(await until_lost(client, subscribing))


def give_up(client: aiomqtt.Client, error: Exception) -> None:
    """End `client`'s link now (its broker stopped answering): the loss is reported
    as `error`, the socket closed."""
    end_link(client, error)
