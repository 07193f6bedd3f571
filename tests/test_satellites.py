"""Satellites over Mosquitto bridges made by ``voicebus satellite-config``: a
central Mosquitto and two satellite Mosquittos, each bridged to the central one,
with the demo pipeline split across them (`voicebus.cli.satellite_demo`): wake
word and playback on each satellite's broker, STT, LLM and TTS on the central one.

One utterance per site completes (wake word -> STT -> LLM -> TTS -> that site's
speaker) with its correlation id, ids, sources and parent ids intact, and each
site hears only its own answer. Then the central broker is down for 10 s: the
satellites' local traffic goes on, and the QoS 1 events the bridges queued
arrive afterwards at the central handlers, none lost, none twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from collections import Counter
from pathlib import Path

from typer.testing import CliRunner

from voicebus import Event, EventType
from voicebus.cli.app import app
from voicebus.cli.demo import Engines, Llm, Service, Stt
from voicebus.cli.satellite import TEMPLATE, satellite_config, template_text
from voicebus.cli.satellite_demo import CentralTts, SitePlayer, SiteWakeWord
from voicebus.config import BusConfig
from voicebus.transport import Message, open_transport, parse_url
from voicebus.wire.routes import DEFAULT_TTLS

from .broker import Mosquitto, config_value
from .helpers import eventually

E = EventType
SITES = ("A", "B")
RUN = "sat"
OUTAGE = 10.0
"""Seconds the central broker is down (the scenario of issue #14)."""
WAKE_TTL = DEFAULT_TTLS[EventType.WAKE_WORD_DETECTED]
"""A wake word goes stale after this many seconds (5)."""
ROOT = Path(__file__).resolve().parent.parent


def test_the_generated_config() -> None:
    text = satellite_config("kitchen", "mqtts://ann:pw@central:8883?ca=/etc/ca.pem")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "bridge_protocol_version mqttv50" in lines and "cleansession false" in lines
    assert "remote_clientid voicebus-satellite-kitchen" in lines
    assert "address central:8883" in lines and "bridge_cafile /etc/ca.pem" in lines
    assert "try_private true" in lines and "remote_password pw" in lines
    topics = [line for line in lines if line.startswith("topic ")]
    assert all(t.endswith(" 1") for t in topics)  # QoS 1 everywhere
    assert all("kitchen" in t or " out " in t for t in topics)  # other sites never come in
    assert config_value("mosquitto.conf", "listener")  # the satellite's own broker config


def test_the_template_is_package_data_in_the_wheel(tmp_path: Path) -> None:
    """`satellite-config` works from an installed wheel (no source tree): the wheel
    is built from a copy of the project by the build backend pyproject.toml names
    (what pip runs, here without its isolated environment: about 1 s) and run from
    its unpacked files. The copy in mosquitto/ is the same file."""
    assert (ROOT / "mosquitto" / TEMPLATE).read_text(encoding="utf-8") == template_text()
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "voicebus", src / "voicebus", ignore=skip)
    wheels = tmp_path / "wheels"
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    build = "import importlib, sys; importlib.import_module(sys.argv[1]).build_wheel(sys.argv[2])"
    subprocess.run(
        [sys.executable, "-c", build, backend["build-backend"], str(wheels)],
        cwd=src,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = wheels.glob("voicebus-*.whl")
    installed = tmp_path / "installed"
    with zipfile.ZipFile(wheel) as archive:
        assert f"voicebus/cli/templates/{TEMPLATE}" in archive.namelist()
        archive.extractall(installed)
    shutil.rmtree(src)  # nothing of a source tree is left to read from
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import voicebus; print(voicebus.__file__)\nfrom voicebus.cli.app import app; app()",
            "satellite-config",
            "--site",
            "kitchen",
            "--central",
            "mqtt://127.0.0.1:1883",
        ],
        env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    where, config = run.stdout.split("\n", 1)
    assert Path(where).is_relative_to(installed)  # the wheel's voicebus, not this checkout
    assert "connection voicebus-satellite-kitchen" in config
    assert "address 127.0.0.1:1883" in config


class Wire:
    """A raw subscriber to ``#``: every copy a broker delivers, by (topic, event id)."""

    def __init__(self) -> None:
        self.copies: Counter[tuple[str, str]] = Counter()

    def __call__(self, message: Message) -> None:
        event_id = dict(message.user_properties).get("id")
        if event_id is not None:
            self.copies[(message.topic, event_id)] += 1

    def doubled(self) -> dict[tuple[str, str], int]:
        return {key: n for key, n in self.copies.items() if n > 1}

    def topics(self) -> set[str]:
        return {topic for topic, _ in self.copies}


