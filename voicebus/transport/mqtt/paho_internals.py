"""Every access to a private name of paho-mqtt or aiomqtt: this module and no other.

voicebus reaches past the public API of aiomqtt 2.5 and its paho-mqtt client in
the places below, each line marked ``# noqa: SLF001`` (ruff's SLF001 refuses a
private access anywhere else in `voicebus`). What we patch, and why:

paho-mqtt (`paho.mqtt.client.Client`)
- ``_handle_publish`` is replaced (`take_over_publish`), reading the received
  packet from ``_in_packet``: QoS 0/1 PUBLISH packets are decoded straight from
  their bytes (`properties.py`) and handed to the transport without paho's
  `MQTTMessage` and MQTT 5 `Properties` objects (decoded in Python, they cost
  about half of a receive), and without paho's automatic PUBACK: the transport
  sends that itself once its receiver is done, written like its publishes
  (`write_packet`); paho's manual acknowledgement (``manual_ack_set(True)``,
  ``ack``) stays on for the QoS 2 messages left to paho.
- ``_in_packet`` again (`disconnect_reason`): the reason code of a DISCONNECT
  the broker sent, read from the packet itself, because paho 2.1 drops it when
  the packet carries no properties (Mosquitto's "malformed packet" arrives as a
  normal disconnection); the transport needs it to tell a refusal from a restart.
- ``_sock_close`` (`close_socket`, `end_link`): end a link at once, as paho does
  on a keepalive timeout, when a connect broke before its CONNACK or the broker
  stopped acknowledging (``disconnect()`` would wait for a broker that is gone).
- ``_handle_pubackcomp`` is wrapped (`take_over_pubacks`): a PUBACK for a packet
  id the transport sent itself completes its future straight from the packet's
  bytes (paho would build a `ReasonCode` and a `Properties` and look in its own
  ``_out_messages``, where our publishes are not).
- ``_sock``, ``_out_packet``, ``_packet_queue``, ``_mid_generate`` (`write_packet`,
  `next_mid`): a PUBLISH packet the transport built (and the PUBACKs it sends for
  received messages) is written on the socket at once when paho has nothing
  queued before it, else queued behind paho's own packets (never reordered).
  ``Client.publish`` costs a `MQTTMessageInfo` with a ``threading.Condition``,
  a `Properties` and a `ReasonCode` per QoS 0 message, and, under aiomqtt, a
  thread-safe wake-up plus two loop iterations before the bytes leave (its write
  callback is registered with ``call_soon_threadsafe``).
- ``_packet_read``, ``_loop_rc_handle`` (`read_packets`): read the packets the
  socket holds in one readable callback (``loop_read`` reads one while paho has
  nothing in flight); ``_sock_recv`` (`buffer_reads`) serves paho's small reads
  (a byte for the packet type, a byte per length byte) from one large one.

aiomqtt (`aiomqtt.Client`)
- ``_client`` (`paho_client`): its paho client, which has no public accessor; we
  install the patches and callbacks above on it and publish on it directly
  (our own packets and PUBACK futures: aiomqtt's awaited publish costs an Event,
  a task and a thread-safe wake-up per message). Its socket callbacks are replaced
  through paho's public ``on_socket_*`` (`sockets.py`: aiomqtt's deferred
  ``add_writer`` can outlive the socket), its readable callback through the public
  ``loop.add_reader`` (`link.read_all`).
- ``_disconnected`` (`link_lost`, `end_link`): the future that completes when the
  link drops. aiomqtt only reports a loss to a call waiting on it, after that
  call's timeout; we wake on it at once (requeue what is in flight, reconnect).

These were verified with the versions in `VERIFIED` (`check_versions` refuses
others with `UnsupportedDependencyError`; ``.ci/run`` tests both ends of the
range). aiomqtt 3 no longer builds on paho (it is a sans-I/O MQTT 5 codec with a
public ``puback()``, subscription ids and Receive Maximum): moving to it means
replacing this module and what calls it: `link.py` (one link), `receiver.py` (the
receive path), `writer.py` and `publisher.py` (the publish path).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable
from importlib import metadata
from typing import Any

import aiomqtt
import paho.mqtt.client as paho_mqtt
from paho.mqtt.enums import MQTTErrorCode

from ...errors import UnsupportedDependencyError

Release = tuple[int, ...]

VERIFIED: dict[str, tuple[Release, Release]] = {
    "paho-mqtt": ((2, 1), (2, 3)),
    "aiomqtt": ((2, 5), (2, 6)),
}
"""Distribution -> (lowest, first refused) release this module was verified with:
the same range as the dependencies in ``pyproject.toml`` (a test keeps them equal)."""

PublishHandler = Callable[[int, bytearray], bool]
"""Takes a received PUBLISH: the first byte of its fixed header and the rest of
the packet (variable header and payload); False leaves the packet to paho."""


def paho_client(client: aiomqtt.Client) -> paho_mqtt.Client:
    """The paho client inside `client`."""
    return client._client  # noqa: SLF001


def link_lost(client: aiomqtt.Client) -> asyncio.Future[None]:
    """The future that completes (with the error, if any) when `client`'s link drops.

    aiomqtt makes a new one at each connect: take it after `client` connected.
    """
    return client._disconnected  # noqa: SLF001


def take_over_publish(paho: paho_mqtt.Client, handle: PublishHandler) -> None:
    """Hand every PUBLISH packet `paho` reads to `handle`, before paho decodes it.

    `handle` runs in paho's read callback. paho sends no PUBACK for a packet
    `handle` took; one it leaves (returns False) takes paho's own path.
    """
    original = paho._handle_publish  # noqa: SLF001

    def handle_publish() -> MQTTErrorCode:
        packet = paho._in_packet  # noqa: SLF001  (a new dict per packet: read it each time)
        if handle(packet["command"], packet["packet"]):
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return original()

    paho._handle_publish = handle_publish  # type: ignore[method-assign]  # noqa: SLF001


PubackHandler = Callable[[int, int], bool]
"""Takes a received PUBACK: packet id and reason code; False leaves it to paho."""

PUBLISH = 0x30
PUBACK = 0x40


def take_over_pubacks(paho: paho_mqtt.Client, handle: PubackHandler) -> None:
    """Hand every PUBACK `paho` reads to `handle` first (from paho's read callback)."""
    original = paho._handle_pubackcomp  # noqa: SLF001

    def handle_pubackcomp(cmd: Any) -> MQTTErrorCode:
        if cmd == "PUBACK":
            data = paho._in_packet["packet"]  # noqa: SLF001
            if len(data) >= 2 and handle((data[0] << 8) | data[1], data[2] if len(data) > 2 else 0):
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return original(cmd)

    paho._handle_pubackcomp = handle_pubackcomp  # type: ignore[method-assign]  # noqa: SLF001


def next_mid(paho: paho_mqtt.Client) -> int:
    """A packet id from `paho`'s own sequence (so it never collides with paho's)."""
    return paho._mid_generate()  # noqa: SLF001


def write_packet(paho: paho_mqtt.Client, packet: bytes, command: int = PUBLISH) -> bool:
    """Send `packet` (PUBLISH, or PUBACK packets) on `paho`'s socket now, or queue it
    behind what paho has queued; False when there is no connection. paho makes no
    ``on_publish`` callback for it (it is queued marked as QoS 1: paho calls back for
    a QoS 0 PUBLISH only)."""
    sock = paho._sock  # noqa: SLF001
    if sock is None:
        return False
    if not paho._out_packet:  # noqa: SLF001
        try:
            sent = sock.send(packet)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            sent = 0
        except OSError:  # the link is breaking: paho's next read or write reports it
            sent = 0
        if sent == len(packet):
            return True
        packet = packet[sent:]
    paho._packet_queue(command, packet, 0, 1)  # noqa: SLF001
    return True


class Reads:
    """`paho`'s socket read in large chunks (`buffer_reads`): what was read so far."""

    __slots__ = ("chunk", "pos", "total")

    def __init__(self) -> None:
        self.chunk = b""
        self.pos = 0
        self.total = 0
        """Bytes received on the socket so far."""

    def left_over(self) -> bool:
        """Bytes read from the socket and not yet taken by paho (then the socket may
        not be readable while a packet is already here)."""
        return self.pos < len(self.chunk)


def buffer_reads(paho: paho_mqtt.Client) -> Reads:
    """Read `paho`'s socket in chunks of up to 64 KiB: paho asks for a packet's first
    byte, each byte of its length, then the rest (three ``recv`` calls or more per
    packet); they are served from one ``recv``."""
    original = paho._sock_recv  # noqa: SLF001  (its errors are paho's own)
    reads = Reads()

    def sock_recv(bufsize: int) -> bytes:
        chunk, pos = reads.chunk, reads.pos
        if pos >= len(chunk):
            if bufsize >= 4096:  # the rest of a large packet: straight, not copied twice
                data = original(bufsize)
                reads.total += len(data)
                return data
            chunk = original(65536)
            if not chunk:
                return chunk  # closed: paho reports the loss
            reads.chunk, pos = chunk, 0
            reads.total += len(chunk)
        end = pos + bufsize
        reads.pos = end
        return chunk[pos:end]

    paho._sock_recv = sock_recv  # type: ignore[method-assign]  # noqa: SLF001
    return reads


def read_packets(
    paho: paho_mqtt.Client, reads: Reads, limit: int = 100, budget: int = 65536
) -> MQTTErrorCode:
    """Read and handle the packets `paho`'s socket holds now (a readable callback:
    ``loop_read`` reads one while paho itself has nothing in flight): at most `limit`
    packets, or until `budget` bytes were received (so a flood of large messages is
    read no faster than the bus takes them)."""
    rc = MQTTErrorCode.MQTT_ERR_SUCCESS
    until = reads.total + budget
    for _ in range(limit):
        if paho._sock is None:  # noqa: SLF001
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        rc = paho._packet_read()  # noqa: SLF001
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or reads.total >= until:
            break
        if not reads.left_over():  # all taken: the selector says when more comes
            break  # (no read that fails with EAGAIN each time)
    if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
        return MQTTErrorCode.MQTT_ERR_SUCCESS
    if rc > 0:
        return paho._loop_rc_handle(rc)  # noqa: SLF001
    return rc


def disconnect_reason(paho: paho_mqtt.Client) -> int | None:
    """The reason code of the DISCONNECT packet `paho` is handling (call it from
    ``on_disconnect``); None when it is not handling one."""
    packet = paho._in_packet  # noqa: SLF001
    if packet.get("command", 0) & 0xF0 != 0xE0:
        return None
    data = packet.get("packet") or b""
    return data[0] if data else 0  # no reason code: normal disconnection


def close_socket(paho: paho_mqtt.Client) -> None:
    """Close `paho`'s socket now, without a DISCONNECT (paho reports no loss)."""
    paho._sock_close()  # noqa: SLF001


def end_link(client: aiomqtt.Client, error: Exception) -> None:
    """End `client`'s link now: the loss reported (`link_lost`) as `error`, unless it
    already was, and the socket closed."""
    lost = client._disconnected  # noqa: SLF001
    if not lost.done():
        lost.set_exception(error)
    client._client._sock_close()  # noqa: SLF001


def installed_version(distribution: str) -> str | None:
    """The installed version of `distribution` (None when it is not installed)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def check_versions() -> None:
    """Refuse to run on a paho-mqtt or aiomqtt release outside `VERIFIED`.

    The patches above rely on private names and behaviour that any release may
    change; an unverified one fails here, before it can misbehave on a live link.
    """
    refused, wanted = [], []
    for distribution, (lowest, first_refused) in VERIFIED.items():
        installed = installed_version(distribution)
        if installed is None or not lowest <= _release(installed) < first_refused:
            spec = f"{distribution}>={_dotted(lowest)},<{_dotted(first_refused)}"
            refused.append(f"{distribution} {installed or '(not installed)'} (supported: {spec})")
            wanted.append(f"'{spec}'")
    if refused:
        raise UnsupportedDependencyError(
            f"unsupported {' and '.join(refused)}: voicebus's MQTT transport patches "
            "internals verified with the supported versions only "
            f"(voicebus/transport/mqtt/paho_internals.py); pip install {' '.join(wanted)}"
        )


def _release(version: str) -> Release:
    """The release numbers at the start of `version` (``2.2.0rc1`` -> (2, 2, 0))."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def _dotted(release: Release) -> str:
    return ".".join(str(part) for part in release)
