"""Edges of the MQTT transport's lifecycle, over a real Mosquitto: stopping with
publishes in flight, a broker that stops acknowledging, a connect that fails half
way, a failed transport, the broker's packet size limit, a clean close by the broker.

These tests are about the transport's internals: they read its private state (what
is in flight, the outbox, the session filters, the paho client) and break its link
through paho's socket, which no public API offers (nor should).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import traceback
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.broker import Mosquitto
from tests.helpers import eventually
from voicebus import PayloadTooLargeError
from voicebus.errors import BrokerUnavailableError, TransportError
from voicebus.transport import Message, parse_url
from voicebus.transport.mqtt import transport as mqtt_module
from voicebus.transport.mqtt.transport import MqttOptions, MqttTransport


def _transport(broker: Mosquitto, **options: Any) -> MqttTransport:
    client_id = f"edge-{uuid.uuid4().hex[:8]}"
    return MqttTransport(parse_url(broker.url()), MqttOptions(client_id=client_id, **options))


def _freeze(broker: Mosquitto) -> None:
    """SIGSTOP: the broker keeps its sockets open and answers nothing."""
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGSTOP)


def _thaw(broker: Mosquitto) -> None:
    if broker.proc is not None:
        broker.proc.send_signal(signal.SIGCONT)


def _stop_on_connack(transport: MqttTransport, broker: Mosquitto) -> list[bool]:
    """Freeze `broker` right after the next CONNACK `transport` reads; the list
    gets an entry when that happened (an internal: the transport's CONNACK hook)."""
    frozen: list[bool] = []
    connack = transport._connack

    def hook(session_present: bool, max_packet: int | None, most: int | None) -> None:
        connack(session_present, max_packet, most)
        if not frozen:
            frozen.append(True)
            _freeze(broker)

    transport._connack = hook  # type: ignore[method-assign]
    return frozen


def _break_link(transport: MqttTransport) -> None:
    """Shut the transport's socket down: its link breaks as if the network failed."""
    paho = transport._paho
    assert paho is not None
    sock = paho.socket()
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]


# --- 1. close() with publishes in flight ------------------------------------------


async def test_close_waits_for_the_puback_of_a_publish_in_flight(
    fresh_mosquitto: Mosquitto,
) -> None:
    broker = fresh_mosquitto
    transport = _transport(broker, status=False, publish_timeout=10)
    await transport.connect(lambda m: None)
    try:
        _freeze(broker)
        publishing = asyncio.ensure_future(transport.publish(Message("vb/edge/a", b"x")))
        await eventually(lambda: len(transport._inflight) == 1)
        closing = asyncio.ensure_future(transport.close())
        await eventually(lambda: transport._closing)
        # Part of the test: the broker stays silent for a while, and close() keeps
        # waiting for the PUBACK (a close that gave up would have failed the publish).
        await asyncio.sleep(0.2)
        assert not closing.done()  # waiting for the PUBACK
        assert not publishing.done()
        _thaw(broker)
        await asyncio.wait_for(closing, 3)
        assert publishing.done(), "a publish outlived close()"
        await publishing  # the broker acknowledged it
    finally:
        _thaw(broker)


async def test_a_publish_in_flight_fails_at_once_when_the_link_drops_during_close(
    fresh_mosquitto: Mosquitto,
) -> None:
    broker = fresh_mosquitto
    transport = _transport(broker, publish_timeout=10)  # with the offline status
    await transport.connect(lambda m: None)
    try:
        _freeze(broker)
        publishing = asyncio.ensure_future(transport.publish(Message("vb/edge/b", b"x")))
        await eventually(lambda: len(transport._inflight) == 1)
        closing = asyncio.ensure_future(transport.close())
        await eventually(lambda: transport._closing)  # the link drops during close()
        _break_link(transport)
        with pytest.raises(TransportError, match="closed before the broker acknowledged"):
            await asyncio.wait_for(publishing, 2)
        await asyncio.wait_for(closing, 2)
    finally:
        _thaw(broker)


