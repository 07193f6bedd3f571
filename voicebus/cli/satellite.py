"""``voicebus satellite-config``: a Mosquitto bridge configuration for a satellite.

A satellite (a room with a microphone and a speaker) runs its own Mosquitto for
its local services (wake word, playback); a bridge links it to the central
broker (STT, LLM, TTS). The configuration comes from the template
``voicebus/cli/templates/satellite-bridge.conf.template``, package data (so it
is in a wheel; ``mosquitto/`` holds an identical copy to read):
an MQTT 5 bridge (properties survive), QoS 1, a persistent bridge session,
this site's topic-addressed events both ways, wake word detections out, and
nothing of the other sites. See the README, "Satellites".
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ..transport.url import format_address, parse_url
from ..wire.topics import check_parameter
from . import output as out

TEMPLATE = "satellite-bridge.conf.template"


def template_text() -> str:
    """The bridge template, package data of ``voicebus.cli`` (in a wheel too)."""
    shipped = resources.files(__package__ or "voicebus.cli").joinpath("templates", TEMPLATE)
    try:
        return shipped.read_text(encoding="utf-8")
    except OSError:
        raise ConfigError(
            f"cannot read the bridge template {shipped}: this voicebus installation is "
            "incomplete (reinstall it)"
        ) from None


def satellite_config(site: str, central: str) -> str:
    """The bridge configuration for the local broker of satellite `site`, to the
    central broker at `central` (``mqtt[s]://[user:pass@]host[:port][,host2...]``)."""
    check_parameter("siteId", site)
    if not all(ch.isalnum() or ch in "-_." for ch in site):
        raise ConfigError(
            f"site {site!r}: use letters, digits, '-', '_' or '.' (it names the bridge "
            "and its client ids)"
        )
    url = parse_url(central)
    if url.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"--central must be an mqtt:// or mqtts:// URL, got {central!r}")
    credentials = ""
    if url.username:
        credentials += f"remote_username {url.username}\n"
    if url.password:
        credentials += f"remote_password {url.password}\n"
    tls = ""
    if url.tls:
        ca = url.query.get("ca")
        tls = f"bridge_cafile {ca}\n" if ca else "bridge_capath /etc/ssl/certs\n"
    return template_text().format(
        site=site,
        central=url.redacted(),
        address=" ".join(format_address(a) for a in url.brokers),
        credentials=credentials,
        tls=tls,
    )


def satellite_config_command(
    site: Annotated[str, typer.Option("--site", help="The satellite's siteId.")],
    central: Annotated[
        str, typer.Option("--central", help="The central broker: mqtt://HOST:PORT.")
    ],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of standard output.")
    ] = None,
) -> None:
    """Write a Mosquitto bridge configuration linking a satellite to the central broker."""
    with out.reported_errors():
        text = satellite_config(site, central)
    if out_file is None:
        typer.echo(text, nl=False)
    else:
        out_file.write_text(text)
        out.note(f"wrote {out_file}")
