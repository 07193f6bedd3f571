"""Writing PUBLISH packets on a link: built here, straight onto the socket.

The first publish of a loop iteration is written at once (a round trip waits for
nothing); those that follow in the same iteration are written together at its end,
at most `BURST` at a time (a system call per packet cost more than the rest of a
publish). paho's ``Client.publish`` is not used for QoS 0 and 1: it costs a
`MQTTMessageInfo` with a ``threading.Condition`` per message, a `Properties` and a
`ReasonCode` per QoS 0 message, and, under aiomqtt, a thread-safe wake-up and two
loop iterations before the bytes leave (`paho_internals.write_packet`).
"""

from __future__ import annotations

import asyncio

import paho.mqtt.client as paho_mqtt
from paho.mqtt.enums import MQTTErrorCode

from ..base import Message
from .paho_internals import next_mid, write_packet
from .properties import PackedProperties, publish_packet

BURST = 64
"""Publishes written together, at most."""


class Writer:
    """Puts messages on the current link as PUBLISH packets, in order."""

    def __init__(self) -> None:
        self._burst: tuple[paho_mqtt.Client, list[bytes]] | None = None
        """Packets of this loop iteration after its first, written at its end."""

    def write(
        self,
        paho: paho_mqtt.Client,
        message: Message,
        payload: bytes,
        props: PackedProperties | None,
    ) -> tuple[MQTTErrorCode, int]:
        """Put `message` on `paho`'s link: paho's result code and the packet id (QoS 2
        takes paho's path: it runs the handshake)."""
        qos = message.qos
        if qos > 1:
            info = paho.publish(message.topic, payload, qos, message.retain, props)  # type: ignore[arg-type]
            return info.rc, info.mid
        mid = next_mid(paho) if qos else 0
        packed = props.packed if props is not None else None
        packet = publish_packet(message.topic, payload, qos, message.retain, mid, packed)
        burst = self._burst
        if burst is not None and burst[0] is paho:
            packets = burst[1]
            packets.append(packet)
            if len(packets) >= BURST:  # a publisher that never yields: write as we go
                write_packet(paho, b"".join(packets))
                packets.clear()
        elif not write_packet(paho, packet):
            return MQTTErrorCode.MQTT_ERR_NO_CONN, mid
        else:
            self._burst = (paho, [])
            asyncio.get_running_loop().call_soon(self.flush)
        return MQTTErrorCode.MQTT_ERR_SUCCESS, mid

    def flush(self) -> None:
        """Write the rest of this iteration's packets in one go (if the link was lost
        meanwhile, the QoS 1 ones are requeued with what is in flight); also called to
        write them before anything else (a DISCONNECT) is queued."""
        burst, self._burst = self._burst, None
        if burst is not None and burst[1]:
            paho, packets = burst
            write_packet(paho, b"".join(packets))
