"""The ``voicebus`` command line: publish, listen, wait, topics, status, dlq, demo
(and record, replay, trace from `timeline`; arbiter from `arbiter`).

Every command takes ``--url`` (default ``$VOICEBUS_URL``, then ``memory://``) and
prints rich output on a terminal, plain lines in a pipe, JSON with ``--json``.
Errors are one line on stderr and a non-zero exit code (see `cli_output`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import DemoError
from ..ops.status import get_statuses, prune_offline
from ..transport import Message, parse_url, resolve_url
from ..wire.codec import encode
from ..wire.events import Event
from ..wire.routes import ROUTES
from . import output as out
from .arbiter import arbiter
from .asyncapi import payload_schema
from .contract import contract_app
from .demo import RUN_ID, Engines, Utterance, hop_summary, run_demo
from .dlq import dlq_app
from .homeassistant import homeassistant
from .satellite import satellite_config_command
from .support import (
    MEMORY_NOTE,
    AsJson,
    CorrelationId,
    Decoder,
    Url,
    build_payload,
    check_url,
    cli_bus,
    raw_client,
    routed_event_type,
    run,
    stop_on_signals,
    topic_filter,
)
from .timeline import register as register_timeline

VERBOSE = ("-v", "--verbose")


class _VerboseAnywhere(TyperGroup):
    """``-v`` / ``--verbose`` after the subcommand too (``voicebus listen -v``): it is
    moved to the front, where the top-level option is (up to a ``--``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # click's Context
        end = args.index("--") if "--" in args else len(args)
        head = args[:end]
        flags = [a for a in head if a in VERBOSE]
        rest = [a for a in head if a not in VERBOSE]
        return super().parse_args(ctx, [*flags, *rest, *args[end:]])


app = typer.Typer(
    cls=_VerboseAnywhere,
    help="voicebus: the voice-assistant event bus over MQTT (or in-process memory://).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(contract_app, name="contract")
app.add_typer(dlq_app, name="dlq")
app.command(name="arbiter")(arbiter)
app.command("satellite-config")(satellite_config_command)
app.command("homeassistant")(homeassistant)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"voicebus {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging, with tracebacks.")
    ] = False,
) -> None:
    """voicebus command line."""
    ctx.call_on_close(out.setup_logging(verbose))


# --- commands -----------------------------------------------------------------------


@app.command()
def publish(
    event_type: Annotated[str, typer.Argument(help="Event type, e.g. speech_detected.")],
    fields: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[KEY=VALUE | KEY:=JSON]...", help="Payload fields.", show_default=False
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="Payload as a JSON object.")
    ] = None,
    correlation_id: CorrelationId = None,
    source: Annotated[str | None, typer.Option("--source", help="Event source.")] = None,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Validate and publish one event, like EventBus.emit."""
    bus_url = resolve_url(url)
    with out.reported_errors():
        etype = routed_event_type(event_type)
        route = ROUTES.get(etype)
        payload = build_payload(route, data, fields or [])
        # the whole event, as emit will encode it, before connecting: a bad value
        # (a control character in siteId, a source over 64 KiB) is exit 2 at once
        encode(
            route,
            payload,
            event_id="check",
            source=source,
            correlation_id=correlation_id,
            metadata=None,
        )
        memory = check_url(bus_url)

    async def body() -> Event:
        async with cli_bus(bus_url) as bus:
            return await bus.emit(etype, payload, source=source, correlation_id=correlation_id)

    event: Event = run(body)
    if as_json:
        out.print_json(event.to_dict())
    else:
        cid = f", correlation id {event.correlation_id}" if event.correlation_id else ""
        print(f"published {event.type.value} on {event.topic} (id {event.id}{cid})", flush=True)
    if memory:
        out.note(MEMORY_NOTE)


@app.command()
def listen(
    patterns: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[PATTERN]...",
            help="Event types (speech_detected) or MQTT filters ('hermes/#'); default: all.",
            show_default=False,
        ),
    ] = None,
    correlation_id: CorrelationId = None,
    count: Annotated[
        int, typer.Option("--count", "-n", help="Exit after N events (0: until Ctrl-C).")
    ] = 0,
    retained: Annotated[
        bool,
        typer.Option(
            "--retained",
            help="Also show the retained messages (statuses, dead letters) the broker "
            "sends when listen subscribes.",
        ),
    ] = False,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Live tail of the bus, one line (--json: one JSON object) per event, until Ctrl-C."""
    bus_url = resolve_url(url)
    with out.reported_errors():
        filters = list(dict.fromkeys(topic_filter(p) for p in patterns or ["#"]))
        memory = check_url(bus_url)
    decoder = Decoder()
    seen = 0

    async def body() -> None:
        stop = asyncio.Event()

        def on_message(message: Message) -> None:
            nonlocal seen
            if stop.is_set() or (message.retain and not retained):
                return  # retain set: sent for subscribing, not published now
            try:
                record = decoder(message)
            except Exception as exc:  # shown raw: a message is never skipped in silence
                problem = f"undecodable: {type(exc).__name__}"
                record = out.event_record(
                    None, message.topic, message.payload, message.retain, problem
                )
            if correlation_id is not None and record["correlation_id"] != correlation_id:
                return
            try:
                if as_json:
                    out.print_json(record)
                else:
                    out.print_event_line(record)
            except BrokenPipeError:  # `voicebus listen | head`: the reader is gone
                out.silence_stdout()
                stop.set()
                return
            seen += 1
            if count and seen >= count:
                stop.set()

        transport = await raw_client(bus_url, on_message)
        undo = stop_on_signals(stop)
        try:
            for number, flt in enumerate(filters, 1):
                await transport.subscribe(flt, number)
            out.note(f"listening on {transport.url} to {', '.join(filters)} (Ctrl-C to stop)")
            if memory:
                out.note(MEMORY_NOTE)
            await stop.wait()
        finally:
            undo()
            await transport.close()

    run(body)


