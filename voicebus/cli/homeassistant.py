"""``voicebus homeassistant``: the Home Assistant bridge as a service
(`voicebus.homeassistant`): per-site state topics and MQTT discovery."""

from __future__ import annotations

from typing import Annotated

import typer

from ..homeassistant import CLIENT_ID, DEFAULT_PREFIX, HomeAssistantBridge, serve
from ..homeassistant.state import valid_site
from ..service import run as run_service
from ..transport import resolve_url
from . import output as out
from .support import Url, check_url


def homeassistant(
    sites: Annotated[
        list[str] | None,
        typer.Option(
            "--site",
            metavar="SITE",
            help="A siteId to announce before any event names it (repeat for several).",
            show_default=False,
        ),
    ] = None,
    prefix: Annotated[
        str, typer.Option("--discovery-prefix", help="Home Assistant's discovery prefix.")
    ] = DEFAULT_PREFIX,
    client_id: Annotated[
        str,
        typer.Option(
            "--client-id", help="MQTT client id (its status: the entities' availability)."
        ),
    ] = CLIENT_ID,
    url: Url = None,
) -> None:
    """Bridge to Home Assistant: keep voicebus/site/<siteId>/state (retained) and
    publish MQTT discovery (a device per site, a connectivity sensor per service).
    Runs until Ctrl-C / SIGTERM."""
    bus_url = resolve_url(url)
    with out.reported_errors():
        if check_url(bus_url):
            raise out.CliError(
                "Home Assistant needs a broker: --url mqtt://HOST:1883 or set VOICEBUS_URL"
            )
        for site in sites or ():
            if not valid_site(site):
                raise out.CliError(f"--site {site!r}: a siteId names one topic level")

    def ready(bridge: HomeAssistantBridge) -> None:
        names = ", ".join(sorted(bridge.states.sites)) or "none yet"
        print(
            f"homeassistant bridge ready on {bridge.bus.url} as {bridge.bus.client_id} "
            f"(prefix {prefix}; sites: {names})",
            flush=True,
        )

    with out.reported_errors():
        run_service(
            serve(bus_url, client_id=client_id, sites=sites or (), prefix=prefix, ready=ready)
        )
