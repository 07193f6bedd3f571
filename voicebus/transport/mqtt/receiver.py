"""The receive path of the MQTT transport: PUBLISH packets in, PUBACKs out, and
its flow control.

On each new paho client `Receiver.attach` takes over received PUBLISH packets
(QoS 0 and 1): decoded here from their bytes (properties by `properties.py`),
the 2nd.. copy of an overlap dropped (`is_copy`), handed to `deliver` without a
task per message. Their PUBACKs (written on the socket as our publishes are:
`paho_internals.write_packet`) go out right after, or, when acks are deferred,
once the receiver is done (`Acks`, in receive order).

**Flow control (back-pressure that keeps the link).** When the bus's queue is
full it calls `pause`: the socket is still read (PINGRESP, PUBACK, SUBACK, so
paho's keepalive never closes the link: 1.5x keepalive without reading did), but
messages are no longer delivered: they are *held* here, in receive order, and
the PUBACK of a held QoS 1 message is withheld until it is delivered. The client
connects with a Receive Maximum (CONNECT property, `MqttOptions.receive_maximum`),
so once that many QoS 1 messages are unacknowledged the broker sends no more and
keeps the rest queued for us (Mosquitto honours a v5 client's Receive Maximum in
place of its ``max_inflight_messages``): what is held is bounded by it. `resume`
delivers what is held, until the bus pauses again. Nothing at QoS 1 is lost, with
or without a persistent session. QoS 0 messages are not flow-controlled by MQTT:
beyond `QOS0_HELD_MAX` held (or `QOS0_HELD_BYTES`) they are dropped (at most once
is their contract), counted in `dropped_qos0` and logged.

Held messages outlive a lost link: they are delivered after it (their PUBACKs
belong to that link and are not sent; a persistent session's broker sends them
again, and the bus drops the second copy as a duplicate).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import paho.mqtt.client as paho_mqtt

from ...wire.envelope311 import unfold
from ..base import Message, MessageCallback
from .paho_internals import PUBACK, take_over_publish, write_packet
from .properties import MalformedProperties, PublishProperties, unpack_publish_properties

log = logging.getLogger("voicebus.mqtt")

QOS0_HELD_MAX = 1000
"""QoS 0 messages held while the bus is paused, at most (the broker sends them
regardless of Receive Maximum); more are dropped and counted."""
QOS0_HELD_BYTES = 8 * 1024 * 1024
"""Payload bytes of the QoS 0 messages held, at most."""


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

    __slots__ = ("_due", "_limit", "_paho", "_pending", "holding")

    def __init__(self, paho: paho_mqtt.Client, limit: int = 10) -> None:
        self._paho: paho_mqtt.Client | None = paho
        self._pending: deque[PendingAck] = deque()
        self._limit = max(1, limit)
        self._due = bytearray()
        """PUBACK packets released, not yet written."""
        self.holding = False
        """Set while the link's packets are read: the PUBACKs go out together after."""

    def __len__(self) -> int:
        return len(self._pending)

    def expect(self, mid: int) -> PendingAck:
        """A token for the PUBACK of packet `mid` (received on this connection, and
        now delivered: tokens are taken in receive order)."""
        token = PendingAck(self, mid)
        if self._paho is None:  # the link is gone: nothing will be sent for it
            token.done = True
            return token
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
        due = self._due
        while pending and pending[0].done:
            mid = pending.popleft().mid
            due += bytes((PUBACK, 2, mid >> 8, mid & 0xFF))
        if due and not self.holding:
            self.flush()

    def flush(self) -> None:
        """Write the PUBACKs released so far (in one packet write)."""
        if self._due:
            data = bytes(self._due)
            self._due.clear()
            if self._paho is not None:
                write_packet(self._paho, data, PUBACK)

    def close(self) -> None:
        """The link is gone: send nothing more."""
        self._paho = None
        self._pending.clear()
        self._due.clear()


