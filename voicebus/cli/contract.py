"""The published contract in ``topics/``, generated from the route table and the models.

Never edit ``topics/`` by hand; regenerate it with::

    voicebus contract export topics/
    python -m voicebus.contract export topics/

It holds an AsyncAPI 3.0 document (``asyncapi.json``: channels with addresses and
parameters, messages with JSON Schema payloads, MQTT bindings 0.2.0 for QoS and
retain, the local Mosquitto as server, where the correlation id travels), one JSON
Schema per event type (``schemas/<event_type>.json``: the JSON payload as it
travels, so topic-only keys are left out) and a human-readable table
(``README.md``). The output is deterministic (sorted keys, two-space indent,
trailing newline), so a test can compare the committed files with `render`.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..wire.codec import CONTENT_TYPE
from ..wire.routes import ROUTES, Route, RouteTable

ASYNCAPI_VERSION = "3.0.0"
MQTT_BINDING_VERSION = "0.2.0"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_FILE = "asyncapi.json"
README_FILE = "README.md"
SCHEMA_DIR = "schemas"
SERVER_NAME = "mosquitto"
SERVER_HOST = "127.0.0.1:1883"
"""The development broker of ``mosquitto/mosquitto.conf``."""
EXPORT_COMMAND = "voicebus contract export topics/"

_PARAMETER_RULE = (
    "One topic level: a non-empty string without '/', '+', '#' or NUL "
    "(voicebus refuses anything else before publishing)."
)
_PARAMETER_TEXT = {
    "siteId": "The site (satellite, room) the event belongs to.",
    "wakewordId": "The id of the wake word that was detected.",
    "component": "The component that reports the error.",
    "intentName": "The name of the recognised intent.",
}
_ENVELOPE_HEADERS: dict[str, dict[str, str]] = {
    "id": {"description": "Unique event id (a receiver makes one up when it is missing)."},
    "type": {"description": "The EventType value, e.g. `speech_detected`."},
    "source": {"description": "Who emitted the event (by default the MQTT client id)."},
    "time": {"description": "Emission time in seconds since the epoch, as a decimal string."},
    "metadata": {"description": "Free-form metadata as one JSON object, serialised."},
    "correlationData": {
        "description": (
            "The correlation id, in the MQTT 5 Correlation Data property (not a user "
            "property). A message without it (e.g. from Rhasspy) uses the payload's "
            "sessionId instead."
        )
    },
}


def _ident(route: Route) -> str:
    """A component id (``^[A-Za-z0-9_.-]+$``) for a route: its event type value."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(route.event_type.value))


def _is_hermes_topic(route: Route) -> bool:
    """A topic of the Hermes protocol (``hermes/...``, Rhasspy's ``rhasspy/...``)."""
    return route.template.template.startswith(("hermes/", "rhasspy/"))


def _title(route: Route) -> str:
    return str(route.event_type.name)


def _strip_titles(schema: Any) -> Any:
    """Drop pydantic's generated property titles (``Siteid``): noise in a contract."""
    if isinstance(schema, dict):
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                out[key] = {
                    name: _strip_titles(
                        {k: v for k, v in prop.items() if k != "title"}
                        if isinstance(prop, dict)
                        else prop
                    )
                    for name, prop in value.items()
                }
            else:
                out[key] = _strip_titles(value)
        return out
    if isinstance(schema, list):
        return [_strip_titles(item) for item in schema]
    return schema


