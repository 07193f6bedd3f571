"""Satellites over Mosquitto bridges made by ``voicebus satellite-config``: a
central Mosquitto and two satellite Mosquittos, each bridged to the central one.

A wake word on satellite A reaches a central subscriber with its envelope; a
central answer for site A reaches satellite A only; nothing loops back.
"""

from __future__ import annotations

import asyncio
import enum
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from typer.testing import CliRunner

from voicebus import Event, EventBus, EventType
from voicebus.cli.app import app
from voicebus.cli.satellite import TEMPLATE, satellite_config, template_text
from voicebus.wire.models import Payload
from voicebus.wire.routes import ROUTES, Route, RouteTable
from voicebus.wire.topics import TopicTemplate

from .broker import Mosquitto, config_value
from .helpers import Collector, eventually, marker


class Site(enum.Enum):
    SAY = "site_say"


class Say(Payload):
    """Something for a site to play (a central answer addressed by topic)."""

    text: str = ""


def routes() -> RouteTable:
    """The standard routes plus one central-to-site command on the site's own topic."""
    table = RouteTable([ROUTES.get(t) for t in EventType])
    table.register(Route(Site.SAY, TopicTemplate("voicebus/site/{siteId}/say"), Say))
    return table


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


ROOT = Path(__file__).resolve().parent.parent


def test_the_template_is_package_data_in_the_wheel(tmp_path: Path) -> None:
    """`satellite-config` works from an installed wheel (no source tree): the wheel
    is built from a copy of the project (pip, as a user installs it: about 3 s) and
    run from its unpacked files. The copy in mosquitto/ is the same file."""
    assert (ROOT / "mosquitto" / TEMPLATE).read_text(encoding="utf-8") == template_text()
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "voicebus", src / "voicebus", ignore=skip)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(src)],
        check=True,
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
            "import voicebus; print(voicebus.__file__)\n"
            "from voicebus.cli.app import app; app()",
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


async def test_two_satellites_bridged_to_a_central_broker(tmp_path: Path) -> None:
    central = Mosquitto(tmp_path / "central").start()
    satellites: dict[str, Mosquitto] = {}
    try:
        for site in ("A", "B"):
            conf = tmp_path / f"bridge-{site}.conf"
            result = CliRunner().invoke(
                app,
                [
                    "satellite-config",
                    "--site",
                    site,
                    "--central",
                    central.url(),
                    "--out",
                    str(conf),
                ],
            )
            assert result.exit_code == 0, result.output
            satellites[site] = Mosquitto(tmp_path / site, extra=conf.read_text()).start()
        table = routes()
        hub = EventBus(
            central.url(),
            routes=table,
            component="central",
            client_id="central-hub",
            session_expiry=300,  # its subscriptions outlive a central restart
            reconnect_delay=0.05,
            reconnect_max_delay=0.5,
        )
        sat_a = EventBus(satellites["A"].url(), routes=table, component="sat-a")
        sat_b = EventBus(satellites["B"].url(), routes=table, component="sat-b")
        heard, said_a, said_b, local_a = (Collector(n) for n in ("heard", "A", "B", "localA"))
        hub.subscribe(EventType.WAKE_WORD_DETECTED, heard)
        echoed = Collector("echoed")
        hub.subscribe(Site.SAY, echoed)
        sat_a.subscribe(Site.SAY, said_a)
        sat_b.subscribe(Site.SAY, said_b)
        sat_a.subscribe(EventType.AUDIO_STARTED, local_a)

        async def answer(event: Event) -> None:  # the central side answers each site
            site = event.data["siteId"]
            await hub.emit(
                Site.SAY,
                {"siteId": site, "text": f"hello {site}"},
                correlation_id=event.correlation_id,
            )

        hub.subscribe(EventType.WAKE_WORD_DETECTED, answer)
        async with hub, sat_a, sat_b:
            for bus in (hub, sat_a, sat_b):
                await bus.ready()

            async def bridged() -> bool:  # the bridges connect on their own schedule
                await sat_a.emit(
                    EventType.WAKE_WORD_DETECTED, {"siteId": "A"}, correlation_id="probe"
                )
                return any(e.correlation_id == "probe" for e in said_a.events)

            await eventually(bridged, timeout=15, interval=0.2)
            said_a.events.clear()
            heard.events.clear()
            wake = await sat_a.emit(
                EventType.WAKE_WORD_DETECTED, {"siteId": "A"}, correlation_id="utt-A"
            )
            await eventually(lambda: any(e.correlation_id == "utt-A" for e in said_a.events))
            (got,) = [e for e in heard.events if e.correlation_id == "utt-A"]
            assert (got.id, got.source) == (wake.id, sat_a.source)  # envelope intact
            (reply,) = [e for e in said_a.events if e.correlation_id == "utt-A"]
            assert reply.data["text"] == "hello A" and reply.source == hub.source
            # the central answer for A reached satellite A only, and nothing looped
            await marker(hub, hub)
            await sat_a.emit(EventType.AUDIO_STARTED, {"siteId": "A"})
            await marker(sat_a, sat_a)
            assert said_b.events == []
            assert len([e for e in heard.events if e.correlation_id == "utt-A"]) == 1
            assert len(local_a.events) == 1
            assert [e.correlation_id for e in echoed.events].count("utt-A") == 1  # no loop

            # the central broker down ~3 s: local traffic goes on, the bridge queues
            central.stop()
            for i in range(20):
                await sat_a.emit(EventType.AUDIO_STARTED, {"siteId": "A", "n": i})
                await sat_a.emit(
                    EventType.WAKE_WORD_DETECTED, {"siteId": "A"}, correlation_id=f"down-{i}"
                )
            await local_a.wait(21)  # handled locally while the central broker is down
            await asyncio.sleep(3)  # the outage itself (not a synchronisation)
            central.start()
            down = [f"down-{i}" for i in range(20)]

            def arrived() -> list[str]:
                return [e.correlation_id or "" for e in heard.events if e.correlation_id in down]

            await eventually(lambda: sorted(arrived()) == sorted(down), timeout=20, interval=0.1)
            await marker(hub, hub)
            assert sorted(arrived()) == sorted(down)  # none lost, none doubled
    finally:
        for broker in (*satellites.values(), central):
            broker.stop()
