"""The Home Assistant bridge's own logic against a real Mosquitto: the state topic,
the discovery payloads, the birth message, services, restarts (without Home
Assistant; tests/test_homeassistant_real.py has the real one)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.broker import Mosquitto
from tests.helpers import eventually, marker
from voicebus import BusConfig, BusStateError, ConfigError, Event, EventBus, EventType, Message
from voicebus.homeassistant import (
    HomeAssistantBridge,
    SiteState,
    SiteStates,
    bridge_routes,
    slug,
)
from voicebus.transport import Transport, open_transport, parse_url
from voicebus.wire.routes import ROUTES
from voicebus.wire.status import status_topic

BRIDGE = "bridge-test"


class Observer:
    """A raw MQTT client recording every message on its filters, in order."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.transport: Transport | None = None

    def on(self, topic: str) -> list[Message]:
        return [m for m in self.messages if m.topic == topic]

    def json(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.on(topic) if m.payload]


@asynccontextmanager
async def observing(url: str, *filters: str) -> AsyncIterator[Observer]:
    seen = Observer()
    transport = open_transport(
        parse_url(url),
        client_id=f"observer-{uuid.uuid4().hex[:6]}",
        settings=BusConfig(status=False),
    )
    await transport.connect(seen.messages.append)
    for number, topic_filter in enumerate(filters, 1):
        await transport.subscribe(topic_filter, number)
    seen.transport = transport
    try:
        yield seen
    finally:
        await transport.close()


@asynccontextmanager
async def running_bridge(
    url: str, sites: tuple[str, ...] = (), prefix: str = "homeassistant", client_id: str = BRIDGE
) -> AsyncIterator[HomeAssistantBridge]:
    async with EventBus(url, client_id=client_id, routes=bridge_routes(prefix)) as bus:
        bridge = HomeAssistantBridge(bus, sites=sites, prefix=prefix)
        await bridge.start()
        yield bridge


def _configs(seen: Observer, prefix: str = "homeassistant") -> dict[str, dict[str, Any]]:
    """The last discovery config per topic (empty payload: None)."""
    found: dict[str, Any] = {}
    for m in seen.messages:
        if m.topic.startswith(prefix + "/") and m.topic.endswith("/config"):
            found[m.topic] = json.loads(m.payload) if m.payload else None
    return found


async def test_state_topic_follows_an_utterance(fresh_mosquitto: Mosquitto) -> None:
    url = fresh_mosquitto.url()
    async with (
        observing(url, "voicebus/site/+/state") as seen,
        running_bridge(url, ("kitchen",)),
        EventBus(url, client_id="pipeline") as bus,
    ):
        topic = "voicebus/site/kitchen/state"
        await eventually(lambda: seen.json(topic))
        assert seen.json(topic)[0] == {
            "siteId": "kitchen",
            "wakewordId": None,
            "transcript": None,
            "response": None,
            "tts": "idle",
            "sessionId": None,
            "updated": None,
        }
        cid = "utt-1"
        await bus.emit(
            EventType.WAKE_WORD_DETECTED,
            {"wakewordId": "hey_jarvis", "siteId": "kitchen"},
            correlation_id=cid,
        )
        await bus.emit(
            EventType.SPEECH_DETECTED,
            {"text": "lights on", "siteId": "kitchen"},
            correlation_id=cid,
        )
        # no siteId: the site of its correlation id
        await bus.emit(EventType.RESPONSE_GENERATED, {"response": "Done."}, correlation_id=cid)
        await bus.emit(EventType.TTS_STARTED, {"text": "Done."}, correlation_id=cid)
        await eventually(lambda: seen.json(topic)[-1]["tts"] == "speaking")
        await bus.emit(EventType.TTS_COMPLETED, {}, correlation_id=cid)
        await eventually(lambda: len(seen.json(topic)) == 6)
        last = seen.json(topic)[-1]
        assert {k: v for k, v in last.items() if k != "updated"} == {
            "siteId": "kitchen",
            "wakewordId": "hey_jarvis",
            "transcript": "lights on",
            "response": "Done.",
            "tts": "idle",
            "sessionId": cid,
        }
        assert datetime.fromisoformat(last["updated"]).tzinfo is not None
        assert all(m.retain is False for m in seen.on(topic))  # live copies
        assert "voicebus/site/default/state" not in {m.topic for m in seen.messages}
    async with observing(url, "voicebus/site/+/state") as later:  # retained for newcomers
        await eventually(lambda: later.json(topic))
        assert later.json(topic) == [last] and later.on(topic)[0].retain


