"""The publish path of the MQTT transport: straight onto the link, or into the outbox.

`Publisher` sends on the paho client of the current link, as PUBLISH packets it
builds itself (`writer.py`, properties pre-packed by `properties.py`), and
completes its own PUBACK futures (registered in `Outbox.inflight`, completed by
`puback` from the link's read callback). At most the broker's Receive Maximum
QoS 1 publishes are in flight (`window`); more wait their turn, in order. While
the link is down or being resumed, messages go into the `Outbox` and `flush`
sends them, in order, once the next link is up. It also enforces the payload
limit and the broker's Maximum Packet Size (a packet over it would cost the link).

**A message the broker refuses by closing the link** (Mosquitto sends a
DISCONNECT "malformed packet" for a PUBLISH with a control character in its
topic) would be sent again after every reconnect, without end. So when the
broker closes a link with a DISCONNECT that refuses something, the oldest
message still waiting for its PUBACK becomes the *suspect*; on the next link it
is sent alone (after everything before it is acknowledged, nothing after it
until it is): if the broker refuses that link too, with the suspect the last
thing sent, it is taken out of the outbox and reported through
`on_publish_failed` (a dead letter, ``broker_refused``). One poison message costs
two or three reconnects, and everything queued behind it then goes through. A
link that breaks without a DISCONNECT (a broker crash or restart looks the same)
never counts: the message is kept and sent again.

**Expiry**: a message with `Message.expires` carries the seconds it has left as
its Message Expiry Interval (the broker drops it for a subscriber that is offline
longer); one that went stale in the outbox is dropped there, never sent after the
reconnect, and counted in `expired`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

import paho.mqtt.client as paho_mqtt
from paho.mqtt.enums import MQTTErrorCode

from ...errors import (
    PayloadTooLargeError,
    PayloadValidationError,
    PublishTimeoutError,
    TransportError,
)
from ...wire.envelope311 import fold
from ...wire.topics import check_topic
from ..base import Message
from .errors import publish_error
from .link import LinkLost
from .options import MqttOptions
from .outbox import REQUEUED, Outbox
from .properties import PackedProperties, pack_message_properties
from .writer import BURST, Writer

log = logging.getLogger("voicebus.mqtt")

FLUSH_WINDOW = 100
"""QoS 1 messages in flight while the outbox is flushed after a reconnect."""
RECEIVE_MAXIMUM = 65_535
"""A broker's Receive Maximum when its CONNACK names none (MQTT 5 §3.2.2.3.3)."""
PACKET_OVERHEAD = 16
"""Fixed header, lengths and packet id of a PUBLISH, on top of topic, properties, payload."""

PublishFailed = Callable[[Message, Exception], None]


