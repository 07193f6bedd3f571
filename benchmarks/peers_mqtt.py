"""MQTT peers on one Mosquitto: end to end events/s and request round trips.

End to end: a publishing connection with `INFLIGHT` publishes outstanding and a
receiving connection counting until it has N (all MQTT 5, 100-byte JSON, the
receiver parses each payload). voicebus validates, encodes and decodes with its
models and its envelope; raw aiomqtt and FastStream (its own MQTT client) run on
this loop; paho runs as its authors show it, a network thread per client
(`loop_start`), the publisher queueing everything with 100 in flight.

Round trip: sequential request -> reply, MQTT 5 Response Topic + Correlation
Data for the raw clients; voicebus `request` answered by a handler. paho is the
two-thread ping-pong: requester and responder each on their own network thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import aiomqtt
from common import (
    HOST,
    INFLIGHT,
    NODELAY,
    PING,
    QUIET,
    REQUEST_REPLY,
    STALL_SECONDS,
    Counter,
    RoundTrip,
    Throughput,
    measure,
    percentiles,
    raw_payload,
    vb_data,
)
from paho.mqtt import client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from voicebus import Event, EventBus


def raw_client(port: int) -> aiomqtt.Client:
    """Raw aiomqtt set up as voicebus sets up its own: MQTT 5, TCP_NODELAY."""
    return aiomqtt.Client(
        HOST, port, protocol=aiomqtt.ProtocolVersion.V5, logger=QUIET, socket_options=NODELAY
    )


# --- end to end --------------------------------------------------------------------------


async def voicebus_e2e(url: str, qos: int, n: int, warmup: int) -> Throughput:
    counter = Counter()
    event_type = PING[qos]

    async def handler(event: Event) -> None:
        counter.hit()

    receiver = EventBus(url)
    receiver.subscribe(event_type, handler)
    async with receiver, EventBus(url) as sender:

        async def publish(seq: int) -> None:
            await sender.emit(event_type, vb_data(seq))

        return await measure(n, warmup, counter, publish)


async def aiomqtt_e2e(port: int, qos: int, n: int, warmup: int) -> Throughput:
    topic = f"bench/raw/q{qos}"
    async with raw_client(port) as sub, raw_client(port) as pub:
        await sub.subscribe(topic, qos=qos)
        counter = Counter()

        async def consume() -> None:
            async for message in sub.messages:
                json.loads(message.payload)  # type: ignore[arg-type]
                counter.hit()

        consumer = asyncio.create_task(consume())

        async def publish(seq: int) -> None:
            await pub.publish(topic, raw_payload(seq), qos=qos)

        try:
            return await measure(n, warmup, counter, publish)
        finally:
            consumer.cancel()


async def faststream_e2e(port: int, qos: int, n: int, warmup: int) -> Throughput:
    from faststream.mqtt import MQTTBroker, QoS

    topic = f"bench/fs/q{qos}"
    counter = Counter()
    level = QoS(qos)
    sub = MQTTBroker(f"mqtt://{HOST}:{port}", logger=None)

    @sub.subscriber(topic, qos=level)
    async def handle(body: dict[str, Any]) -> None:
        counter.hit()

    pub = MQTTBroker(f"mqtt://{HOST}:{port}", logger=None)
    await sub.start()
    await pub.start()
    try:

        async def publish(seq: int) -> None:
            await pub.publish({"siteId": "default", **vb_data(seq)}, topic, qos=level)

        return await measure(n, warmup, counter, publish)
    finally:
        await pub.stop()
        await sub.stop()


def _paho_client(port: int, on_message: Any = None) -> paho.Client:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(INFLIGHT)
    client.max_queued_messages_set(0)
    if on_message is not None:
        client.on_message = on_message
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.connect(HOST, port)
    client.socket().setsockopt(*NODELAY[0])  # type: ignore[union-attr]
    client.loop_start()
    if not connected.wait(5):
        raise RuntimeError("paho did not connect")
    return client


def _paho_subscribe(client: paho.Client, topic: str, qos: int) -> None:
    done = threading.Event()
    client.on_subscribe = lambda *args: done.set()
    client.subscribe(topic, qos)
    if not done.wait(5):
        raise RuntimeError("paho: no SUBACK")


def paho_e2e(port: int, qos: int, n: int, warmup: int) -> Throughput:
    """Two paho clients, each on its own network thread; the main thread publishes."""
    topic = f"bench/paho/q{qos}"
    lock = threading.Lock()
    state = {"count": 0, "target": 0}
    reached = threading.Event()
    stamps: list[float] = []

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        json.loads(message.payload)
        with lock:
            state["count"] += 1
            if state["count"] == state["target"]:
                stamps.append(time.perf_counter())
                reached.set()

    sub = _paho_client(port, on_message)
    pub = _paho_client(port)
    try:
        _paho_subscribe(sub, topic, qos)

        def run(count: int, start: int) -> bool:
            with lock:
                state["count"], state["target"] = 0, count
            reached.clear()
            for seq in range(start, start + count):
                pub.publish(topic, raw_payload(seq), qos)
            last = -1
            while not reached.wait(STALL_SECONDS):
                if state["count"] == last:
                    return False
                last = state["count"]
            return True

        if warmup and not run(warmup, 0):
            return Throughput(0.0, 0.0, state["count"], warmup)
        cpu = time.process_time()
        began = time.perf_counter()
        ok = run(n, warmup)
        cpu = time.process_time() - cpu
        if not ok:
            return Throughput(0.0, 0.0, state["count"], n)
        return Throughput(n / (stamps[-1] - began), cpu / n * 1e6, n, n)
    finally:
        for client in (pub, sub):
            client.loop_stop()
            client.disconnect()


# --- round trips -------------------------------------------------------------------------


async def voicebus_rtt(url: str, qos: int, n: int, warmup: int) -> RoundTrip:
    """`bus.request` round trips, answered by a handler on another bus."""
    request, reply = REQUEST_REPLY[qos]
    responder = EventBus(url)

    async def respond(event: Event) -> None:
        await responder.emit(reply, event.data, correlation_id=event.correlation_id)

    responder.subscribe(request, respond)
    requester = EventBus(url)
    samples: list[float] = []
    lost = 0
    async with responder, requester:
        for i in range(warmup + n):
            began = time.perf_counter()
            answer = await requester.request(request, vb_data(i), reply, timeout=5.0)
            if answer is None:
                lost += 1
            elif i >= warmup:
                samples.append(time.perf_counter() - began)
    return percentiles(samples, lost)


async def aiomqtt_rtt(port: int, qos: int, n: int, warmup: int) -> RoundTrip:
    request_topic, reply_topic = f"bench/raw/request{qos}", f"bench/raw/reply{qos}"
    async with raw_client(port) as responder, raw_client(port) as requester:
        await responder.subscribe(request_topic, qos=qos)
        await requester.subscribe(reply_topic, qos=qos)

        async def respond() -> None:
            async for message in responder.messages:
                props_in = message.properties
                assert props_in is not None
                data = json.loads(message.payload)  # type: ignore[arg-type]
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.CorrelationData = props_in.CorrelationData
                await responder.publish(
                    props_in.ResponseTopic,
                    json.dumps(data, separators=(",", ":")).encode(),
                    qos=qos,
                    properties=props,
                )

        task = asyncio.create_task(respond())
        samples: list[float] = []
        lost = 0
        try:
            for i in range(warmup + n):
                cid = f"req-{i}".encode()
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.ResponseTopic = reply_topic
                props.CorrelationData = cid
                began = time.perf_counter()
                await requester.publish(request_topic, raw_payload(i), qos=qos, properties=props)
                while True:
                    try:
                        reply = await asyncio.wait_for(anext(requester.messages), 5.0)
                    except TimeoutError:
                        lost += 1
                        break
                    json.loads(reply.payload)  # type: ignore[arg-type]
                    if reply.properties is not None and reply.properties.CorrelationData == cid:
                        if i >= warmup:
                            samples.append(time.perf_counter() - began)
                        break
        finally:
            task.cancel()
        return percentiles(samples, lost)


def paho_rtt(port: int, qos: int, n: int, warmup: int) -> RoundTrip:
    """paho's two-thread ping-pong (each client on its network thread)."""
    request_topic, reply_topic = f"bench/paho/request{qos}", f"bench/paho/reply{qos}"
    got = threading.Event()
    expected = [b""]

    def respond(client: Any, userdata: Any, message: Any) -> None:
        data = json.loads(message.payload)
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.CorrelationData = message.properties.CorrelationData
        client.publish(
            message.properties.ResponseTopic,
            json.dumps(data, separators=(",", ":")).encode(),
            qos,
            properties=props,
        )

    def on_reply(client: Any, userdata: Any, message: Any) -> None:
        json.loads(message.payload)
        if message.properties.CorrelationData == expected[0]:
            got.set()

    responder = _paho_client(port, respond)
    requester = _paho_client(port, on_reply)
    samples: list[float] = []
    lost = 0
    try:
        _paho_subscribe(responder, request_topic, qos)
        _paho_subscribe(requester, reply_topic, qos)
        for i in range(warmup + n):
            cid = f"req-{i}".encode()
            expected[0] = cid
            got.clear()
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = reply_topic
            props.CorrelationData = cid
            began = time.perf_counter()
            requester.publish(request_topic, raw_payload(i), qos, properties=props)
            if not got.wait(5.0):
                lost += 1
            elif i >= warmup:
                samples.append(time.perf_counter() - began)
    finally:
        for client in (requester, responder):
            client.loop_stop()
            client.disconnect()
    return percentiles(samples, lost)
