"""Every command in the README's ```bash blocks, run against a broker the tests start.

The commands are extracted from README.md, one test each, in README order; a
command no handler below knows fails its test, so a new README command needs a
test here. ``127.0.0.1:1883`` / ``-p 1883`` become this module's broker; a
command that cannot run here (pip, docker, the test suite itself) has an
equivalent check, named in its handler.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.broker import CONFIGS, Mosquitto
from tests.helpers import eventually
from tests.test_cli import Background, cli_env, voicebus
from voicebus import EventBus, EventType
from voicebus.cli.demo import Engines, run_demo
from voicebus.errors import DeadLetterNotFoundError
from voicebus.ops.dlq import get_dead_letter
from voicebus.ops.retained import read_retained
from voicebus.testing import record

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_PORT = "1883"

SAMPLES: dict[str, dict[str, Any]] = {
    "speech_detected": {"text": "turn on the light"},
    "tts_completed": {"id": "say-1"},
}
"""Payloads the tests send when a README command waits or listens for an event type."""


@dataclass
class Command:
    words: list[str]
    line: str
    exported_url: bool  # an `export VOICEBUS_URL=...` came before it in the README

    @property
    def id(self) -> str:
        return " ".join(self.words)[:60]


def readme_commands() -> list[Command]:
    commands: list[Command] = []
    exported = False
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                command, words = words[:cut], words[cut + 1 :]
                commands.append(Command(command, line.strip(), exported))
                if command[:1] == ["export"] and command[1].startswith("VOICEBUS_URL="):
                    exported = True
    return commands


COMMANDS = readme_commands()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A broker of this module's own, from mosquitto/mosquitto.conf (dlq purges it)."""
    with Mosquitto(tmp_path_factory.mktemp("readme-broker")) as mosquitto:
        yield mosquitto


class Session:
    def __init__(self, broker: Mosquitto, command: Command) -> None:
        self.broker = broker
        self.command = command
        self.url = broker.url()

    def rewrite(self, words: list[str]) -> list[str]:
        port = str(self.broker.port)
        out = [w.replace(f"127.0.0.1:{README_PORT}", f"127.0.0.1:{port}") for w in words]
        return [port if w == README_PORT and out[i - 1] == "-p" else w for i, w in enumerate(out)]

    def bus_url(self) -> str | None:
        return self.url if self.command.exported_url else None

    def emit(self, event_type: str, correlation_id: str | None = None) -> None:
        async def send() -> None:
            async with EventBus(self.url) as bus:
                await bus.emit(event_type, SAMPLES[event_type], correlation_id=correlation_id)

        asyncio.run(send())

    def dead_letter(self) -> str:
        """Make a dead letter on the broker (an invalid textCaptured); return its id."""

        async def make() -> str:
            async with EventBus(self.url) as bus:
                bus.subscribe(EventType.SPEECH_DETECTED, lambda event: None)
                await bus.ready()
                before = {r.get("id") for r in bus.get_dead_letter_queue()}
                mosquitto_pub(self.broker, "hermes/asr/textCaptured", '{"no": "text"}')

                def recorded() -> list[dict[str, Any]]:
                    return [r for r in bus.get_dead_letter_queue() if r.get("id") not in before]

                new = str((await eventually(recorded))[0]["id"])
                await eventually(lambda: retained(bus, new))  # its retained publish
                return new

        return asyncio.run(make())


async def retained(bus: EventBus, dead_letter_id: str) -> bool:
    """The dead letter is on the broker."""
    try:
        await get_dead_letter(bus, dead_letter_id)
    except DeadLetterNotFoundError:
        return False
    return True


def mosquitto_pub(broker: Mosquitto, topic: str, payload: str) -> None:
    subprocess.run(
        ["mosquitto_pub", "-p", str(broker.port), "-t", topic, "-m", payload],
        check=True,
        timeout=10,
    )


def option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


# --- handlers, by program ----------------------------------------------------------------


