"""A link's socket in the event loop (`voicebus/transport/mqtt/sockets.py`), over a
real Mosquitto: nothing stays registered on a descriptor number after its socket
closed, however the close and paho's deferred callbacks interleave.

The failure this guards against was met in CI: a broker killed mid-stream, the
link closed in the iteration a packet was queued, aiomqtt's deferred
``add_writer`` registered the number the next link's socket reused, and the link
after that never read its CONNACK (``FileNotFoundError`` in ``add_reader``).
With aiomqtt's own callbacks (``watched=False``) the scenario below leaves that
writer (checked by hand with aiomqtt 2.5.1; not a test: a descriptor number is
shared with everything else the test process does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid

import aiomqtt

from tests.broker import Mosquitto
from voicebus.transport.mqtt.paho_internals import close_socket, paho_client
from voicebus.transport.mqtt.sockets import watch_socket


def _socket_numbered(fd: int) -> socket.socket:
    """A new socket on descriptor number `fd` (free: its socket just closed), as
    the next connection would get it."""
    sock = socket.socket()
    if sock.fileno() != fd:
        os.dup2(sock.fileno(), fd)
        sock.close()
        sock = socket.socket(fileno=fd)
    return sock


async def _connected(broker: Mosquitto, watched: bool) -> aiomqtt.Client:
    client = aiomqtt.Client("127.0.0.1", broker.port, identifier=f"sock-{uuid.uuid4().hex[:8]}")
    if watched:
        watch_socket(client)
    await client.__aenter__()
    return client


async def _stale_after_close_with_write_pending(broker: Mosquitto, watched: bool) -> bool:
    """End a link from another thread right after paho asked to write (its callbacks
    reach the loop later), put a new socket on the same number, and say whether the
    loop still holds a registration for that number."""
    loop = asyncio.get_running_loop()
    client = await _connected(broker, watched)
    paho = paho_client(client)
    current = paho.socket()
    assert current is not None
    fd = current.fileno()

    def end_link_with_a_write_pending() -> socket.socket:
        paho.publish("voicebus/test/sockets", b"x")
        close_socket(paho)
        return _socket_numbered(fd)

    reused = await asyncio.to_thread(end_link_with_a_write_pending)
    try:  # the callbacks paho made from the thread ran before this resumed
        return bool(loop.remove_writer(fd) | loop.remove_reader(fd))
    except OSError:  # the selector held a key epoll no longer had
        return True
    finally:
        with contextlib.suppress(OSError):
            reused.close()


async def test_a_socket_closed_with_a_write_pending_leaves_nothing_on_its_number(
    mosquitto: Mosquitto,
) -> None:
    assert not await _stale_after_close_with_write_pending(mosquitto, watched=True)


async def test_a_watched_link_publishes_receives_and_disconnects(mosquitto: Mosquitto) -> None:
    client = await _connected(mosquitto, watched=True)
    topic = f"voicebus/test/sockets/{uuid.uuid4().hex[:8]}"
    try:
        await client.subscribe(topic, qos=1)
        await client.publish(topic, b"hello", qos=1)
        message = await asyncio.wait_for(anext(aiter(client.messages)), 5)
        assert message.payload == b"hello"
    finally:
        await client.__aexit__(None, None, None)
    assert paho_client(client).socket() is None
