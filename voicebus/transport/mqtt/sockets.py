"""A link's socket in the event loop: registered while it is open, never after.

aiomqtt registers paho's socket with the loop through ``call_soon_threadsafe``
(paho calls back from the thread that runs ``connect``), by file descriptor
number, and removes a writer only when paho still thinks one is registered. A
link that ends in the loop iteration where a packet was queued (a broker killed
mid-stream) closes its socket before the deferred ``add_writer`` runs; that then
registers the *number*, which the next link's socket reuses, with the dead
link's callback. The selector keeps that key after the new socket closes, and the
following link's ``add_reader`` fails (``FileNotFoundError`` from
``epoll.modify``): that link never reads its CONNACK, and reconnecting stalls.

`watch_socket` replaces aiomqtt's four socket callbacks with ones that register
the socket object only while it is still the client's socket, remove reader and
writer before it closes, and clear any stale key left on its number by others.
Only paho's public API is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import aiomqtt
from paho.mqtt.enums import MQTTErrorCode

from .paho_internals import link_lost, paho_client

KEEPALIVE_TICK = 1.0
"""Seconds between paho's housekeeping calls (``loop_misc``: PINGREQ, keepalive)."""


def watch_socket(client: aiomqtt.Client) -> None:
    """Register `client`'s socket with the running loop ourselves (call before it
    connects, from the loop's thread): readable and writable callbacks while the
    socket is the client's, nothing left behind when it closes."""
    paho = paho_client(client)
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    housekeeping: list[asyncio.Task[None]] = []

    def in_loop(action: Callable[[Any], None], sock: Any) -> None:
        if threading.get_ident() == loop_thread:
            action(sock)
        else:  # paho calls back from aiomqtt's connect thread
            loop.call_soon_threadsafe(action, sock)

    def broken(exc: Exception) -> None:
        lost = link_lost(client)
        if not lost.done():
            lost.set_exception(exc)

    def readable() -> None:  # until `link.read_all` takes over, once connected
        try:
            while True:
                paho.loop_read()
                if not decrypted(paho.socket()):
                    break
        except Exception as exc:  # as aiomqtt does: the link is broken
            broken(exc)

    def writable() -> None:
        try:
            paho.loop_write()
        except Exception as exc:
            broken(exc)

    async def keep_alive() -> None:
        while paho.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            await asyncio.sleep(KEEPALIVE_TICK)

    def opened(sock: Any) -> None:
        current = paho.socket()
        if current is None or current is not sock:
            return  # closed before this ran
        clear_stale(loop, current.fileno())
        loop.add_reader(current, readable)
        if paho.want_write():  # a writer registered before this ran was cleared with the rest
            loop.add_writer(current, writable)
        housekeeping.append(loop.create_task(keep_alive()))

    def closing(sock: Any) -> None:
        forget(loop, sock)
        while housekeeping:
            housekeeping.pop().cancel()

    def wants_write(sock: Any) -> None:
        current = paho.socket()
        if current is not None and current is sock:  # (not closed before this ran)
            loop.add_writer(current, writable)

    def wrote_all(sock: Any) -> None:
        forget(loop, sock, reading=False)

    paho.on_socket_open = lambda c, userdata, sock: in_loop(opened, sock)
    paho.on_socket_close = lambda c, userdata, sock: in_loop(closing, sock)
    paho.on_socket_register_write = lambda c, userdata, sock: in_loop(wants_write, sock)
    paho.on_socket_unregister_write = lambda c, userdata, sock: in_loop(wrote_all, sock)


def forget(loop: asyncio.AbstractEventLoop, sock: Any, reading: bool = True) -> None:
    """Remove `sock`'s writer (and reader) from the loop. Before it closes, normally;
    when paho closed it from its connect thread, it is found by identity (a closed
    socket has no number: ValueError when it is not registered)."""
    removals = (loop.remove_writer, loop.remove_reader) if reading else (loop.remove_writer,)
    for remove in removals:
        with contextlib.suppress(ValueError, OSError):
            remove(sock)


def clear_stale(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Drop what the loop still holds for descriptor number `fd` from a socket that
    closed while registered (epoll forgot it with the socket; the selector did not)."""
    for remove in (loop.remove_writer, loop.remove_reader):
        with contextlib.suppress(OSError):  # the selector drops the key, then raises
            remove(fd)


def decrypted(sock: object) -> int:
    """Bytes a TLS socket has decrypted and holds: the selector never reports them
    (read them before waiting for it). 0 for any other socket, or None."""
    pending = getattr(sock, "pending", None)
    return int(pending()) if pending is not None else 0
