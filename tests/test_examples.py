"""The worked Hermes examples in ``examples/``, run as a user runs them.

Each example runs as ``python examples/NAME.py`` with ``VOICEBUS_URL`` naming a
Mosquitto this module starts; it is ready when it prints its marker line and its
retained status is online. It is driven the way Rhasspy drives it: Hermes JSON
(rhasspy-hermes 0.6.2's own output, from the golden fixtures) published with
``mosquitto_pub -V 311``, so without any MQTT 5 property; the replies are read by
a raw MQTT 3.1.1 subscriber and checked against what rhasspy-hermes accepts.
The README's "Speaking Hermes" section shows these files verbatim.
"""

from __future__ import annotations

import json
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.broker import Mosquitto
from tests.test_cli import Background, cli_env
from tests.test_hermes_compat import EVENT_FOR_CLASS, FIXTURES, hermes_problems
from tests.test_service import assert_stopped_cleanly, status_of, stop
from voicebus import EventType
from voicebus.wire.routes import ROUTES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SECTION = "## Speaking Hermes"
TTS, INTENTS = "hermes_tts.py", "hermes_intents.py"
CLIENT_IDS = {TTS: "hermes-tts", INTENTS: "hermes-intents"}


class RawSubscriber:
    """A plain paho MQTT 3.1.1 client (no properties, like Rhasspy) recording messages."""

    def __init__(self, broker: Mosquitto, *filters: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, *_: c.subscribe([(f, 1) for f in filters])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self.messages.put((msg.topic, msg.payload))
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "the raw subscriber got no SUBACK"

    def next(self, timeout: float = 10.0) -> tuple[str, dict[str, Any]]:
        topic, payload = self.next_raw(timeout)
        return topic, json.loads(payload)

    def next_raw(self, timeout: float = 10.0) -> tuple[str, bytes]:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no reply within {timeout} s") from None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def raw(mosquitto: Mosquitto) -> Iterator[RawSubscriber]:
    sub = RawSubscriber(
        mosquitto, "hermes/tts/say", "hermes/tts/sayFinished", "hermes/dialogueManager/#"
    )
    try:
        yield sub
    finally:
        sub.close()


def hermes_pub(broker: Mosquitto, fixture: str) -> None:
    """Publish a golden fixture (rhasspy-hermes's own JSON) as Rhasspy does: MQTT 3.1.1."""
    topic, payload = FIXTURES[fixture]["topic"], json.dumps(FIXTURES[fixture]["payload"])
    argv = ["mosquitto_pub", "-V", "311", "-q", "1", "-p", str(broker.port), "-t", topic]
    subprocess.run([*argv, "-m", payload], check=True, timeout=10)


def start(name: str, broker: Mosquitto) -> Background:
    service = Background([sys.executable, str(EXAMPLES / name)], cli_env(broker.url()))
    service.wait_for(f"{CLIENT_IDS[name]}: ready")
    assert status_of(broker, CLIENT_IDS[name]) == "online"
    return service


def stop_cleanly(service: Background, broker: Mosquitto, name: str) -> None:
    code, _, err, elapsed = stop(service, signal.SIGTERM)
    assert_stopped_cleanly(code, err, elapsed, broker, CLIENT_IDS[name])


def accepted(cls: str, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
    assert hermes_problems(cls, topic, payload) == [], (topic, payload)
    return payload


def test_tts_service_answers_say_with_say_finished(
    mosquitto: Mosquitto, raw: RawSubscriber
) -> None:
    with start(TTS, mosquitto) as tts:
        hermes_pub(mosquitto, "tts_say_full")  # id say-1, session sess-1, site kitchen
        topic, reply = raw.next()
        assert (topic, reply) == ("hermes/tts/say", FIXTURES["tts_say_full"]["payload"])
        topic, reply = raw.next()
        assert topic == "hermes/tts/sayFinished"
        assert accepted("TtsSayFinished", topic, reply) == {
            "id": "say-1",
            "siteId": "kitchen",
            "sessionId": "sess-1",
        }
        hermes_pub(mosquitto, "tts_say_minimal")  # no id, no session
        assert raw.next()[0] == "hermes/tts/say"
        topic, reply = raw.next()
        assert accepted("TtsSayFinished", topic, reply) == {"siteId": "default"}
        tts.wait_for("tts: kitchen says 'hello'")
        stop_cleanly(tts, mosquitto, TTS)


def test_intent_handler_ends_the_session_or_says_the_answer(
    mosquitto: Mosquitto, raw: RawSubscriber
) -> None:
    with start(INTENTS, mosquitto) as intents, start(TTS, mosquitto) as tts:
        hermes_pub(mosquitto, "nlu_intent_full")  # LightOn, room=kitchen, in session sess-1
        topic, reply = raw.next()
        assert topic == "hermes/dialogueManager/endSession"
        assert accepted("DialogueEndSession", topic, reply) == {
            "sessionId": "sess-1",
            "text": "Turning on the kitchen light",
        }
        # outside a session: the handler asks the TTS to say it, the TTS answers
        hermes_pub(mosquitto, "nlu_intent_minimal")  # GetTime, no session
        topic, reply = raw.next()
        assert topic == "hermes/tts/say"
        assert accepted("TtsSay", topic, reply) == {
            "text": "Sorry, I cannot do GetTime yet",
            "siteId": "default",
        }
        topic, reply = raw.next()
        assert accepted("TtsSayFinished", topic, reply) == {"siteId": "default"}
        intents.wait_for("intents: LightOn -> 'Turning on the kitchen light'")
        stop_cleanly(intents, mosquitto, INTENTS)
        stop_cleanly(tts, mosquitto, TTS)


# --- the README shows the files as they are, and what they answer ----------------------


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start_at = text.index(SECTION)
    return text[start_at : text.find("\n## ", start_at + len(SECTION))]


def test_the_readme_commands_get_the_replies_it_shows(mosquitto: Mosquitto) -> None:
    section = readme_section()
    commands = [
        shlex.split(line)
        for block in re.findall(r"```bash\n(.*?)```", section, re.S)
        for line in block.replace("\\\n", " ").splitlines()
        if line.startswith("mosquitto_pub ")
    ]
    replies = re.findall(r"`(hermes/[^ `]+) (\{[^`]*\})`", section)
    assert len(commands) == len(replies) == 2
    sub = RawSubscriber(mosquitto, *(topic for topic, _ in replies))
    try:
        with start(TTS, mosquitto) as tts, start(INTENTS, mosquitto) as intents:
            for words, (topic, payload) in zip(commands, replies, strict=True):
                port = words.index("-p") + 1
                argv = [*words[:port], str(mosquitto.port), *words[port + 1 :], "-V", "311"]
                subprocess.run(argv, check=True, timeout=10)
                assert sub.next_raw() == (topic, payload.encode())  # byte for byte
            stop_cleanly(intents, mosquitto, INTENTS)
            stop_cleanly(tts, mosquitto, TTS)
    finally:
        sub.close()


def readme_snippets() -> dict[str, str]:
    found = {}
    for block in re.findall(r"```python\n(.*?)```", readme_section(), re.S):
        match = re.fullmatch(r"# (\w+\.py): .+", block.splitlines()[0])
        assert match, block.splitlines()[0]
        found[match.group(1)] = block
    return found


def test_the_readme_shows_the_examples_verbatim() -> None:
    snippets = readme_snippets()
    assert sorted(snippets) == sorted(p.name for p in EXAMPLES.glob("*.py"))
    for name, code in snippets.items():
        assert (EXAMPLES / name).read_text() == code, f"README and examples/{name} differ"


def test_the_readme_table_lists_every_hermes_type() -> None:
    rows = [line for line in readme_section().splitlines() if line.startswith("| `")]
    hermes = [r for r in ROUTES if r.template.template.startswith(("hermes/", "rhasspy/"))]
    assert {*EVENT_FOR_CLASS.values(), EventType.SPEECH_ENDED} <= {r.event_type for r in hermes}
    for route in hermes:
        event_type = route.event_type
        row = next((r for r in rows if f"`{event_type.name}`" in r), None)
        assert row is not None, f"{event_type.name} missing from the README's Hermes table"
        last = route.template.template.rsplit("/", 1)[-1]
        assert last in row and (route.hermes is None or route.hermes[:8] in row), row