async def test_a_transport_connected_again_after_close_starts_afresh(
    fresh_mosquitto: Mosquitto,
) -> None:
    broker = fresh_mosquitto
    got: list[Message] = []
    transport = _transport(broker, status=False, resend_window=30)
    await transport.connect(got.append)
    await transport.subscribe("vb/edge/old/#", 1)
    await transport.publish(Message("vb/edge/old/x", b"first"))
    await eventually(lambda: len(got) == 1)
    await transport.close()
    assert not transport._outbox._recent  # nothing to send again on the next link

    await transport.connect(got.append)
    assert transport._subscriber.filters.ids == {}
    peer = _transport(broker, status=False)
    await peer.connect(lambda m: None)
    try:
        await transport.subscribe("vb/edge/marker", 2)
        await peer.publish(Message("vb/edge/old/x", b"second"))
        await peer.publish(Message("vb/edge/marker", b"marker"))  # delivered in order
        await eventually(lambda: len(got) >= 2)
        assert [m.payload for m in got] == [b"first", b"marker"]  # the old filter is gone
        assert transport._subscriber.filters.ids == {"vb/edge/marker": 2}
    finally:
        await peer.close()
        await transport.close()


# --- 2. a resumed link whose broker does not acknowledge the outbox ----------------


async def test_flush_without_pubacks_drops_the_link_and_keeps_the_messages(
    fresh_mosquitto: Mosquitto,
) -> None:
    broker = fresh_mosquitto
    got: list[Message] = []
    receiver = _transport(broker, status=False)
    await receiver.connect(got.append)
    await receiver.subscribe("vb/edge/stall", 1)
    transport = _transport(
        broker,
        status=False,
        publish_timeout=0.5,
        keepalive=60,
        reconnect_delay=0.3,
        reconnect_max_delay=0.3,
    )
    await transport.connect(lambda m: None)
    frozen = _stop_on_connack(transport, broker)
    try:
        _break_link(transport)
        await eventually(lambda: not transport.connected)
        await transport.publish(Message("vb/edge/stall", b"queued"))
        assert transport.outbox_size == 1
        await eventually(lambda: bool(frozen))  # reconnected; the flush gets no PUBACK
        # Within publish_timeout the link is given up, the message back in the outbox.
        await eventually(lambda: not transport.connected and transport.outbox_size == 1)
        _thaw(broker)
        await eventually(lambda: transport.connected and transport.outbox_size == 0)
        await eventually(lambda: bool(got))
        assert {m.payload for m in got} == {b"queued"}
    finally:
        _thaw(broker)
        await transport.close()
        await receiver.close()


# --- 3. a first connect that fails while resuming ------------------------------------


