"""The receive path of the MQTT transport: PUBLISH packets in, PUBACKs out.

On each new paho client `receive_on` takes over received PUBLISH packets (QoS 0
and 1): decoded here from their bytes (properties by `properties.py`), the 2nd..
copy of an overlap dropped (`is_copy`), handed to `deliver` without a task per
message. Their PUBACKs, sent with paho's public manual acknowledgement, go out
right after, or, when acks are deferred, once the receiver is done (`Acks`, in
receive order).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import paho.mqtt.client as paho_mqtt

from ..base import Message, MessageCallback
from .paho_internals import take_over_publish
from .properties import MalformedProperties, unpack_publish_properties

log = logging.getLogger("voicebus.mqtt")


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

def receive_on(
    paho: paho_mqtt.Client,
    deliver: MessageCallback,
    is_copy: Callable[[Message], bool],
    *,
    defer_acks: bool = False,
    max_unacked: int = 10,
) -> Acks:
    """Take over receiving on a new paho client (before it connects, so a
    persistent session's queued messages already take our path).

    QoS 0/1 messages go to `deliver` unless `is_copy`. Received QoS 1 messages
    are acknowledged after `deliver` returns, or with `defer_acks` when their
    `Message.ack` token is released on the returned `Acks` (at once for a copy,
    a malformed one or a failing `deliver`).
    """
    paho.manual_ack_set(True)  # PUBACKs are ours to send (`Acks`), with `ack`
    acks = Acks(paho, max_unacked)

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
        message = parse_publish(data, header, qos)
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

    paho.on_message = on_message
    take_over_publish(paho, handle_publish)
    return acks

def parse_publish(data: bytearray, header: int, qos: int) -> Message | None:
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