async def wire(
    stack: contextlib.AsyncExitStack, url: str, client_id: str, **settings: object
) -> Wire:
    counter = Wire()
    config = BusConfig(status=False, **settings)  # type: ignore[arg-type]
    transport = open_transport(parse_url(url), client_id=client_id, settings=config)
    await transport.connect(counter)
    stack.push_async_callback(transport.close)
    await transport.subscribe("#", 1)
    return counter


def bridge_config(tmp_path: Path, site: str, central: str) -> str:
    out = tmp_path / f"bridge-{site}.conf"
    args = ["satellite-config", "--site", site, "--central", central, "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out.read_text()


async def test_satellites_pipeline_and_a_central_outage(tmp_path: Path) -> None:
    central = Mosquitto(tmp_path / "central")  # mosquitto.conf: persistence true
    brokers = {
        s: Mosquitto(tmp_path / s, extra=bridge_config(tmp_path, s, central.url())) for s in SITES
    }
    async with contextlib.AsyncExitStack() as stack:
        for broker in (central, *brokers.values()):
            stack.callback(broker.stop)
            broker.start()
        engines, heard = Engines(scale=0), {}
        # Central services keep their sessions across the central restart (fixed
        # client ids, session expiry: the broker persists them) and reconnect fast.
        persistent = {"session_expiry": 300, "reconnect_delay": 0.05, "reconnect_max_delay": 0.5}
        stt = Stt(central.url(), RUN, engines, heard, **persistent)
        llm = Llm(central.url(), RUN, engines, **persistent)
        tts = CentralTts(central.url(), RUN, engines, **persistent)
        wake = {s: SiteWakeWord(s, brokers[s].url(), RUN, engines, heard) for s in SITES}
        play = {s: SitePlayer(s, brokers[s].url(), RUN, engines) for s in SITES}
        services: list[Service] = [stt, llm, tts, *wake.values(), *play.values()]
        handled: dict[str, list[Event]] = {svc.name: [] for svc in services}
        for svc in services:  # what reaches each service's handlers
            svc.bus.add_middleware(handled[svc.name].append)
            await stack.enter_async_context(svc.bus)
        on_central = await wire(stack, central.url(), "wire-central", **persistent)
        on_site = {s: await wire(stack, brokers[s].url(), f"wire-{s}") for s in SITES}

        async def bridges_up() -> None:
            """Both bridges carry messages both ways (they link on their own schedule):
            a probe each way per site, again every 0.2 s, until one of them arrives."""
            sent: dict[tuple[str, str], set[str]] = {(s, way): set() for s in SITES for way in "io"}

            async def both_ways() -> bool:
                for s in SITES:
                    sent[s, "o"].add((await wake[s].bus.emit(E.AUDIO_STARTED, {"siteId": s})).id)
                    sent[s, "i"].add((await tts.bus.emit(E.AUDIO_STOPPED, {"siteId": s})).id)
                central_ids = {event_id for _, event_id in on_central.copies}
                return all(
                    sent[s, "o"] & central_ids
                    and sent[s, "i"] & {event_id for _, event_id in on_site[s].copies}
                    for s in SITES
                )

            await eventually(both_ways, timeout=20, interval=0.2)

        await bridges_up()

        def matching(service: str, event_type: EventType, cid: str, say: bool) -> list[Event]:
            return [
                e
                for e in handled[service]
                if e.type is event_type
                and e.correlation_id == cid
                and (not say or str(e.data.get("id", e.data.get("requestId"))).startswith("say-"))
            ]

        def one(service: str, event_type: EventType, cid: str, say: bool = False) -> Event:
            (event,) = matching(service, event_type, cid, say)
            return event

        async def check_chain(site: str, sent: Event, answer: Event | None) -> None:
            """Every hop of the utterance, as the next service got it: same correlation
            id, the sender's source, the cause's id as parent (across both bridges)."""
            assert answer is not None, f"site {site}: no answer for {sent.correlation_id}"
            cid = sent.correlation_id or ""
            # the site's playFinished reaches the central TTS after the site's own waiter
            await eventually(lambda: matching("tts", E.AUDIO_PLAYBACK_ENDED, cid, True))
            got = one("stt", E.WAKE_WORD_DETECTED, cid)
            assert (got.id, got.source, got.parent_id) == (sent.id, wake[site].bus.source, None)
            speech = one("llm", E.SPEECH_DETECTED, cid)
            assert (speech.parent_id, speech.source) == (got.id, stt.bus.source)
            response = one("tts", E.RESPONSE_GENERATED, cid)
            assert (response.parent_id, response.source) == (speech.id, llm.bus.source)
            speech_audio = one(f"playback-{site}", E.PLAY_BYTES, cid, say=True)
            assert (speech_audio.parent_id, speech_audio.source) == (response.id, tts.bus.source)
            assert speech_audio.data["siteId"] == site
            finished = one("tts", E.AUDIO_PLAYBACK_ENDED, cid, say=True)
            assert (finished.parent_id, finished.source) == (speech_audio.id, play[site].bus.source)
            assert (answer.id, answer.parent_id, answer.correlation_id) == (
                finished.id,
                speech_audio.id,
                cid,
            )

        # One utterance per site, both at once.
        first = await asyncio.gather(
            *(wake[s].utterance(f"what time is it in {s}", timeout=10) for s in SITES)
        )
        for site, (sent, chimed, answer) in zip(SITES, first, strict=True):
            assert chimed is not None
            await check_chain(site, sent, answer)

        # Phase one is over (the last event, sayFinished, seen on the central broker):
        # nothing is in flight when the link is cut, so any copy twice on a wire
        # later would be a loop or a resend of something already acknowledged.
        await eventually(
            lambda: sum(t == "hermes/tts/sayFinished" for t, _ in on_central.copies) >= 2
        )
        # The central broker down for OUTAGE seconds: each satellite keeps detecting
        # wake words and playing its chime locally; nothing is answered meanwhile.
        central.stop()
        down = time.monotonic()
        during: list[tuple[Event, Event | None, Event | None]] = []
        while time.monotonic() - down < OUTAGE:
            rounds = await asyncio.gather(
                *(wake[s].utterance("are you there", timeout=5, answer_timeout=0.5) for s in SITES)
            )
            for _, chimed, answer in rounds:
                assert chimed is not None, "local traffic stopped while the central was down"
                assert answer is None
            during += rounds
        central.start()
        restarted = time.time()
        # A wake word queued longer than its ttl is dropped (see below): speak again
        # once the bridges have linked again (about 1 to 6 s after the restart).
        await bridges_up()

        # After: a new utterance per site completes (the bridges and services are back)
        after = await asyncio.gather(
            *(wake[s].utterance(f"welcome back {s}", timeout=30) for s in SITES)
        )
        for site, (sent, _, answer) in zip(SITES, after, strict=True):
            await check_chain(site, sent, answer)
        # ... and every chime's playFinished the bridges queued reaches the central TTS.
        queued = {chimed.id for _, chimed, _ in during if chimed is not None}

        def tts_got() -> set[str]:
            return {e.id for e in handled["tts"] if e.type is E.AUDIO_PLAYBACK_ENDED}

        await eventually(lambda: queued <= tts_got(), timeout=15, interval=0.05)
        # Wake words older than their ttl when the central came back were dropped by
        # Mosquitto (a late one would start a session nobody speaks to); younger ones
        # may still arrive, and are answered. Mosquitto keeps expiry times in whole
        # seconds and drops a message only once ``now > expiry`` (db__message_write_*):
        # one may go out up to 1 s past its ttl, hence the 1.5 s margin.
        stale = {w.id for w, _, _ in during if w.timestamp < restarted - WAKE_TTL - 1.5}
        assert stale and stale.isdisjoint(event_id for _, event_id in on_central.copies)
        for name, events in handled.items():  # none twice
            twice = {k: n for k, n in Counter((e.type, e.id) for e in events).items() if n > 1}
            assert not twice, f"{name} handled these twice: {twice}"
        # Nor twice on any wire: no loop through a bridge, no resend of an acknowledged
        # message (de-duplication by id would hide both from the handlers).
        assert not on_central.doubled() and not any(w.doubled() for w in on_site.values())
        for s in SITES:  # each site heard only its own: nothing of another site came in
            other = next(o for o in SITES if o != s)
            assert not any(f"/{other}/" in topic for topic in on_site[s].topics())
