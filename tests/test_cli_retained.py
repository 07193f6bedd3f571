"""What the CLI leaves on, and reads from, a broker's retained topics: `listen` shows
what is published now (retained messages only with --retained), `status` and `dlq
list` publish nothing any other client sees, `status --prune` clears offline ones."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.broker import Mosquitto
from tests.helpers import eventually
from tests.test_cli import Background, mosquitto_pub, voicebus
from voicebus import EventBus, EventType
from voicebus.config import BusConfig
from voicebus.transport import Message, Transport, open_transport, parse_url


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("cli-retained")) as b:
        yield b


@pytest.fixture
async def everything(broker: Mosquitto) -> AsyncIterator[list[Message]]:
    """Every message on ``#`` (what a Node-RED or Home Assistant flow on # would see)."""
    seen: list[Message] = []
    transport: Transport = open_transport(
        parse_url(broker.url()), client_id=f"all-{uuid.uuid4().hex[:6]}",
        settings=BusConfig(status=False),
    )  # fmt: skip
    await transport.connect(seen.append)
    await transport.subscribe("#", 1)
    yield seen
    await transport.close()


async def test_listen_count_1_prints_the_event_not_a_retained_status(broker: Mosquitto) -> None:
    mosquitto_pub(broker, "voicebus/status/gone-service", "offline", "-r")
    mosquitto_pub(broker, "voicebus/deadLetter/old-1", '{"id": "old-1"}', "-r")
    try:
        with Background.voicebus("listen", "--count", "1", "--json", url=broker.url()) as listen:
            listen.wait_for("listening on", "stderr")
            async with EventBus(broker.url()) as bus:  # as the quick start: no status
                sent = await bus.emit(EventType.SPEECH_DETECTED, {"text": "fresh"})
            code, out, err = listen.finish(timeout=10)
        assert code == 0, err
        (line,) = out.splitlines()
        record = json.loads(line)
        assert (record["id"], record["type"], record["retain"]) == (
            sent.id,
            "speech_detected",
            False,
        )
        assert record["timestamp"] == pytest.approx(sent.timestamp)  # the key of `wait`
        assert "time" not in record
        shown = voicebus("listen", "--count", "2", "--retained", url=broker.url())
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.count("(retained)") == 2, shown.stdout
    finally:
        for topic in ("voicebus/status/gone-service", "voicebus/deadLetter/old-1"):
            mosquitto_pub(broker, topic, "", "-r")


async def test_status_and_dlq_list_publish_nothing_others_see(
    broker: Mosquitto, everything: list[Message]
) -> None:
    for command in (["status"], ["dlq", "list"]):
        result = await run(*command, url=broker.url())
        assert result.returncode == 0, result.stderr
    end = f"test/end/{uuid.uuid4().hex}"
    mosquitto_pub(broker, end, "end")
    await eventually(lambda: any(m.topic == end for m in everything))
    assert [m.topic for m in everything if not m.retain] == [end]


async def test_status_prune_clears_offline_statuses_only(broker: Mosquitto) -> None:
    gone = f"prune-offline-{uuid.uuid4().hex[:6]}"
    async with EventBus(broker.url(), client_id=f"prune-online-{uuid.uuid4().hex[:6]}") as bus:
        async with EventBus(broker.url(), client_id=gone):
            pass
        before = json.loads((await run("status", "--json", url=broker.url())).stdout)
        assert {"client_id": gone, "status": "offline"} in before
        pruned = await run("status", "--prune", "--json", url=broker.url())
        assert pruned.returncode == 0, pruned.stderr
        assert "offline status(es): " in pruned.stderr and gone in pruned.stderr
        after = {e["client_id"]: e["status"] for e in json.loads(pruned.stdout)}
        assert after.get(bus.client_id) == "online" and "offline" not in after.values()


async def run(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """`voicebus ARGS` in a subprocess, without blocking the test's event loop."""
    import asyncio

    return await asyncio.to_thread(voicebus, *args, url=url)