class Receiver:
    """The receive side of one transport, across its links: delivers received
    messages, or holds them while paused (see the module docstring)."""

    def __init__(
        self,
        deliver: MessageCallback,
        is_copy: Callable[[Message], bool],
        *,
        defer_acks: bool = False,
        max_unacked: int = 10,
        v5: bool = True,
    ) -> None:
        self._v5 = v5
        """MQTT 5: PUBLISH packets carry properties (3.1.1: none; `unfold` the envelope)."""
        self._deliver = deliver
        self._is_copy = is_copy
        self._defer_acks = defer_acks
        self._max_unacked = max_unacked
        self._paused = False
        self._held: deque[tuple[Message | None, Acks, int]] = deque()
        """(message or None if malformed, the Acks of its link, packet id or 0 for QoS 0)"""
        self._held_qos0 = 0
        self._held_qos0_bytes = 0
        self.dropped_qos0 = 0
        """QoS 0 messages dropped because too many were held."""
        self.received = 0
        """PUBLISH packets received at QoS 0 and 1 (copies of one message included)."""

    @property
    def held(self) -> int:
        """Messages received and not yet delivered (the bus is paused)."""
        return len(self._held)

    def attach(self, paho: paho_mqtt.Client) -> Acks:
        """Take over receiving on a new paho client (before it connects, so a
        persistent session's queued messages already take our path); the PUBACKs
        of this link (`Acks.close` them when it drops)."""
        paho.manual_ack_set(True)  # PUBACKs are ours to send (`Acks`), with `ack`
        acks = Acks(paho, self._max_unacked)

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
            self._safe_deliver(
                Message(
                    topic,
                    bytes(pm.payload),
                    pm.qos,
                    bool(pm.retain),
                    getattr(props, "CorrelationData", None),
                    tuple(getattr(props, "UserProperty", None) or ()),
                    getattr(props, "ContentType", None),
                    tuple(getattr(props, "SubscriptionIdentifier", None) or ()),
                ),
                acks,
            )
            c.ack(pm.mid, pm.qos)

        def handle_publish(header: int, data: bytearray) -> bool:
            self.received += 1
            qos = (header & 0x06) >> 1
            if qos == 2:
                return False
            message = parse_publish(data, header, qos, self._v5)
            mid = 0
            if qos == 1:
                pos = 2 + int.from_bytes(data[0:2], "big")
                mid = int.from_bytes(data[pos : pos + 2], "big")
            if self._paused or self._held:
                self._hold(message, acks, mid)
            else:
                self._receive(message, acks, mid)
            return True

        paho.on_message = on_message
        take_over_publish(paho, handle_publish)
        return acks

    def pause(self) -> None:
        """Hold what arrives (the PUBACKs with it) until `resume`."""
        self._paused = True

    def resume(self) -> None:
        """Deliver what is held, in order, until paused again."""
        self._paused = False
        held = self._held
        while held and not self._paused:
            message, acks, mid = held.popleft()
            if not mid and message is not None:
                self._held_qos0 -= 1
                self._held_qos0_bytes -= len(message.payload)
            self._receive(message, acks, mid)

    def clear(self) -> int:
        """Forget what is held (the transport closed; nothing was acknowledged);
        how many messages that was."""
        count = len(self._held)
        self._held.clear()
        self._held_qos0 = self._held_qos0_bytes = 0
        self._paused = False
        return count

    def _hold(self, message: Message | None, acks: Acks, mid: int) -> None:
        if not mid:  # QoS 0: no PUBACK to keep in order, and no flow control
            if message is None:
                return
            size = len(message.payload)
            if self._held_qos0 >= QOS0_HELD_MAX or self._held_qos0_bytes + size > QOS0_HELD_BYTES:
                self.dropped_qos0 += 1
                if self.dropped_qos0 == 1 or self.dropped_qos0 % 1000 == 0:
                    log.warning(
                        "the bus is behind: %d QoS 0 message(s) dropped so far (%s last)",
                        self.dropped_qos0,
                        message.topic,
                    )
                return
            self._held_qos0 += 1
            self._held_qos0_bytes += size
        self._held.append((message, acks, mid))

    def _receive(self, message: Message | None, acks: Acks, mid: int) -> None:
        """Deliver one received message; take and (unless deferred) release its PUBACK."""
        if not mid:
            if message is not None:
                self._safe_deliver(message, acks)
            return
        token = acks.expect(mid)
        if message is None:  # malformed (logged): acknowledged, in order
            acks.release(token)
            return
        if self._defer_acks:
            message.ack = token
            self._safe_deliver(message, acks)
            return
        self._safe_deliver(message, acks)
        acks.release(token)

    def _safe_deliver(self, message: Message, acks: Acks) -> None:
        if not message.retain and self._is_copy(message):
            if message.ack is not None:
                acks.release(cast(PendingAck, message.ack))
            return
        try:
            self._deliver(message)
        except Exception:  # a failing receiver must not cost the PUBACK or the link
            log.exception("receiving %s failed", message.topic)
            if message.ack is not None:
                acks.release(cast(PendingAck, message.ack))


def parse_publish(data: bytearray, header: int, qos: int, v5: bool = True) -> Message | None:
    """The message in a PUBLISH packet (variable header and payload); None, logged,
    for a malformed one. A message without user properties (any 3.1.1 one, or from a
    3.1.1 peer) on a ``voicebus/`` topic has its ``_vb`` envelope unfolded
    (`wire/envelope311.py`)."""
    size = int.from_bytes(data[0:2], "big")
    pos = 2 + size
    try:
        topic = bytes(data[2:pos]).decode("utf-8")
    except UnicodeDecodeError:
        log.warning("dropping a PUBLISH whose topic is not UTF-8 (protocol violation)")
        return None
    if qos:
        pos += 2
    if not v5:
        props = PublishProperties()
    else:
        try:
            props, pos = unpack_publish_properties(data, pos)
        except MalformedProperties as exc:
            log.warning("malformed properties on %s: %s", topic, exc)
            return None
    payload = bytes(data[pos:])
    if not props.user_properties and (folded := unfold(topic, payload)):
        payload, props.correlation_data, props.user_properties = folded
    return Message(
        topic,
        payload,
        qos,
        bool(header & 0x01),
        props.correlation_data,
        props.user_properties,
        props.content_type,
        props.subscription_ids,
    )
