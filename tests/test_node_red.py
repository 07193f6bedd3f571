"""The shipped Node-RED flows (integrations/node-red/) in a real Node-RED, from npm.

One headless Node-RED per module (settings file, editor and admin API off, a flows
file) on a private Mosquitto: the shipped example flow plus a test tab that passes
what "voicebus in" makes of an event on to a topic of the test's own. conftest.py
stops the run when node-red is not installed (``npm ci``): never a silent skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.broker import Mosquitto
from tests.helpers import Collector, eventually
from voicebus import EventBus, EventType
from voicebus.config import BusConfig
from voicebus.transport import Message, Transport, open_transport, parse_url

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "integrations" / "node-red"
NODE_RED = ROOT / "node_modules" / ".bin" / "node-red"
STATUS = "voicebus/status/node-red-voicebus"
"""The example broker node's birth (and Last Will) topic: "online" once subscribed."""
SEEN = "test/nodeRed/seen"
"""Where the test tab publishes ``msg.event`` as "voicebus in" made it."""
DEAD_SEEN = "test/nodeRed/deadLetter/"
"""Where the test tab's dead-letter flows note what they got (and its retain flag)."""
SEEDED = "voicebus/deadLetter/seeded-1"
"""A retained dead letter on the broker before Node-RED starts."""

README = ROOT / "README.md"


def readme_settings() -> str:
    """The settings.js of the README's section "Node-RED" (the tests run that one)."""
    section = README.read_text("utf-8").split("## Node-RED\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```js\n", 1)[1].split("```", 1)[0]


def load(name: str) -> list[dict[str, Any]]:
    flows: list[dict[str, Any]] = json.loads((FLOWS / name).read_text("utf-8"))
    return flows


TAB = "7e57000000000000"


def mqtt_in(node_id: str, broker: str, topic: str, wires: str, rh: int = 0) -> dict[str, Any]:
    """An `mqtt in` node of the test tab (MQTT 5 options; `rh`: retain handling)."""
    return {
        "id": node_id, "type": "mqtt in", "z": TAB, "name": "", "topic": topic, "qos": "1",
        "datatype": "auto-detect", "broker": broker, "nl": False, "rap": True, "rh": rh,
        "inputs": 0, "wires": [[wires]],
    }  # fmt: skip


def function(node_id: str, body: str, wires: str) -> dict[str, Any]:
    return {
        "id": node_id, "type": "function", "z": TAB, "name": "", "func": body, "outputs": 1,
        "timeout": 0, "noerr": 0, "initialize": "", "finalize": "", "libs": [],
        "wires": [[wires]],
    }  # fmt: skip


def deployed_flows(port: int) -> list[dict[str, Any]]:
    """The shipped example (broker node pointed at `port`) plus the test tab: "voicebus
    in" on emotion_changed, its `msg.event` published on `SEEN`; two flows on the dead
    letters (retain handling 0 and 2) that publish what they got, retained, under
    `DEAD_SEEN`/rh0 and rh2."""
    flows = load("example-answer.json")
    broker = next(n for n in flows if n["type"] == "mqtt-broker")
    broker.update(broker="127.0.0.1", port=str(port))
    subflow_in = next(n for n in flows if n.get("name") == "voicebus in")["id"]
    out = "7e570000000000ff"
    # A connection of its own for the "Do not send" flow: Node-RED subscribes to a
    # filter once per connection (with the first node's options) and hands every
    # message to each node on that filter.
    broker2 = {**broker, "id": "7e570000000000b2", "clientid": "node-red-rh2"}
    for key in ("birthTopic", "closeTopic", "willTopic"):
        broker2[key] = ""
    tag = (
        "return {{topic: {prefix} + msg.topic.split('/').pop(), retain: true, qos: 1, "
        "payload: {{retain: msg.retain}}}};"
    )
    test_tab = [
        {"id": TAB, "type": "tab", "label": "test", "disabled": False, "info": ""},
        broker2,
        mqtt_in("7e57000000000001", broker["id"], "voicebus/emotion/changed", "7e57000000000002"),
        {
            "id": "7e57000000000002",
            "type": f"subflow:{subflow_in}",
            "z": TAB,
            "name": "",
            "env": [],
            "x": 300,
            "y": 60,
            "wires": [["7e57000000000003"]],
        },
        function(
            "7e57000000000003",
            f"return {{topic: {json.dumps(SEEN)}, payload: msg.event, qos: 1}};",
            out,
        ),
        mqtt_in("7e57000000000011", broker["id"], "voicebus/deadLetter/+", "7e57000000000012"),
        function("7e57000000000012", tag.format(prefix=json.dumps(DEAD_SEEN + "rh0/")), out),
        mqtt_in("7e57000000000021", broker2["id"], "voicebus/deadLetter/+", "7e57000000000022", 2),
        function("7e57000000000022", tag.format(prefix=json.dumps(DEAD_SEEN + "rh2/")), out),
        {
            "id": out,
            "type": "mqtt out",
            "z": TAB,
            "name": "",
            "topic": "",
            "qos": "",
            "retain": "",
            "broker": broker["id"],
            "wires": [],
        },
    ]
    return flows + test_tab


