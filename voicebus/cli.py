"""The ``voicebus`` command line."""

from __future__ import annotations

import typer

from . import __version__
from .routes import ROUTES

app = typer.Typer(help="voicebus: the voice-assistant event bus over MQTT.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"voicebus {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """voicebus command line."""


@app.command()
def topics() -> None:
    """The route table: event type, topic, payload fields, Hermes class."""
    for route in ROUTES:
        fields = ", ".join(
            f.alias or name for name, f in route.model.model_fields.items()
        )
        typer.echo(
            f"{route.event_type.value:26} {route.template.template:48} "
            f"{route.hermes or '-':18} {fields}"
        )