def payload_schema(route: Route, ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    """The JSON Schema of the route's wire payload (camelCase keys, topic-only keys removed)."""
    schema = route.model.model_json_schema(by_alias=True, ref_template=ref_template)
    schema = dict(_strip_titles(copy.deepcopy(schema)))
    properties = schema.get("properties", {})
    for key in sorted(route.topic_only):
        properties.pop(key, None)
    if "required" in schema:
        schema["required"] = [k for k in schema["required"] if k not in route.topic_only]
        if not schema["required"]:
            del schema["required"]
    schema["title"] = f"{_title(route)} payload"
    lines = [route.description or schema.get("description", "").split("\n")[0]]
    lines.append(f"Topic: `{route.template.template}`.")
    if route.topic_only:
        keys = ", ".join(f"`{k}`" for k in sorted(route.topic_only))
        lines.append(f"Topic-only (not in the payload, restored into Event.data): {keys}.")
    if route.hermes:
        lines.append(f"Wire-compatible with rhasspy-hermes `{route.hermes}`.")
    lines.append("Extra keys are allowed and kept.")
    schema["description"] = " ".join(line for line in lines if line)
    return schema


def event_schema(route: Route) -> dict[str, Any]:
    """The standalone JSON Schema file of one event (``topics/schemas/<type>.json``)."""
    schema = payload_schema(route)
    schema["$schema"] = JSON_SCHEMA_DIALECT
    return schema


def _parameters(route: Route, payload_keys: Iterable[str]) -> dict[str, Any]:
    keys = set(payload_keys)
    params: dict[str, Any] = {}
    for name in route.template.parameters:
        text = _PARAMETER_TEXT.get(name, f"The `{name}` topic parameter.")
        param: dict[str, Any] = {}
        if name in route.topic_only or name not in keys:
            text += " Travels in the topic only (restored into Event.data on receipt)."
        else:
            text += f" Filled from the payload's `{name}`."
            param["location"] = f"$message.payload#/{name}"
        param["description"] = f"{text} {_PARAMETER_RULE}"
        params[name] = param
    return params


def asyncapi(routes: RouteTable | None = None, version: str | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every route, as a plain dict."""
    table = ROUTES if routes is None else routes
    if version is None:
        from .. import __version__

        version = __version__
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for route in table:
        ident = _ident(route)
        schema = payload_schema(route, ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[ident] = schema
        message: dict[str, Any] = {
            "name": ident,
            "title": _title(route),
            "summary": route.description,
            "contentType": CONTENT_TYPE,
            "payload": {"$ref": f"#/components/schemas/{ident}"},
            "traits": [{"$ref": "#/components/messageTraits/envelope"}],
            "x-voicebus-event-type": str(route.event_type.value),
        }
        if route.hermes:
            message["x-hermes-class"] = route.hermes
        if route.hermes or _is_hermes_topic(route):
            message["tags"] = [{"name": "hermes"}]
        if route.topic_only:
            message["x-topic-only"] = sorted(route.topic_only)
        messages[ident] = message
        channel: dict[str, Any] = {
            "address": route.template.template,
            "title": _title(route),
            "description": route.description,
            "messages": {ident: {"$ref": f"#/components/messages/{ident}"}},
        }
        if route.template.parameters:
            channel["parameters"] = _parameters(route, schema.get("properties", {}))
        channels[ident] = channel
        binding = {
            "mqtt": {
                "bindingVersion": MQTT_BINDING_VERSION,
                "qos": route.qos,
                "retain": route.retain,
                **_expiry(route),
            }
        }
        for action, verb in (("send", "Emit"), ("receive", "Receive")):
            operations[f"{action}_{ident}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{ident}"},
                "messages": [{"$ref": f"#/channels/{ident}/messages/{ident}"}],
                "summary": f"{verb} {_title(route)}.",
                "bindings": copy.deepcopy(binding),
            }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "voicebus",
            "version": version,
            "description": (
                "Events of a voice assistant over MQTT 5. Topics and payloads are "
                "Rhasspy's Hermes protocol where a Hermes message means the same thing "
                "(messages tagged `hermes`, class in `x-hermes-class`), project topics "
                "under `voicebus/` otherwise. The payload is plain JSON with camelCase "
                "keys; the envelope (id, type, source, time, metadata) travels as MQTT 5 "
                "user properties and the correlation id as Correlation Data, so a peer "
                "that sees only topic and payload misses nothing it needs. Generated "
                f"from the route table by `{EXPORT_COMMAND}`; do not edit."
            ),
            "license": {"name": "MIT"},
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            SERVER_NAME: {
                "host": SERVER_HOST,
                "protocol": "mqtt",
                "protocolVersion": "5",
                "description": (
                    "The local development broker: `mosquitto -c mosquitto/mosquitto.conf`."
                ),
                "bindings": {"mqtt": {"bindingVersion": MQTT_BINDING_VERSION, "keepAlive": 60}},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "correlationIds": {
                "correlationData": {
                    "description": _ENVELOPE_HEADERS["correlationData"]["description"],
                    "location": "$message.header#/correlationData",
                }
            },
            "messageTraits": {
                "envelope": {
                    "headers": {
                        "type": "object",
                        "description": (
                            "MQTT 5 properties of the message (user properties, one key "
                            "each, and Correlation Data). All are optional on receipt."
                        ),
                        "properties": {
                            key: {"type": "string", **value}
                            for key, value in _ENVELOPE_HEADERS.items()
                        },
                    },
                    "correlationId": {"$ref": "#/components/correlationIds/correlationData"},
                    "bindings": {
                        "mqtt": {
                            "bindingVersion": MQTT_BINDING_VERSION,
                            "contentType": CONTENT_TYPE,
                            "correlationData": {
                                "type": "string",
                                "description": "The correlation id (UTF-8).",
                            },
                        }
                    },
                }
            },
        },
    }


def _field_list(route: Route) -> str:
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
        " (or `python -m voicebus.contract export topics/`); do not edit by hand."
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
        " *ttl*: seconds until an event goes stale (MQTT 5 Message Expiry; `-`: never;"
        " `emit(..., ttl=)` overrides it). A message without them (e.g. from Rhasspy or"
        " `mosquitto_pub`) gets a fresh id and its `sessionId` as correlation id.",
        "",
        "Payload fields marked * are required; all others have defaults.",
        "",
        "| EventType | topic | QoS | retain | ttl | payload fields | Hermes class |",
        "|---|---|---|---|---|---|---|",
    ]
    for route in table:
        ident = _ident(route)
        topic = f"`{route.template.template}`"
        if route.topic_only:
            only = ", ".join(f"`{k}`" for k in sorted(route.topic_only))
            topic += f" ({only} topic only)"
        if route.hermes:
            hermes = f"`{route.hermes}`"
        elif _is_hermes_topic(route):
            hermes = "Hermes topic, no rhasspy-hermes class (e.g. Snips VAD)"
        else:
            hermes = "-"
        fields = f"{_field_list(route)} ([schema]({SCHEMA_DIR}/{ident}.json))"
        lines.append(
            f"| {_cell(_title(route))} | {_cell(topic)} | {route.qos} | "
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


def _expiry(route: Route) -> dict[str, int]:
    """The MQTT binding's ``messageExpiryInterval`` (whole seconds) when the route has a ttl."""
    return {} if route.ttl is None else {"messageExpiryInterval": math.ceil(route.ttl)}


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render(routes: RouteTable | None = None) -> dict[str, str]:
    """Every file of the contract: relative path (POSIX) -> content."""
    table = ROUTES if routes is None else routes
    files = {ASYNCAPI_FILE: _dump(asyncapi(table)), README_FILE: readme(table)}
    for route in table:
        files[f"{SCHEMA_DIR}/{_ident(route)}.json"] = _dump(event_schema(route))
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