class NodeRed:
    """A headless Node-RED process and the seconds it took until its flows subscribed."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, ready_after: float) -> None:
        self.proc = proc
        self.log = log
        self.ready_after = ready_after


def mosquitto_pub(broker: Mosquitto, topic: str, payload: str, *extra: str) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", topic, "-m", payload,
         "-q", "1", *extra],
        check=True, timeout=10,
    )  # fmt: skip


def first_message(broker: Mosquitto, topic: str, timeout: float) -> str | None:
    """The first payload on `topic`, retained or live, within `timeout` s (mosquitto_sub)."""
    result = subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            str(int(timeout)),
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )
    return result.stdout.strip() if result.returncode == 0 else None


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("nr-mosquitto")) as b:
        yield b


@pytest.fixture(scope="module")
def node_red(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeRed]:
    """Node-RED with the shipped flows, ready: its broker node's birth message
    ("online", sent after its subscriptions) is on the status topic."""
    user_dir = tmp_path_factory.mktemp("node-red")
    (user_dir / "settings.js").write_text(readme_settings())
    (user_dir / "flows.json").write_text(json.dumps(deployed_flows(broker.port)))
    log = user_dir / "node-red.log"
    record = {"id": "seeded-1", "reason": "handler_error", "time": time.time()}
    mosquitto_pub(broker, SEEDED, json.dumps(record), "-r")
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(NODE_RED),
                "--settings",
                str(user_dir / "settings.js"),
                "--userDir",
                str(user_dir),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=user_dir,
        )
    try:
        if first_message(broker, STATUS, 30) != "online":
            pytest.fail(f"Node-RED did not come up (exit {proc.poll()}):\n{log.read_text()}")
        yield NodeRed(proc, log, time.monotonic() - started)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def watcher(broker: Mosquitto) -> AsyncIterator[tuple[Transport, list[Message]]]:
    """A raw connection that records every message on ``#`` (properties included)."""
    seen: list[Message] = []
    transport = open_transport(
        parse_url(broker.url()),
        client_id=f"nr-watch-{os.getpid()}",
        settings=BusConfig(status=False),
    )
    await transport.connect(seen.append)
    await transport.subscribe("#", 1)
    yield transport, seen
    await transport.close()