async def test_discovery_configs(fresh_mosquitto: Mosquitto) -> None:
    url = fresh_mosquitto.url()
    async with observing(url, "homeassistant/#") as seen, running_bridge(url, ("kitchen",)):
        node = "homeassistant/{}/voicebus_kitchen/{}/config"
        wanted = {
            node.format("event", "wake_word"),
            node.format("sensor", "transcript"),
            node.format("sensor", "response"),
            node.format("sensor", "tts"),
            f"homeassistant/binary_sensor/voicebus_{BRIDGE}/status/config",
        }
        await eventually(lambda: wanted <= set(_configs(seen)))
        configs = _configs(seen)
        assert all(m.retain is False for m in seen.messages)  # nothing left behind
        wake = configs[node.format("event", "wake_word")]
        assert wake["state_topic"] == ROUTES.get(EventType.WAKE_WORD_DETECTED).filter
        assert wake["event_types"] == ["detected"]
        assert wake["object_id"] == "voicebus_kitchen_wake_word"
        tts = configs[node.format("sensor", "tts")]
        assert tts["state_topic"] == "voicebus/site/kitchen/state"
        assert (tts["device_class"], tts["options"]) == ("enum", ["speaking", "idle"])
        for topic in wanted - {f"homeassistant/binary_sensor/voicebus_{BRIDGE}/status/config"}:
            config = configs[topic]
            assert config["availability_topic"] == status_topic(BRIDGE)
            assert config["device"]["identifiers"] == ["voicebus_kitchen"]
            assert config["device"]["name"] == "voicebus kitchen"
            # templates read the payload with .get(): a missing key never fails rendering
            template = config["value_template"]
            assert "value_json" in template and not re.search(r"value_json\.(?!get\()", template)
        service = configs[f"homeassistant/binary_sensor/voicebus_{BRIDGE}/status/config"]
        assert service["state_topic"] == status_topic(BRIDGE)
        assert service["device_class"] == "connectivity" and "availability_topic" not in service


async def test_a_service_gets_a_sensor_and_loses_it_when_its_status_is_cleared(
    fresh_mosquitto: Mosquitto,
) -> None:
    url = fresh_mosquitto.url()
    stt = "homeassistant/binary_sensor/voicebus_stt/status/config"
    async with observing(url, "homeassistant/#") as seen, running_bridge(url) as bridge:
        async with EventBus(url, client_id="stt"), EventBus(url, status=True) as anonymous:
            await eventually(lambda: _configs(seen).get(stt))
            # the bridge handled what came before the marker: the anonymous bus's status
            await marker(anonymous, bridge.bus)
        await eventually(lambda: "stt" in bridge.services)
        assert anonymous.client_id not in bridge.services
        assert not [t for t in _configs(seen) if slug(anonymous.client_id) in t]
        assert seen.transport is not None
        await seen.transport.publish(Message(status_topic("stt"), b"", 1, True))  # pruned
        await eventually(lambda: stt in _configs(seen) and _configs(seen)[stt] is None)
        assert "stt" not in bridge.services


async def test_birth_message_republishes_discovery(fresh_mosquitto: Mosquitto) -> None:
    url = fresh_mosquitto.url()
    async with (
        observing(url, "homeassistant/+/+/+/config") as seen,
        running_bridge(url, ("kitchen", "office")) as bridge,
    ):
        await eventually(lambda: len(_configs(seen)) == 9)  # 2 sites x 4, the bridge
        assert bridge.discovery_rounds == 1
        first = len(seen.messages)
        assert seen.transport is not None
        await seen.transport.publish(Message("homeassistant/status", b"offline", 1, False))
        await seen.transport.publish(Message("homeassistant/status", b"online", 1, False))
        await eventually(lambda: len(seen.messages) >= first + 9)
        assert bridge.discovery_rounds == 2  # "offline" (handled before) asks nothing
        again = {m.topic for m in seen.messages[first:]}
        assert again == set(_configs(seen))


async def test_birth_message_restores_states_a_broker_lost(fresh_mosquitto: Mosquitto) -> None:
    url = fresh_mosquitto.url()
    topic = "voicebus/site/kitchen/state"
    async with observing(url, "voicebus/site/+/state") as seen, running_bridge(url, ("kitchen",)):
        await eventually(lambda: seen.on(topic))
        assert seen.transport is not None
        await seen.transport.publish(Message(topic, b"", 1, True))  # as if lost
        await seen.transport.publish(Message("homeassistant/status", b"online", 1, False))
        await eventually(lambda: len(seen.on(topic)) == 3)  # the state, the clear, again
        first, cleared, again = seen.on(topic)
        assert cleared.payload == b"" and again.payload == first.payload  # the same state


async def test_another_prefix(fresh_mosquitto: Mosquitto) -> None:
    url = fresh_mosquitto.url()
    async with observing(url, "ha2/#", "homeassistant/#") as seen:
        async with running_bridge(url, ("kitchen",), prefix="ha2") as bridge:
            await eventually(lambda: len(_configs(seen, "ha2")) == 5)
            assert seen.transport is not None
            await seen.transport.publish(Message("homeassistant/status", b"online", 1, False))
            await seen.transport.publish(Message("ha2/status", b"online", 1, False))
            await eventually(lambda: bridge.discovery_rounds == 2)
        assert not _configs(seen, "homeassistant")
    with pytest.raises(ConfigError, match="prefix"):
        async with EventBus(url, routes=bridge_routes("ha2")) as bus:
            HomeAssistantBridge(bus, prefix="homeassistant")