class Publisher:
    """Publishes on the current link, or into the outbox while there is none."""

    def __init__(self, url: str, options: MqttOptions, check_open: Callable[[], None]) -> None:
        self.url = url
        self.options = options
        self.outbox = Outbox(url, options.outbox_size, options.resend_window)
        self.inflight = self.outbox.inflight  # the hot paths' shortcut
        self._check_open = check_open
        """Raises when the transport is closed or failed (publishing is refused then)."""
        self.link: paho_mqtt.Client | None = None
        """The paho client of the current link, from connect to loss."""
        self.online = False
        """The current link is resumed (status, subscriptions, outbox): publish direct."""
        self.broker_max_packet: int | None = None
        self.payload_limit = options.max_payload_size
        self.on_publish_failed: PublishFailed | None = None
        self._suspect: Message | None = None
        """The oldest unacknowledged message when the broker last closed a link."""
        self._probe: Message | None = None
        """The suspect, sent alone on this link, while its PUBACK is due."""
        self._last_sent: Message | None = None
        """The last message `send` put on the link (the probe must be it)."""
        self.expired = 0
        """Messages dropped from the outbox because they went stale while queued."""
        self.window = RECEIVE_MAXIMUM
        """QoS 1 messages in flight at most on this link: the broker's Receive Maximum."""
        self._slots: deque[asyncio.Future[None]] = deque()
        """Publishes waiting for room in the window, first come first served."""
        self._granted = 0
        """Slots handed to waiters that have not sent yet."""
        self._unyielded = 0
        """QoS 0 publishes since `publish` last let the event loop run."""
        self._writer = Writer()

    # --- the link ------------------------------------------------------------------

    def link_up(
        self, paho: paho_mqtt.Client, broker_max_packet: int | None, receive_max: int | None
    ) -> None:
        """A new link (not yet resumed: `publish` still queues)."""
        self.link = paho
        self.online = False
        self.window = max(1, receive_max or RECEIVE_MAXIMUM)
        self.broker_max_packet = broker_max_packet
        self.payload_limit = self.options.max_payload_size
        if broker_max_packet:
            self.payload_limit = min(self.payload_limit, broker_max_packet - PACKET_OVERHEAD)

    def link_down(self) -> None:
        self.link = None
        self.online = False
        self._granted = 0
        while self._slots:  # they find the link gone, and go to the outbox
            waiter = self._slots.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def puback(self, mid: int, code: int) -> bool:
        """A PUBACK came for packet `mid` (from paho's read callback): complete its
        future and make room in the window; False when `mid` is not ours."""
        entry = self.inflight.pop(mid, None)
        if entry is None:
            return False
        fut = entry[1]
        if not fut.done():
            fut.set_result(code)
        self._wake()
        return True

    def _wake(self) -> None:
        """Hand the room in the window to the publishes waiting for it, in order."""
        slots = self._slots
        while slots and len(self.inflight) + self._granted < self.window:
            waiter = slots.popleft()
            if not waiter.done():
                self._granted += 1
                waiter.set_result(None)

    async def _room(self, paho: paho_mqtt.Client) -> bool:
        """Wait for room in the window; False when the link changed meanwhile."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slots.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._granted -= 1  # granted, not used: pass it on
                self._wake()
            raise
        if self.link is not paho:
            return False
        self._granted -= 1
        return True

    def _full(self) -> bool:
        return bool(self._slots) or len(self.inflight) + self._granted >= self.window

    def requeue(self, refused: bool, reason: object) -> None:
        """The link dropped: wake every PUBACK waiter, queue their messages again.

        `refused`: the broker closed the link refusing something we sent (`reason`):
        the oldest unacknowledged message becomes the suspect, and a suspect sent
        alone is taken out and reported.
        """
        unacknowledged = self.outbox.release()
        probe, self._probe = self._probe, None
        if refused:
            if probe is not None and probe is self._last_sent and probe in unacknowledged:
                unacknowledged.remove(probe)
                self._suspect = None
                self.undeliverable(probe, self._broker_refused(probe, reason))
            else:
                self._suspect = unacknowledged[0] if unacknowledged else None
        self.outbox.requeue(unacknowledged)

    def _broker_refused(self, message: Message, reason: object) -> TransportError:
        return TransportError(
            f"broker_refused: {self.url} closed the connection twice after the publish "
            f"on {message.topic!r}, the second time with nothing sent after it "
            f"({reason}); it was taken out of the outbox so that it cannot cost more "
            "reconnects (a topic, property or payload the broker finds malformed?)"
        )

    # --- publishing -----------------------------------------------------------------

    async def publish(self, message: Message) -> None:
        """Publish; QoS 1 returns on the PUBACK, or once the message is in the outbox
        while the link is down."""
        if not message.validated:  # encode() built the topic from a checked template
            check_topic(message.topic)
        if len(message.payload) > self.payload_limit:
            raise self.too_large(message)
        paho = self.link
        if not self.online or paho is None:
            self._check_open()
            self.outbox.put(message)
            return
        payload, props = self.wire(message)
        if self.over_broker_limit(message, props.packed if props else b""):
            raise self.too_large(message)
        if message.qos and self._full() and not await self._room(paho):
            self._check_open()  # the link changed while we waited
            self.outbox.put(message)
            return
        rc, mid = self._writer.write(paho, message, payload, props)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            if rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                self._check_open()
                self.outbox.put(message)
                return
            raise TransportError(f"cannot publish to {self.url}: {paho_mqtt.error_string(rc)}")
        if message.qos == 0:
            self._unyielded += 1
            if self._unyielded >= BURST:  # a QoS 0 publish never waits: let the rest of
                self._unyielded = 0  # the process (this bus's own receiving) run too
                await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self.inflight[mid] = (message, fut)
        timer = loop.call_later(self.options.publish_timeout, _time_out, fut)
        try:
            code = await fut  # no `wait_for`: its extra task hop costs round-trip time
        except TimeoutError:
            raise PublishTimeoutError(
                f"{self.url} did not acknowledge a publish on {message.topic} within "
                f"{self.options.publish_timeout}s"
            ) from None
        finally:
            timer.cancel()
            self.outbox.forget(mid, fut)
        if code >= 0x80:
            raise publish_error(self.url, message.topic, code)
        if self.options.resend_window and code != REQUEUED:  # requeued: not acknowledged
            self.outbox.acknowledged(message)

    def wire(self, message: Message) -> tuple[bytes, PackedProperties | None]:
        """Payload and packed properties of `message` as this link's protocol sends
        it: MQTT 5 properties, or over 3.1.1 the envelope folded into the payload
        (`wire/envelope311.py`)."""
        if self.options.v5:
            return message.payload, pack_message_properties(message)
        return fold(
            message.topic, message.payload, message.correlation_data, message.user_properties
        ), None

    def send(self, paho: paho_mqtt.Client, message: Message) -> asyncio.Future[int] | None:
        """Publish on `paho`; the PUBACK future for QoS 1 (registered in flight).

        A message too large for the broker (a packet over its Maximum Packet Size
        gets us disconnected) is not sent but refused, like a direct `publish`.
        """
        try:
            payload, props = self.wire(message)
        except PayloadValidationError as exc:  # 3.1.1: a payload with its own "_vb"
            self.undeliverable(message, exc)
            return None
        if self.over_broker_limit(message, props.packed if props else b""):
            self.undeliverable(message, self.too_large(message))
            return None
        rc, mid = self._writer.write(paho, message, payload, props)
        if rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            self.outbox.queued.appendleft(message)
            raise LinkLost
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.refused(message, int(rc))
            return None
        self._last_sent = message
        if message.qos == 0:
            return None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.inflight[mid] = (message, fut)
        fut.add_done_callback(lambda _: self.outbox.forget(mid, fut))
        return fut

    async def flush(self, paho: paho_mqtt.Client, give_up: Callable[[str], None]) -> None:
        """Send the outbox in order on `paho`, up to `FLUSH_WINDOW` QoS 1 messages in
        flight, the suspect alone; `LinkLost` when that link drops (`give_up` ends
        it when the broker stops acknowledging)."""
        queued = self.outbox.queued
        window: deque[tuple[Message, asyncio.Future[int]]] = deque()
        while queued or window:
            while queued and len(window) < min(FLUSH_WINDOW, self.window):
                if self.link is not paho:
                    raise LinkLost
                suspect = queued[0] is self._suspect
                if suspect and window:
                    break  # the suspect goes alone, once everything before it is acknowledged
                message = queued.popleft()
                if message.expires is not None and message.expires <= time.monotonic():
                    self.expired += 1
                    if message is self._suspect:
                        self._suspect = None
                    log.debug("dropping stale %s from the outbox", message.topic)
                    continue
                fut = self.send(paho, message)
                if fut is not None:
                    window.append((message, fut))
                if suspect:
                    if fut is None:  # not a QoS 1 message in flight: nothing to probe
                        self._suspect = None
                        continue
                    self._probe = message
                    break  # ... and nothing after it until it is
            if not window:
                continue
            message, fut = window.popleft()
            if not fut.done():  # never cancel `fut`: a lost link requeues its message
                await asyncio.wait((fut,), timeout=self.options.publish_timeout)
                if not fut.done():
                    give_up(
                        f"no PUBACK within {self.options.publish_timeout}s while sending the outbox"
                    )
                    raise LinkLost
            code = fut.result()
            if code == REQUEUED:
                raise LinkLost
            if message is self._suspect:  # answered: innocent
                self._suspect = self._probe = None
            if code >= 0x80:
                self.refused(message, code)
            elif self.options.resend_window:
                self.outbox.acknowledged(message)

    async def announce(self, paho: paho_mqtt.Client, topic: str, payload: bytes) -> None:
        """Publish the retained status `payload` on `paho` and wait for its PUBACK."""
        fut = self.send(paho, Message(topic, payload, 1, True))
        if fut is None:
            return
        code = await asyncio.wait_for(fut, self.options.publish_timeout)
        if code == REQUEUED:
            raise LinkLost
        if code >= 0x80:
            log.warning(
                "%s refused the status on %s (code %d): check the ACL", self.url, topic, code
            )

    async def settle(self, paho: paho_mqtt.Client, give_up: Callable[[str], None]) -> None:
        """Send what the outbox holds, then wait for every PUBACK still due."""
        self._writer.flush()  # before the DISCONNECT that may follow
        if self.outbox:
            await self.flush(paho, give_up)
        waiting = [fut for _, fut in self.inflight.values()]
        if waiting:
            await asyncio.wait(waiting)  # not wait_for/gather: never cancel a publisher's future

    # --- what cannot be sent -------------------------------------------------------------

    def refused(self, message: Message, code: int) -> None:
        """A message nobody awaits any more was refused with reason `code`."""
        self.undeliverable(message, publish_error(self.url, message.topic, code))

    def undeliverable(self, message: Message, error: Exception) -> None:
        """A message nobody awaits any more cannot be sent: log it and tell the bus."""
        log.error("%s", error)
        if self.on_publish_failed is not None:
            self.on_publish_failed(message, error)

    def over_broker_limit(self, message: Message, packed_properties: bytes) -> bool:
        """Would this PUBLISH exceed the broker's Maximum Packet Size (from CONNACK)?
        (Topic counted at 4 bytes a character: the UTF-8 worst case.)"""
        limit = self.broker_max_packet
        if not limit:
            return False
        size = len(message.payload) + len(packed_properties) + 4 * len(message.topic)
        return size + PACKET_OVERHEAD > limit

    def too_large(self, message: Message) -> PayloadTooLargeError:
        size = len(message.payload)
        if size <= self.payload_limit and self.broker_max_packet:  # topic and properties
            return PayloadTooLargeError(
                f"the publish of {size} bytes on {message.topic} exceeds, with its topic "
                f"and properties, the broker's maximum packet size {self.broker_max_packet}; "
                "send large data out of band"
            )
        limit = self.payload_limit
        where = "max_payload_size"
        if self.broker_max_packet and limit >= self.broker_max_packet - PACKET_OVERHEAD:
            where = f"the broker's maximum packet size {self.broker_max_packet}"
        return PayloadTooLargeError(
            f"payload of {len(message.payload)} bytes on {message.topic} exceeds the "
            f"limit of {limit} bytes ({where}); send large data out of band"
        )


def _time_out(fut: asyncio.Future[int]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())