def run_voicebus(s: Session, words: list[str]) -> None:
    args = s.rewrite(words)[1:]
    url = s.bus_url()
    if args[0] == "listen":
        with Background.voicebus(*args, url=url) as listen:
            listen.wait_for("listening on", "stderr")
            s.emit("speech_detected", option(args, "--correlation-id"))
            listen.wait_for("speech_detected")
            code, _, err = listen.finish(signal.SIGINT)
        assert code == 0 and "Traceback" not in err, err
        return
    if args[0] == "arbiter":  # a service: two wake words, the less likely one cancelled
        with Background.voicebus(*args, url=url) as arbiter:
            arbiter.wait_for("arbiter ready")

            async def two_sites() -> None:
                async with EventBus(s.url) as bus:
                    for site, likelihood in (("hall", 0.5), ("kitchen", 0.8)):
                        data = {"siteId": site, "likelihood": likelihood}
                        await bus.emit(EventType.WAKE_WORD_DETECTED, data, correlation_id=site)

            asyncio.run(two_sites())
            arbiter.wait_for("kitchen (0.80) wins; cancelled: hall (0.50)")
            code, _, err = arbiter.finish(signal.SIGINT)
        assert code == 0 and "Traceback" not in err, err
        return
    if args[0] == "homeassistant":  # a service: a transcript lands in its site's state
        run_homeassistant(s, args, url)
        return
    if args[0] == "wait":
        with Background.voicebus(*args, url=url) as waiting:
            waiting.wait_for("waiting for", "stderr")
            s.emit(args[1], option(args, "--correlation-id"))
            code, out, err = waiting.finish()
        assert code == 0, err
        assert json.loads(out)["type"] == args[1]
        return
    if args[:1] == ["dlq"] and "ID" in args:
        args[args.index("ID")] = s.dead_letter()
    if args[0] in ("record", "trace", "replay"):
        run_timeline(s, args)
        return
    result = voicebus(*args, url=url)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    if args[0] == "demo":
        assert "from wake word to sayFinished" in result.stdout
    if args[0] == "topics":
        assert "hermes/asr/textCaptured" in result.stdout
    if args[0] == "satellite-config":
        assert "bridge_protocol_version mqttv50" in result.stdout
        assert f"address 127.0.0.1:{s.broker.port}" in result.stdout


def run_homeassistant(s: Session, args: list[str], url: str | None) -> None:
    """The bridge announces its sites and keeps their retained state topics."""
    with Background.voicebus(*args, url=url) as bridge:
        bridge.wait_for("homeassistant bridge ready")
        sites = sorted(args[i + 1] for i, word in enumerate(args) if word == "--site")
        assert f"sites: {', '.join(sites)}" in bridge.text() and "kitchen" in sites

        async def transcript() -> None:
            async with EventBus(s.url) as bus:
                data = {"text": "turn on the light", "siteId": "kitchen"}
                await bus.emit(EventType.SPEECH_DETECTED, data)

                async def stored() -> bool:
                    found = await read_retained(bus, "voicebus/site/kitchen/state")
                    state = json.loads(found.get("voicebus/site/kitchen/state", b"{}"))
                    return bool(state.get("transcript") == "turn on the light")

                await eventually(stored, timeout=10, interval=0.05)

        asyncio.run(transcript())
        code, _, err = bridge.finish(signal.SIGINT)
    assert code == 0 and "Traceback" not in err, err


def run_timeline(s: Session, args: list[str]) -> None:
    """record: a demo utterance while it runs, stopped by Ctrl-C; trace --from and
    replay: on that recording (made here when this test runs alone)."""
    recording = s.broker.workdir / "session.jsonl"
    args = [str(recording) if a == "session.jsonl" else a for a in args]
    if args[0] == "record":
        with Background.voicebus(*args, url=s.bus_url()) as recorder:
            recorder.wait_for("recording #", "stderr")
            asyncio.run(run_demo(s.url, 1, Engines(scale=0)))
            code, _, err = recorder.finish(signal.SIGINT)
        assert code == 0 and "recorded 8 message(s)" in err, err
        return
    if not recording.exists():

        async def make() -> None:
            async with record(s.url) as made:
                await run_demo(s.url, 1, Engines(scale=0))
            made.save(recording)

        asyncio.run(make())
    result = voicebus(*args, url=s.bus_url())
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    if args[0] == "trace":
        assert result.stdout.startswith("trace demo-") and "tts_completed" in result.stdout
    else:
        assert result.stdout.startswith("replayed 8 message(s)")


def run_pip(s: Session, words: list[str]) -> None:
    """Equivalent: this checkout is installed editable with its console script and
    the dev extra (the tests cannot reinstall the package they run from)."""
    assert words == ["pip", "install", "-e", ".[dev]"]
    installed = [
        d
        for d in distributions()
        if d.metadata["Name"] == "voicebus" and d.read_text("direct_url.json")
    ]  # (a voicebus.egg-info in the checkout has no direct_url.json)
    assert installed, "voicebus is not pip-installed"
    dist = installed[0]
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    assert direct.get("dir_info", {}).get("editable") is True
    assert Path(direct["url"].removeprefix("file://")).resolve() == ROOT
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts["voicebus"] == "voicebus.cli:app"
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", req)[0] for req in dev["dev"]}
    assert {"pytest", "pytest-asyncio", "ruff", "mypy", "pyyaml"} <= names