def test_shipped_subflows_are_the_ones_in_the_example() -> None:
    """The example imports on its own (it carries the subflows), and they do not drift."""
    subflows = load("voicebus-subflows.json")
    example = load("example-answer.json")
    assert [n for n in example if n["id"] in {s["id"] for s in subflows}] == subflows
    assert {n["name"] for n in subflows if n["type"] == "subflow"} == {
        "voicebus in",
        "voicebus reply",
    }


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_voicebus_in_exposes_the_envelope(
    node_red: NodeRed, broker: Mosquitto, protocol: str
) -> None:
    """MQTT 5: from the properties; a bus on 3.1.1: from the ``_vb`` key it folds into
    the payload (taken out of ``data``)."""
    async with EventBus(broker.url(), protocol=protocol) as bus:
        seen: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        side = open_transport(
            parse_url(broker.url()), client_id="nr-seen", settings=BusConfig(status=False)
        )
        await side.connect(lambda m: seen.put_nowait(json.loads(bytes(m.payload))))
        try:
            await side.subscribe(SEEN, 1)
            sent = await bus.emit(
                EventType.EMOTION_CHANGED,
                {"emotion": "happy"},
                correlation_id=f"sess-nr-{protocol}",
                metadata={"room": "kitchen"},
            )
            event = await asyncio.wait_for(seen.get(), 10)
        finally:
            await side.close()
    assert event["id"] == sent.id
    assert event["type"] == "emotion_changed"
    assert event["topic"] == "voicebus/emotion/changed"
    assert event["source"] == bus.client_id
    assert event["correlation_id"] == f"sess-nr-{protocol}"
    assert event["timestamp"] == pytest.approx(sent.timestamp, abs=1e-3)
    assert event["metadata"] == {"room": "kitchen"}
    assert event["parent_id"] is None
    assert event["data"] == sent.data


async def test_a_request_is_answered_through_voicebus_reply(
    node_red: NodeRed, broker: Mosquitto, watcher: tuple[Transport, list[Message]]
) -> None:
    _, raw = watcher
    async with EventBus(broker.url()) as requester, EventBus(broker.url()) as bystander:
        saw = Collector("bystander")
        bystander.subscribe(EventType.SPEECH_DETECTED, saw)
        bystander.subscribe(EventType.RESPONSE_GENERATED, saw)
        await bystander.ready()
        started = time.monotonic()
        reply = await requester.request(
            EventType.SPEECH_DETECTED,
            {"text": "what time is it"},
            EventType.RESPONSE_GENERATED,
            timeout=10,
        )
        round_trip = time.monotonic() - started
        assert reply is not None, "no reply from the flow (see node-red.log in its userDir)"
        request, echoed = await saw.wait(2)
    assert request.type is EventType.SPEECH_DETECTED
    assert echoed.type is EventType.RESPONSE_GENERATED
    assert reply.data["response"] == "You said: what time is it"
    assert reply.data["prompt"] == "what time is it"
    # the reply: the request's correlation id, an identity of its own
    assert reply.correlation_id == request.correlation_id is not None
    assert reply.id != request.id and reply.id.startswith("nodered-")
    assert reply.source == "node-red-llm" != request.source
    assert reply.parent_id == request.id
    assert (echoed.id, echoed.correlation_id, echoed.data) == (
        reply.id,
        reply.correlation_id,
        reply.data,
    )
    message = await eventually(
        lambda: next((m for m in raw if m.topic == reply.topic), None), timeout=5
    )
    keys = [key for key, _ in message.user_properties]
    assert sorted(keys) == ["id", "parent", "source", "time", "type"]  # none of the request's
    assert dict(message.user_properties)["type"] == "response_generated"
    print(
        f"Node-RED ready after {node_red.ready_after:.2f} s; request answered in "
        f"{round_trip * 1000:.0f} ms"
    )


async def test_dead_letter_flows_tell_retained_ones_by_msg_retain(
    node_red: NodeRed, broker: Mosquitto, watcher: tuple[Transport, list[Message]]
) -> None:
    """README, "Node-RED": a retained dead letter reaches a new flow again, with
    ``msg.retain`` true; "Retain handling: Do not send" (rh 2) leaves it out."""
    _, raw = watcher  # subscribed to "#" after Node-RED started: the notes are retained
    await asyncio.to_thread(mosquitto_pub, broker, "voicebus/deadLetter/live-1", "{}")

    def notes() -> dict[str, Any]:
        found = {m.topic[len(DEAD_SEEN) :]: json.loads(bytes(m.payload)) for m in raw
                 if m.topic.startswith(DEAD_SEEN)}  # fmt: skip
        return found if {"rh0/live-1", "rh2/live-1"} <= set(found) else {}

    found = await eventually(notes, timeout=10)
    assert found == {
        "rh0/seeded-1": {"retain": True},
        "rh0/live-1": {"retain": False},
        "rh2/live-1": {"retain": False},
    }