@pytest.mark.parametrize("how", ["link lost", "cancelled"])
async def test_a_connect_that_fails_while_resuming_closes_its_client(
    fresh_mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    broker = fresh_mosquitto
    clients: list[Any] = []
    new_client = mqtt_module.new_client

    def recording(*args: Any) -> Any:
        clients.append(new_client(*args))
        return clients[-1]

    monkeypatch.setattr(mqtt_module, "new_client", recording)
    transport = _transport(broker, publish_timeout=10)  # announces its status
    _stop_on_connack(transport, broker)  # the status gets no PUBACK
    try:
        connecting = asyncio.ensure_future(transport.connect(lambda m: None))
        await eventually(lambda: len(transport._inflight) == 1)  # announcing
        if how == "link lost":
            _break_link(transport)
            with pytest.raises(BrokerUnavailableError):
                await asyncio.wait_for(connecting, 2)
        else:
            connecting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(connecting, 2)
        (client,) = clients
        assert client._client.socket() is None  # no socket left open
        assert not client._lock.locked()  # aiomqtt's __aexit__ ran
        assert not transport.connected
    finally:
        _thaw(broker)


# --- 4. a failed transport ---------------------------------------------------------


async def test_a_failed_transport_raises_a_fresh_error_each_time(
    fresh_mosquitto: Mosquitto,
) -> None:
    broker = fresh_mosquitto
    transport = _transport(broker, status=False, reconnect=False)
    await transport.connect(lambda m: None)
    await asyncio.to_thread(broker.stop)
    await eventually(lambda: transport._failed is not None)
    errors: list[TransportError] = []
    for _ in range(3):
        with pytest.raises(TransportError) as caught:
            await transport.publish(Message("vb/edge/f", b"x"))
        errors.append(caught.value)
    assert len({id(e) for e in errors}) == 3
    assert {str(e) for e in errors} == {str(transport._failed)}
    depths = {len(traceback.extract_tb(e.__traceback__)) for e in errors}
    assert len(depths) == 1  # the traceback does not grow with each retry
    await transport.close()


# --- 5. the broker's Maximum Packet Size and the outbox --------------------------------


async def test_queued_message_over_the_broker_packet_limit_becomes_a_dead_letter(
    tmp_path: Path,
) -> None:
    broker = Mosquitto(tmp_path / "broker", extra="max_packet_size 2000\n").start()
    try:
        got: list[Message] = []
        receiver = _transport(broker, status=False)
        await receiver.connect(got.append)
        await receiver.subscribe("vb/edge/big/#", 1)
        transport = _transport(broker, status=False, reconnect_delay=0.3, reconnect_max_delay=0.3)
        failed: list[tuple[Message, Exception]] = []
        transport.on_publish_failed = lambda m, e: failed.append((m, e))
        await transport.connect(lambda m: None)
        try:
            assert transport._publisher.broker_max_packet == 2000
            _break_link(transport)
            await eventually(lambda: not transport.connected)
            # The payload fits the payload limit (broker limit less overhead), the
            # packet with its long topic does not: only the outbox lets it through.
            topic = "vb/edge/big/" + "t" * 60
            await transport.publish(Message(topic, b"x" * 1950))
            await transport.publish(Message("vb/edge/big/small", b"fits"))
            assert transport.outbox_size == 2
            await eventually(lambda: bool(got))
            assert [m.payload for m in got] == [b"fits"]
            # counted once the outbox is flushed, just after "fits" went out
            await eventually(lambda: transport.reconnects == 1)
            assert transport.connected
            ((message, error),) = failed
            assert message.topic == topic
            assert isinstance(error, PayloadTooLargeError)
            assert "maximum packet size 2000" in str(error)
        finally:
            await transport.close()
            await receiver.close()
    finally:
        broker.stop()


# --- 6. a clean close by the broker without reconnect ------------------------------------


async def test_without_reconnect_a_clean_close_by_the_broker_says_so(
    fresh_mosquitto: Mosquitto,
) -> None:
    transport = _transport(fresh_mosquitto, status=False, reconnect=False)
    await transport.connect(lambda m: None)
    paho = transport._paho
    assert paho is not None
    # A DISCONNECT with reason 0 (normal disconnection) from the broker, as paho
    # handles one read from the socket (Mosquitto 2.0 never sends that reason).
    paho._in_packet["command"] = 0xE0
    paho._in_packet["packet"] = bytearray()
    paho._handle_disconnect()
    await eventually(lambda: transport._failed is not None)
    with pytest.raises(TransportError) as caught:
        await transport.publish(Message("vb/edge/c", b"x"))
    assert "None" not in str(caught.value)
    assert "the broker closed the connection" in str(caught.value)
    await transport.close()


def test_a_message_acknowledged_in_the_same_read_as_the_loss_is_not_requeued() -> None:
    from voicebus.transport.base import Message
    from voicebus.transport.mqtt.outbox import REQUEUED, Outbox

    loop = asyncio.new_event_loop()
    try:
        outbox = Outbox("mqtt://test", 10, 0.0)
        acked: asyncio.Future[int] = loop.create_future()
        waiting: asyncio.Future[int] = loop.create_future()
        outbox.inflight[1] = (Message("a", b"{}"), acked)
        outbox.inflight[2] = (Message("b", b"{}"), waiting)
        acked.set_result(0)  # PUBACK read; its done-callback has not run yet
        assert [m.topic for m in outbox.release()] == ["b"]
        assert waiting.result() == REQUEUED
    finally:
        loop.close()
