"""voicebus on a real cluster: three nats-server nodes (JetStream + MQTT gateway,
MQTT 3.1.1 only) on loopback, ``protocol="3.1.1"``.

A publisher on node 1, subscribers on nodes 2 and 3: typed events keep their
correlation id, id and source across the cluster; a correlated request from node
3 is answered by a service on node 2; node 2 killed, its subscriber fails over to
node 3 through its multi-address URL and goes on receiving.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicebus import Event, EventBus, EventType
from voicebus.errors import BrokerUnavailableError
from voicebus.transport.mqtt import MqttTransport

from .helpers import Collector, eventually
from .nats import NATS_SERVER, NatsCluster

FAST = {"reconnect_delay": 0.05, "reconnect_max_delay": 0.5, "connect_timeout": 10}

pytestmark = pytest.mark.skipif(
    not Path(NATS_SERVER).exists(), reason="nats-server is not installed"
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nats = NatsCluster(tmp_path / "nats").start()
    yield nats
    nats.stop()


async def until_serving(url: str) -> None:
    """JetStream elects its leaders after the ports listen: MQTT connects fail until then."""

    async def connects() -> bool:
        try:
            async with EventBus(url, **FAST, reconnect=False):
                return True
        except BrokerUnavailableError:
            return False

    await eventually(connects, timeout=20, interval=0.2)


async def test_a_three_node_nats_cluster(cluster: NatsCluster) -> None:
    for node in (1, 2, 3):
        await until_serving(cluster.url(node))
    on2, on3 = Collector("node2"), Collector("node3")
    pub = EventBus(cluster.url(1), **FAST)
    sub2 = EventBus(cluster.url(2, 3), client_id=f"n2-{uuid.uuid4().hex[:6]}", **FAST)
    sub3 = EventBus(cluster.url(3), **FAST)
    sub2.subscribe(EventType.EMOTION_CHANGED, on2)
    sub3.subscribe(EventType.EMOTION_CHANGED, on3)

    async def decide(event: Event) -> None:  # a service on node 2
        text = event.data["text"]
        await sub2.emit(
            EventType.RESPONSE_GENERATED,
            {"response": f"re: {text}"},
            correlation_id=event.correlation_id,
        )

    sub2.subscribe(EventType.SPEECH_DETECTED, decide)
    async with pub, sub2, sub3:
        await sub2.ready()
        await sub3.ready()
        # typed events with their envelope, across the cluster
        await pub.emit(EventType.EMOTION_CHANGED, {"emotion": "calm"}, correlation_id="c-1")
        for got in (on2, on3):
            (event,) = await got.wait(1, timeout=10)
            assert event.type is EventType.EMOTION_CHANGED and event.data["emotion"] == "calm"
            assert event.correlation_id == "c-1" and event.source == pub.source
        # a correlated request from node 3, answered on node 2 (Hermes request:
        # its correlation travels as sessionId over 3.1.1)
        answer = await sub3.request(
            EventType.DECISION_MADE, {"text": "lights"}, EventType.RESPONSE_GENERATED, 0.5
        )
        assert answer is None  # nobody serves DECISION_MADE: the timeout case
        sub2.subscribe(EventType.DECISION_MADE, decide)
        await sub2.ready()
        answer = await sub3.request(
            EventType.DECISION_MADE,
            {"text": "lights"},
            EventType.RESPONSE_GENERATED,
            10,
            correlation_id="ask-1",
        )
        assert answer is not None and answer.correlation_id == "ask-1"
        assert answer.data["response"] == "re: lights" and answer.source == sub2.source
        # node 2 killed: its subscriber moves to node 3 and goes on receiving
        transport = sub2.transport
        assert isinstance(transport, MqttTransport)
        assert transport.broker == cluster.nodes[1].address
        cluster.nodes[1].kill()
        await eventually(
            lambda: transport.online and transport.broker == cluster.nodes[2].address,
            timeout=40,  # JetStream elects new stream leaders (4-9 s raft timeouts)
        )
        before = len(on2.events)
        for i in range(20):
            await pub.emit(EventType.EMOTION_CHANGED, {"emotion": f"after{i}"})
        await on2.wait(before + 20, timeout=10)
        after = [e.data["emotion"] for e in on2.events[before:]]
        assert after == [f"after{i}" for i in range(20)]
        # ... and its service too (every subscription made again on node 3)
        answer = await sub3.request(
            EventType.DECISION_MADE,
            {"text": "again"},
            EventType.RESPONSE_GENERATED,
            10,
            correlation_id="ask-2",
        )
        assert answer is not None and answer.data["response"] == "re: again"
