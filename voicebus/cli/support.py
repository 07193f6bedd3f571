"""What the ``voicebus`` commands share: options, argument parsing, running, raw clients."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import typer

from ..bus import EventBus
from ..config import BusConfig
from ..errors import DecodeError, UnknownEventTypeError
from ..transport import Message, Transport, open_transport, parse_url, resolve_url
from ..wire.codec import InvalidMessage, decode
from ..wire.correlation import correlation_text
from ..wire.events import Event, event_type_named
from ..wire.routes import ROUTES, Route
from ..wire.topics import check_filter
from . import output as out

Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="VOICEBUS_URL",
        help="Bus URL: mqtt://\\[user:pass@]host\\[:port], mqtts://..., or memory:// (default).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
CorrelationId = Annotated[
    str | None, typer.Option("--correlation-id", "-c", help="Correlation id.", show_default=False)
]

MEMORY_NOTE = (
    "note: memory:// is this process only; other programs see nothing. "
    "Use --url mqtt://HOST:1883 or set VOICEBUS_URL."
)


def routed_event_type(name: str) -> Enum:
    """The routed event type called `name` (by `event_type_named`'s rules), or a
    `CliError` with its did-you-mean."""
    try:
        return event_type_named(name, (r.event_type for r in ROUTES))
    except UnknownEventTypeError as exc:
        hint = f"; did you mean {' or '.join(exc.suggestions)}?" if exc.suggestions else ""
        message = f"unknown event type {name!r}{hint} (voicebus topics lists them all)"
        raise out.CliError(message) from None


def topic_filter(pattern: str) -> str:
    """An event type name becomes its route's filter; an MQTT filter stays as given."""
    if pattern == "*":
        return "#"
    if "/" in pattern or pattern in ("#", "+") or pattern.startswith("$"):
        check_filter(pattern)
        return pattern
    return ROUTES.get(routed_event_type(pattern)).filter


def _string_fields(route: Route) -> set[str]:
    names: set[str] = set()
    for name, info in route.model.model_fields.items():
        ann = info.annotation
        if ann is str or (get_origin(ann) in (Union, UnionType) and str in get_args(ann)):
            names.update({name, info.alias or name})
    return names


def build_payload(route: Route, data: str | None, pairs: list[str]) -> dict[str, Any]:
    """``--data`` JSON, then ``key=value`` pairs (JSON scalars unless the field is a
    string) and ``key:=json`` pairs (always JSON)."""
    payload: dict[str, Any] = {}
    if data is not None:
        try:
            parsed = json.loads(data)
        except json.JSONDecodeError as exc:
            raise out.CliError(f"--data is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise out.CliError(f"--data must be a JSON object, got {type(parsed).__name__}")
        payload.update(parsed)
    strings = _string_fields(route)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.rstrip(":"):
            raise out.CliError(f"expected key=value or key:=json, got {pair!r}")
        if key.endswith(":"):
            key = key[:-1]
            try:
                payload[key] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise out.CliError(f"{key}:= needs JSON, got {raw!r}: {exc}") from None
            continue
        value: Any = raw
        if key not in strings:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            if isinstance(value, dict | list):
                value = raw
        payload[key] = value
    return payload


def run(main: Callable[[], Any]) -> Any:
    """Run an async command body; voicebus errors become one line and an exit code."""
    with out.reported_errors():
        return asyncio.run(main())


def client_id() -> str:
    return f"voicebus-cli-{uuid.uuid4().hex[:8]}"


def check_url(url: str) -> bool:
    """Validate `url` (`VoicebusError` if unusable); True when it is ``memory://``."""
    return parse_url(url).scheme == "memory"


def stop_on_signals(stop: asyncio.Event) -> Callable[[], None]:
    """Set `stop` on SIGINT/SIGTERM (a clean exit 0); returns the undo function."""
    loop = asyncio.get_running_loop()
    sigs = (signal.SIGINT, signal.SIGTERM)
    for sig in sigs:
        loop.add_signal_handler(sig, stop.set)

    def undo() -> None:
        for sig in sigs:
            loop.remove_signal_handler(sig)

    return undo


NO_STATUS = BusConfig(status=False)


def no_status(url: str | None) -> BusConfig:
    """Settings of a bus that is no service (a command, a demo stage): it publishes no
    retained online/offline status (a setting of MQTT buses only)."""
    return BusConfig() if parse_url(resolve_url(url)).scheme == "memory" else NO_STATUS


def cli_bus(url: str, connect_timeout: float | None = None) -> EventBus:
    """A bus for one command (no history, no status); `connect_timeout` (MQTT only):
    seconds the broker may take to answer the connect."""
    config = no_status(url)
    if connect_timeout and config is NO_STATUS:
        config = replace(config, connect_timeout=connect_timeout)
    return EventBus(url, client_id=client_id(), config=config, enable_history=False)


async def raw_client(
    url: str, on_message: Callable[[Message], None], connect_timeout: float | None = None
) -> Transport:
    """A bare transport connection: a passive tool sees every message as it is and,
    unlike a bus, never turns bad input into dead letters or ERROR_OCCURRED events.
    `connect_timeout`: seconds the broker may take to answer (default: the setting's)."""
    settings = replace(NO_STATUS, connect_timeout=connect_timeout) if connect_timeout else NO_STATUS
    transport = open_transport(parse_url(url), client_id=client_id(), settings=settings)
    await transport.connect(on_message)
    return transport


class Decoder:
    """Messages to `listen` records: decoded events, invalid ones, unrouted ones."""

    def __init__(self) -> None:
        self._count = 0

    def _new_id(self) -> str:
        self._count += 1
        return f"cli-{self._count}"

    def __call__(self, message: Message) -> dict[str, Any]:
        event: Event | None = None
        problem: str | None = None
        try:
            event = decode(message, ROUTES, self._new_id)
        except InvalidMessage as exc:
            event, problem = exc.event, str(exc)
        except DecodeError:  # no route knows this topic: shown raw
            pass
        record = out.event_record(event, message.topic, message.payload, message.retain, problem)
        if event is None and message.correlation_data is not None:
            record["correlation_id"] = correlation_text(message.correlation_data)
        return record
