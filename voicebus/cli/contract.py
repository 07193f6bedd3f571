"""The published contract in ``topics/``, generated from the route table and the models.

Never edit ``topics/`` by hand; regenerate it with::

    voicebus contract export topics/
    python -m voicebus contract export topics/

It holds an AsyncAPI 3.0 document (``asyncapi.json``: channels with addresses and
parameters, messages with JSON Schema payloads, MQTT bindings 0.2.0 for QoS and
retain, the local Mosquitto as server, where the correlation id travels), one JSON
Schema per event type (``schemas/<event_type>.json``: the JSON payload as it
travels, so topic-only keys are left out) and a human-readable table
(``README.md``). The output is deterministic (sorted keys, two-space indent,
trailing newline), so a test can compare the committed files with `render`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..wire.routes import ROUTES, Route, RouteTable
from .asyncapi import (
    EXPORT_COMMAND,
    MQTT_BINDING_VERSION,
    asyncapi,
    event_schema,
    is_hermes_topic,
    payload_schema,
    route_ident,
    route_title,
)

ASYNCAPI_FILE = "asyncapi.json"
README_FILE = "README.md"
SCHEMA_DIR = "schemas"


def _field_list(route: Route) -> str:
    if route.binary:
        return f"raw `{route.content_type}` bytes (`{route.body}`)"
    schema = payload_schema(route)
    required = set(schema.get("required", []))
    fields = [f"`{k}`" + ("*" if k in required else "") for k in schema.get("properties", {})]
    return ", ".join(fields) or "-"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def readme(routes: RouteTable | None = None) -> str:
    """The human table ``topics/README.md``."""
    table = ROUTES if routes is None else routes
    lines = [
        "# voicebus topics",
        "",
        f"Generated from the route table by `{EXPORT_COMMAND}`"
        " (or `python -m voicebus contract export topics/`); do not edit by hand."
        " A test fails when these files differ from what the code generates.",
        "",
        f"- [`{ASYNCAPI_FILE}`]({ASYNCAPI_FILE}): the AsyncAPI 3.0 document (MQTT bindings"
        f" {MQTT_BINDING_VERSION}).",
        f"- [`{SCHEMA_DIR}/`]({SCHEMA_DIR}/): one JSON Schema per event type, for the"
        " payload as it travels.",
        "",
        "Payloads are plain JSON (`application/json`) with camelCase keys; extra keys are"
        " allowed and kept. `{parameter}` levels of a topic are filled from the payload"
        " when publishing and parsed back into `Event.data` when receiving; a value that"
        " is empty or contains `/`, `+`, `#` or NUL is refused before anything is sent."
        " Keys marked *topic only* are not repeated in the payload (Hermes has no such"
        " key there). The envelope travels as MQTT 5 properties: user properties `id`,"
        " `type`, `source`, `time`, `metadata` (JSON), and the correlation id as"
        " Correlation Data, `parent` the id of the event whose handler emitted it;"
        " a message without them (e.g. from Rhasspy or"
        " `mosquitto_pub`) gets a fresh id and its `sessionId` as correlation id. Where"
        " the payload has a `sessionId` field, the correlation id is also written into it"
        " (unless set), so a peer without MQTT 5 keeps the session. Binary routes (Hermes"
        " audio) carry raw `audio/wav` bytes as the payload, never JSON. *ttl*: seconds"
        " until an event goes stale (MQTT 5 Message Expiry; `-`: never; `emit(...,"
        " ttl=)` overrides it).",
        "",
        "Payload fields marked * are required; all others have defaults.",
        "",
        "| EventType | topic | QoS | retain | ttl | payload fields | Hermes class |",
        "|---|---|---|---|---|---|---|",
    ]
    for route in table:
        ident = route_ident(route)
        topic = f"`{route.template.template}`"
        if route.topic_only:
            only = ", ".join(f"`{k}`" for k in sorted(route.topic_only))
            topic += f" ({only} topic only)"
        if route.hermes:
            hermes = f"`{route.hermes}`"
        elif is_hermes_topic(route):
            hermes = "Hermes topic, no rhasspy-hermes class (e.g. Snips VAD)"
        else:
            hermes = "-"
        fields = f"{_field_list(route)} ([schema]({SCHEMA_DIR}/{ident}.json))"
        lines.append(
            f"| {_cell(route_title(route))} | {_cell(topic)} | {route.qos} | "
            f"{'yes' if route.retain else 'no'} | {_ttl(route)} | {_cell(fields)} | "
            f"{_cell(hermes)} |"
        )
    lines += [
        "",
        "`hermes/error/<component>` messages of Rhasspy services are not mapped onto an"
        " event type: `ERROR_OCCURRED` (and `MODEL_DOWNLOAD_FAILED`) use the same"
        " Rhasspy error payload shape (`error`, `siteId`, `context`, `sessionId`) on"
        " voicebus's own topics, so voicebus never speaks for a Hermes component.",
        "",
    ]
    return "\n".join(lines)


def _ttl(route: Route) -> str:
    return "-" if route.ttl is None else f"{route.ttl:g}"


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render(routes: RouteTable | None = None) -> dict[str, str]:
    """Every file of the contract: relative path (POSIX) -> content."""
    table = ROUTES if routes is None else routes
    files = {ASYNCAPI_FILE: _dump(asyncapi(table)), README_FILE: readme(table)}
    for route in table:
        files[f"{SCHEMA_DIR}/{route_ident(route)}.json"] = _dump(event_schema(route))
    return dict(sorted(files.items()))


def _stale(directory: Path, files: dict[str, str]) -> list[Path]:
    schema_dir = directory / SCHEMA_DIR
    if not schema_dir.is_dir():
        return []
    return sorted(
        path
        for path in schema_dir.glob("*.json")
        if path.relative_to(directory).as_posix() not in files
    )


def export(directory: Path) -> list[Path]:
    """Write the contract into `directory`; remove schema files no route makes any more.

    Returns the paths of the generated files (written only when their content changed).
    """
    directory = Path(directory)
    files = render()
    written: list[Path] = []
    for relative, content in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8", newline="\n")
        written.append(path)
    for path in _stale(directory, files):
        path.unlink()
    return written


def differences(directory: Path) -> list[str]:
    """What differs between `directory` and the generated contract (empty: up to date)."""
    directory = Path(directory)
    files = render()
    problems: list[str] = []
    for relative, content in files.items():
        path = directory / relative
        if not path.exists():
            problems.append(f"missing: {path}")
        elif path.read_text(encoding="utf-8") != content:
            problems.append(f"differs: {path}")
    problems += [f"not generated any more: {path}" for path in _stale(directory, files)]
    return problems


contract_app = typer.Typer(
    help="The published contract (AsyncAPI, JSON Schemas, topic table) in topics/.",
    no_args_is_help=True,
)


@contract_app.callback()
def _contract() -> None:
    """Generate or check the contract in topics/ (from the route table and the models)."""


@contract_app.command("export")
def export_command(
    directory: Annotated[Path, typer.Argument(help="Target directory, normally topics/.")],
) -> None:
    """Write asyncapi.json, schemas/*.json and README.md into DIRECTORY."""
    for path in export(directory):
        typer.echo(str(path))


@contract_app.command("check")
def check_command(
    directory: Annotated[Path, typer.Argument(help="Directory to compare, normally topics/.")],
) -> None:
    """Exit 1 when DIRECTORY differs from what the code generates."""
    problems = differences(directory)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        typer.echo(f"the contract is out of date; run: {EXPORT_COMMAND}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{directory} is up to date")


if __name__ == "__main__":
    contract_app()