def run_python(s: Session, words: list[str]) -> None:
    if words == ["python", "-m", "pytest", "-q"]:
        # Equivalent: this very module runs under that command; pytest finds it there.
        config = tomllib.loads((ROOT / "pyproject.toml").read_text())
        assert config["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]
        assert Path(__file__).parent == ROOT / "tests"
        return
    if words == ["python", "benchmarks/bench.py"]:
        # The full benchmark takes minutes: its smoke run (--quick, ~15 s), every peer
        # and every table once (a speed is never asserted here).
        result = subprocess.run(
            [sys.executable, words[1], "--quick"], capture_output=True, text=True,
            timeout=120, cwd=ROOT, env=cli_env(),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert "#13 Done when" in result.stdout and "FAILED" not in result.stdout, result.stdout
        assert "not installed" not in result.stdout, "pip install -e '.[bench]'"
        return
    raise AssertionError(f"no test for {words}")


def run_bash(s: Session, words: list[str]) -> None:
    """Equivalent for the CI script (it makes a venv and runs this suite): it exists,
    is executable and runs ruff, mypy --strict and the README's test command."""
    assert words == ["bash", ".ci/run"]
    script = ROOT / ".ci" / "run"
    assert script.stat().st_mode & stat.S_IXUSR
    text = script.read_text()
    for step in ("ruff check", "mypy --strict voicebus", "python -m pytest -q"):
        assert step in text


def run_export(s: Session, words: list[str]) -> None:
    """The exported URL is what the later voicebus commands get (rewritten to our broker)."""
    name, _, value = s.rewrite(words)[1].partition("=")
    assert name == "VOICEBUS_URL" and value == s.url


def run_mosquitto(s: Session, words: list[str]) -> None:
    """Equivalent: this module's broker is that config started by tests/broker.py on a
    free port (the tests never bind 1883)."""
    assert words[:2] == ["mosquitto", "-c"] and (ROOT / words[2]).is_file()
    assert (ROOT / words[2]).resolve() == (CONFIGS / "mosquitto.conf").resolve()
    assert s.broker.proc is not None and s.broker.proc.poll() is None


def run_mosquitto_sub(s: Session, words: list[str]) -> None:
    argv = ["stdbuf", "-oL", *s.rewrite(words), "-d", "-W", "10"]
    with Background(argv) as sub:
        sub.wait_for("received SUBACK")
        s.emit("speech_detected")
        sub.wait_for("hermes/asr/textCaptured {")
        sub.finish(signal.SIGTERM)


def run_mosquitto_pub(s: Session, words: list[str]) -> None:
    """What mosquitto_pub sends arrives at a bus as a valid event (sessionId as the
    correlation id)."""
    argv = s.rewrite(words)
    topic = option(argv, "-t")
    payload = json.loads(option(argv, "-m") or "{}")
    assert topic is not None

    async def check() -> None:
        async with EventBus(s.url) as bus:
            waiting = bus.wait_for(topic, timeout=10)
            await bus.request(EventType.HEALTH_CHECK, {}, EventType.HEALTH_CHECK, 5)
            proc = await asyncio.create_subprocess_exec(*argv)
            assert await proc.wait() == 0
            event = await waiting
        assert event is not None, "mosquitto_pub's message did not arrive as an event"
        if "sessionId" in payload:
            assert event.correlation_id == payload["sessionId"]

    asyncio.run(check())


def run_docker(s: Session, words: list[str]) -> None:
    """Equivalent (no Docker engine here): the services and profiles the command
    names exist in docker-compose.yml; tests/test_compose.py checks the rest."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    rest = words[2:] if words[:2] == ["docker", "compose"] else None
    assert rest is not None, words
    profile = option(rest, "--profile")
    if profile is not None:
        assert any(profile in svc.get("profiles", []) for svc in services.values())
        rest = [w for w in rest if w not in ("--profile", profile)]
    named = [w for w in rest[1:] if not w.startswith("-")]
    assert rest[0] in ("up", "run", "down", "logs")
    for name in named:
        assert name in services, name
        if profile is None and rest[0] == "up":
            assert "profiles" not in services[name]


HANDLERS: dict[str, Callable[[Session, list[str]], None]] = {
    "voicebus": run_voicebus,
    "pip": run_pip,
    "python": run_python,
    "bash": run_bash,
    "export": run_export,
    "mosquitto": run_mosquitto,
    "mosquitto_sub": run_mosquitto_sub,
    "mosquitto_pub": run_mosquitto_pub,
    "docker": run_docker,
}


def test_the_readme_has_the_two_commands() -> None:
    lines = list(dict.fromkeys(c.line for c in COMMANDS))
    assert lines[0].startswith("pip install -e '.[dev]' && voicebus demo")
    assert lines[1].startswith("python -m pytest -q")
    assert not any(c.exported_url for c in COMMANDS[:3])  # the demo runs without a broker


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_readme_command(command: Command, broker: Mosquitto) -> None:
    handler = HANDLERS.get(command.words[0])
    assert handler is not None, f"README command without a test: {command.line}"
    handler(Session(broker, command), command.words)