@app.command()
def wait(
    event_type: Annotated[str, typer.Argument(help="Event type (or MQTT filter) to wait for.")],
    timeout: Annotated[
        float, typer.Option("--timeout", "-t", help="Seconds to wait (0: forever).")
    ] = 30.0,
    correlation_id: CorrelationId = None,
    url: Url = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Accepted for symmetry: the event is always JSON.")
    ] = False,
) -> None:
    """Wait for one event: print it as JSON and exit 0, or exit 1 on timeout."""
    bus_url = resolve_url(url)
    with out.reported_errors():
        target = topic_filter(event_type)
        memory = check_url(bus_url)

    async def body() -> Event | None:
        limit = timeout if timeout > 0 else None
        deadline = asyncio.get_running_loop().time() + (limit or 0)
        bus = cli_bus(bus_url, connect_timeout=limit)  # --timeout covers connecting too
        waiting = bus.wait_for(target, correlation_id=correlation_id)
        try:
            await bus.start()  # acknowledges the subscription wait_for registered
        except BaseException:
            waiting.close()
            raise
        try:
            cid = f" with correlation id {correlation_id}" if correlation_id else ""
            out.note(f"waiting for {event_type}{cid} on {bus.get_stats()['url']} ({target})")
            if memory:
                out.note(MEMORY_NOTE)
            if limit is None:
                return await waiting
            async with asyncio.timeout_at(deadline):
                return await waiting
        except TimeoutError:
            return None
        finally:
            await bus.stop(drain_timeout=0.5)

    event: Event | None = run(body)
    if event is None:
        out.fail(f"no {event_type} event within {timeout:g}s", out.EXIT_TIMEOUT)
    out.print_json(event.to_dict())


@app.command()
def topics(as_json: AsJson = False) -> None:
    """The route table: event type, topic, payload fields, Hermes class."""
    rows = [
        {
            "event_type": route.event_type.value,
            "topic": route.template.template,
            "filter": route.filter,
            "fields": list(payload_schema(route).get("properties", {})),
            "topic_parameters": list(route.template.parameters),
            "hermes": route.hermes,
            "description": route.description,
        }
        for route in ROUTES
    ]
    if as_json:
        out.print_json(rows)
        return
    out.print_table(
        ["EventType", "topic", "payload fields", "Hermes"],
        [[r["event_type"], r["topic"], ", ".join(r["fields"]), r["hermes"] or "-"] for r in rows],
    )


@app.command()
def status(
    timeout: Annotated[
        float, typer.Option("--timeout", "-t", help="Seconds the broker may take to answer.")
    ] = 5.0,
    prune: Annotated[
        bool, typer.Option("--prune", help="Clear the offline statuses (services gone for good).")
    ] = False,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Which services are online, from the retained voicebus/status/+ topics."""
    bus_url = resolve_url(url)
    with out.reported_errors():
        check_url(bus_url)
    bus = cli_bus(bus_url)

    async def body() -> dict[str, str]:
        if prune:
            gone = await prune_offline(bus, timeout)
            out.note(f"cleared {len(gone)} offline status(es): {', '.join(gone) or '-'}")
        return await get_statuses(bus, timeout)

    found: dict[str, str] = run(body)
    entries = [{"client_id": k, "status": found[k]} for k in sorted(found)]
    if as_json:
        out.print_json(entries)
        return
    if not entries:
        shown = parse_url(bus_url).redacted()
        out.note(f"no service has published its status on voicebus/status/+ at {shown}")
        return
    out.print_table(
        ["service (client id)", "status"], [[e["client_id"], e["status"]] for e in entries]
    )
    online = sum(1 for e in entries if e["status"] == "online")
    print(f"{online} online, {len(entries) - online} offline", flush=True)


@app.command()
def demo(
    utterances: Annotated[
        int, typer.Option("--utterances", "-n", min=1, help="How many utterances to run.")
    ] = 1,
    scale: Annotated[
        float, typer.Option("--scale", min=0.0, help="Multiply simulated engine latencies.")
    ] = 1.0,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds one utterance may take.")
    ] = 10.0,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            help="Correlation ids are demo-RUN_ID-N (default: random).",
            show_default=False,
        ),
    ] = None,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """The seed guide's pipeline (wake word, STT, LLM, TTS, playback) with simulated engines.

    Each service is a bus of its own; prints the timeline and the latency of every hop.
    """
    bus_url = resolve_url(url)
    with out.reported_errors():
        check_url(bus_url)
        if run_id is not None and not RUN_ID.fullmatch(run_id):
            raise out.CliError(f"--run-id {run_id!r}: use 1-32 letters, digits, '_' or '-'")
    if not as_json:
        print(
            f"voicebus demo on {parse_url(bus_url).redacted()}: services wakeword, stt, llm, "
            "tts, playback "
            f"(one bus each), {utterances} utterance(s)\n",
            flush=True,
        )

    async def body() -> list[Utterance]:
        try:
            return await run_demo(bus_url, utterances, Engines(scale=scale), timeout, run_id=run_id)
        except DemoError as exc:
            raise out.CliError(str(exc), out.EXIT_TIMEOUT) from None

    runs: list[Utterance] = run(body)
    if as_json:
        out.print_json(
            {
                "url": parse_url(bus_url).redacted(),
                "utterances": [r.as_dict() for r in runs],
                "hops": hop_summary(runs),
            }
        )
        return
    out.print_demo(runs, hop_summary(runs) if len(runs) > 1 else [])


register_timeline(app)  # record, replay, trace (cli/timeline.py), listed after demo
