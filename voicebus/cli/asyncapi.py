"""The AsyncAPI 3.0 document and the JSON Schemas of the contract, built from the route table.

Pure functions, no I/O: `payload_schema` and `event_schema` for one route,
`asyncapi` for the whole table. `voicebus.cli.contract` writes them to ``topics/``.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable
from typing import Any

from ..wire.binary import binary_schema
from ..wire.codec import CONTENT_TYPE
from ..wire.routes import ROUTES, Route, RouteTable

ASYNCAPI_VERSION = "3.0.0"
MQTT_BINDING_VERSION = "0.2.0"
EXPORT_COMMAND = "voicebus contract export topics/"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SERVER_NAME = "mosquitto"
SERVER_HOST = "127.0.0.1:1883"
"""The development broker of ``mosquitto/mosquitto.conf``."""

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
    "parent": {
        "description": (
            "The id of the event whose handler emitted this one (causality); absent "
            "when none."
        )
    },
    "correlationData": {
        "description": (
            "The correlation id, in the MQTT 5 Correlation Data property (not a user "
            "property). A message without it (e.g. from Rhasspy) uses the payload's "
            "sessionId instead."
        )
    },
}


def route_ident(route: Route) -> str:
    """A component id (``^[A-Za-z0-9_.-]+$``) for a route: its event type value."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(route.event_type.value))


def is_hermes_topic(route: Route) -> bool:
    """A topic of the Hermes protocol (``hermes/...``, Rhasspy's ``rhasspy/...``)."""
    return route.template.template.startswith(("hermes/", "rhasspy/"))


def route_title(route: Route) -> str:
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
    """The JSON Schema of the route's wire payload (camelCase keys, topic-only keys removed);
    a binary route's payload is a string of raw bytes of its content type."""
    if route.binary:
        schema = binary_schema(route.content_type)
        schema["title"] = f"{route_title(route)} payload"
        schema["description"] = (
            f"{route.description} Topic: `{route.template.template}`. The payload is the"
            f" raw `{route.content_type}` bytes, not JSON (`Event.data[{route.body!r}]`);"
            " the topic parameters are restored into Event.data."
            + (f" Wire-compatible with rhasspy-hermes `{route.hermes}`." if route.hermes else "")
        )
        return schema
    schema = route.model.model_json_schema(by_alias=True, ref_template=ref_template)
    schema = dict(_strip_titles(copy.deepcopy(schema)))
    properties = schema.get("properties", {})
    for key in sorted(route.topic_only):
        properties.pop(key, None)
    if "required" in schema:
        schema["required"] = [k for k in schema["required"] if k not in route.topic_only]
        if not schema["required"]:
            del schema["required"]
    schema["title"] = f"{route_title(route)} payload"
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
        path = getattr(route.model, "topic_parameter_paths", {}).get(name)
        if path is not None:  # e.g. NluIntent: intentName is the payload's intent.intentName
            text += f" Filled from the payload's `{path.replace('/', '.')}`."
            param["location"] = f"$message.payload#/{path}"
        elif name in route.topic_only or name not in keys:
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
        ident = route_ident(route)
        schema = payload_schema(route, ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[ident] = schema
        message: dict[str, Any] = {
            "name": ident,
            "title": route_title(route),
            "summary": route.description,
            "contentType": route.content_type,
            "payload": {"$ref": f"#/components/schemas/{ident}"},
            "traits": [{"$ref": "#/components/messageTraits/envelope"}],
            "x-voicebus-event-type": str(route.event_type.value),
        }
        if route.binary:  # over the envelope trait's application/json
            message["bindings"] = {
                "mqtt": {"bindingVersion": MQTT_BINDING_VERSION, "contentType": route.content_type}
            }
        if route.hermes:
            message["x-hermes-class"] = route.hermes
        if route.hermes or is_hermes_topic(route):
            message["tags"] = [{"name": "hermes"}]
        if route.topic_only:
            message["x-topic-only"] = sorted(route.topic_only)
        messages[ident] = message
        channel: dict[str, Any] = {
            "address": route.template.template,
            "title": route_title(route),
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
                "summary": f"{verb} {route_title(route)}.",
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


def _expiry(route: Route) -> dict[str, int]:
    """The MQTT binding's ``messageExpiryInterval`` (whole seconds) when the route has a ttl."""
    return {} if route.ttl is None else {"messageExpiryInterval": math.ceil(route.ttl)}