async def test_a_restarted_bridge_keeps_its_sites(fresh_mosquitto: Mosquitto) -> None:
    url = fresh_mosquitto.url()
    async with running_bridge(url) as first, EventBus(url, client_id="stt") as bus:
        await bus.emit(EventType.SPEECH_DETECTED, {"text": "open the door", "siteId": "garage"})
        await eventually(lambda: first.states.sites.get("garage"))
        await eventually(lambda: first.states.sites["garage"].transcript)
    async with (
        observing(url, "homeassistant/+/+/+/config") as seen,
        running_bridge(url) as second,
    ):
        assert second.states.sites["garage"].transcript == "open the door"
        await eventually(
            lambda: "homeassistant/sensor/voicebus_garage/transcript/config" in _configs(seen)
        )


async def test_state_topics_are_no_dead_letters_for_other_buses(
    fresh_mosquitto: Mosquitto,
) -> None:
    url = fresh_mosquitto.url()
    async with EventBus(url) as everything:
        everything.subscribe("#", lambda _e: None)
        await everything.ready()
        async with running_bridge(url, ("kitchen",)):
            await marker(everything)
        assert everything.get_dead_letter_queue() == []


def test_site_ids_that_need_a_slug() -> None:
    assert slug("kitchen") == "kitchen" and slug("living-room") == "living-room"
    assert slug("Küche") != slug("K_che") and slug("Küche").startswith("K_che_")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--url", "memory://"], "needs a broker"),
        (["--url", "mqtt://127.0.0.1:1", "--site", "a/b"], "--site 'a/b'"),
    ],
)
def test_the_command_refuses_bad_input_before_connecting(args: list[str], error: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "voicebus", "homeassistant", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and error in done.stderr, done.stderr


async def test_close_stops_bridging(fresh_mosquitto: Mosquitto) -> None:
    url = fresh_mosquitto.url()
    async with running_bridge(url) as bridge, EventBus(url, client_id="stt") as bus:
        with pytest.raises(BusStateError):
            await bridge.start()
        bridge.close()
        await bus.emit(EventType.SPEECH_DETECTED, {"text": "hi", "siteId": "attic"})
        await marker(bus, bridge.bus)
        assert "attic" not in bridge.states.sites


ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "integrations" / "homeassistant"


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Home Assistant\n")
    return text[start : text.index("\n## ", start + 1)]


def test_the_readme_yaml_is_the_shipped_yaml() -> None:
    """The real Home Assistant test loads the shipped files; the README shows them."""
    blocks = re.findall(r"```yaml\n(.*?)```", _readme_section(), re.S)
    shipped = [
        yaml.safe_load((SHIPPED / n).read_text()) for n in ("scripts.yaml", "automations.yaml")
    ]
    assert [yaml.safe_load(block) for block in blocks] == shipped


def test_documented_templates_read_payloads_with_get() -> None:
    texts = [(ROOT / "README.md").read_text()]
    texts += [p.read_text() for p in sorted(SHIPPED.glob("*.yaml"))]
    for text in texts:
        unsafe = re.findall(r"(?:value_json|payload_json)\.(?!get\()\w+", text)
        assert not unsafe, unsafe


def test_a_retained_state_is_read_back_tolerantly() -> None:
    good = SiteState(
        "kitchen", "hey", "lights on", "Done.", "speaking", "s-1", "2026-11-30T00:00:00"
    )
    assert SiteState.from_payload("kitchen", good.payload()) == good
    for odd in (b"", b"not json", b"[1, 2]", b'{"transcript": 5, "tts": "singing"}'):
        assert SiteState.from_payload("kitchen", odd) == SiteState("kitchen")


def test_events_without_a_site_go_to_the_site_of_their_utterance() -> None:
    states = SiteStates(sessions=1)
    kitchen = Event(EventType.SPEECH_DETECTED, {"text": "hi", "siteId": "kitchen"})
    kitchen.correlation_id = "a"
    states.apply(kitchen)
    response = Event(EventType.RESPONSE_GENERATED, {"response": "ok", "siteId": "default"})
    response.correlation_id = "a"
    assert states.apply(response) is states.sites["kitchen"]
    office = Event(EventType.SPEECH_DETECTED, {"text": "yo", "siteId": "office"})
    office.correlation_id = "b"  # remembers one utterance only: "a" is forgotten
    states.apply(office)
    assert states.apply(response) is states.sites["default"]
    bad = Event(EventType.SPEECH_DETECTED, {"text": "x", "siteId": "a/b"})  # no topic level
    assert states.apply(bad) is None and "a/b" not in states.sites


def test_the_bridge_uses_the_public_bus_api_only() -> None:
    """No transport, no CLI, no private attribute of another object (``bus._x``)."""
    from tests.test_architecture import PACKAGE, _imports, _in, _modules

    package = [m for m in _modules() if _in(m, "voicebus.homeassistant")]
    assert package
    for module in package:
        wrong = {i for i in _imports(module) if _in(i, "voicebus.transport", "voicebus.cli")}
        assert not wrong, (module, wrong)
    for path in sorted((PACKAGE / "homeassistant").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                assert own or node.attr.startswith("__"), f"{path.name}:{node.lineno} {node.attr}"
