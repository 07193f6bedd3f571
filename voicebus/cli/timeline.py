"""``voicebus record``, ``replay`` and ``trace``: one utterance in time.

The logic lives in `voicebus.ops.recording` (the file format, replay) and
`voicebus.ops.trace` (recorded messages to a waterfall); this module connects
them to a broker and a terminal.

The broker keeps no history (only retained messages: dead letters, status), so
a trace of an utterance gets its messages either from a recording
(``trace --from FILE``) or live: ``trace ID`` listens from the moment it starts
(and reads the retained dead letters of ID), and prints the trace once the
utterance has been quiet for ``--quiet`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TextIO

import typer

from ..ops.recording import RecordedMessage, load_recording, record_message, replay
from ..ops.trace import Trace, TraceCollector, trace_entry, traces
from ..transport import Message, resolve_url
from ..wire.topics import matches
from . import output as out
from .support import (
    MEMORY_NOTE,
    AsJson,
    CorrelationId,
    Url,
    check_url,
    cli_bus,
    raw_client,
    run,
    stop_on_signals,
    topic_filter,
)

Patterns = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[PATTERN]...",
        help="Event types (speech_detected) or MQTT filters ('hermes/#'); default: all.",
        show_default=False,
    ),
]


def _first_copy(filters: list[str]) -> Callable[[Message], bool]:
    """True for one copy of each message: Mosquitto sends one per matching filter,
    told apart by their subscription ids (the filter's number)."""

    def keep(message: Message) -> bool:
        if not message.subscription_ids:
            return True
        first = next((n for n, f in enumerate(filters, 1) if matches(f, message.topic)), None)
        return first is None or first in message.subscription_ids

    return keep


def _correlation(recorded: RecordedMessage) -> str | None:
    """The correlation id a message belongs to (a dead letter's: its event's)."""
    row = trace_entry(recorded)
    return row.correlation_id if row is not None else recorded.correlation_id


async def _listen(
    url: str,
    filters: list[str],
    on_record: Callable[[RecordedMessage], bool],
    ready: str,
    *,
    retained: bool = False,
    duration: float = 0.0,
    tick: Callable[[], float | None] | None = None,
    connect_timeout: float | None = None,
) -> None:
    """Feed every message on `filters` to `on_record` (False: stop) until Ctrl-C,
    `duration` seconds, or `tick` (called after each wake-up) returns 0."""
    stop = asyncio.Event()
    wake = asyncio.Event()
    keep = _first_copy(filters)

    def on_message(message: Message) -> None:
        if stop.is_set() or (message.retain and not retained) or not keep(message):
            return
        if message.retain and not message.topic.startswith("voicebus/deadLetter/"):
            return
        if not on_record(record_message(message, time.time())):
            stop.set()
        wake.set()

    transport = await raw_client(url, on_message, connect_timeout)
    undo = stop_on_signals(stop)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration if duration > 0 else None
    try:
        for number, flt in enumerate(filters, 1):
            await transport.subscribe(flt, number)
        out.note(ready)
        if check_url(url):
            out.note(MEMORY_NOTE)
        while not stop.is_set():
            wait = tick() if tick is not None else None
            if wait == 0:
                break
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    break
                wait = left if wait is None else min(wait, left)
            wake.clear()
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
            try:
                await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
    finally:
        undo()
        await transport.close()


def record(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="Where to write the recording (JSON Lines).")
    ],
    patterns: Patterns = None,
    correlation_id: CorrelationId = None,
    count: Annotated[
        int, typer.Option("--count", "-n", min=0, help="Stop after N messages (0: no limit).")
    ] = 0,
    duration: Annotated[
        float, typer.Option("--duration", min=0.0, help="Stop after S seconds (0: no limit).")
    ] = 0.0,
    url: Url = None,
) -> None:
    """Record every message (topic, payload, envelope, receive time) to FILE, one JSON
    object a line, until Ctrl-C, --count or --duration."""
    bus_url = resolve_url(url)
    with out.reported_errors():
        filters = list(dict.fromkeys(topic_filter(p) for p in patterns or ["#"]))
        check_url(bus_url)
        try:
            sink: TextIO = open(file, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise out.CliError(f"cannot write {file}: {exc.strerror or exc}") from None
    written = 0

    def on_record(recorded: RecordedMessage) -> bool:
        nonlocal written
        if correlation_id is not None and _correlation(recorded) != correlation_id:
            return True
        sink.write(recorded.line() + "\n")
        sink.flush()
        written += 1
        return not (count and written >= count)

    async def body() -> None:
        ready = f"recording {', '.join(filters)} to {file} (Ctrl-C to stop)"
        await _listen(bus_url, filters, on_record, ready, duration=duration)

    try:
        run(body)
    finally:
        sink.close()
    out.note(f"recorded {written} message(s) to {file}")


def replay_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A recording (voicebus record).")],
    speed: Annotated[
        float,
        typer.Option("--speed", min=0.0, help="Time factor: 2 twice as fast, 0 no waiting."),
    ] = 1.0,
    roots: Annotated[
        bool,
        typer.Option(
            "--roots",
            help="Only the first message of each utterance: the running services make the rest.",
        ),
    ] = False,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Publish a recording again with its original spacing (new ids;
    metadata.replayed_from names the original)."""
    bus_url = resolve_url(url)
    with out.reported_errors():
        recording = load_recording(file)
        if check_url(bus_url):
            out.note(MEMORY_NOTE)
    chosen = recording.roots() if roots else recording

    async def body() -> dict[str, str]:
        async with cli_bus(bus_url) as bus:
            return await replay(bus, chosen, speed)

    renamed: dict[str, str] = run(body)
    if as_json:
        out.print_json({"replayed": len(chosen), "ids": renamed})
    else:
        print(f"replayed {len(chosen)} message(s) from {file}", flush=True)


def trace(
    correlation_id: Annotated[
        str | None,
        typer.Argument(metavar="CORRELATION_ID", help="The utterance.", show_default=False),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Trace each utterance as it happens.")
    ] = False,
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            metavar="FILE",
            help="Read a recording instead of the bus.",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[
        float,
        typer.Option("--quiet", min=0.0, help="Seconds without a message that end an utterance."),
    ] = 2.0,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            "-t",
            min=0.0,
            help="Live: seconds to wait for the utterance (default 30); with --follow, "
            "stop after S seconds (default: Ctrl-C).",
            show_default=False,
        ),
    ] = None,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Every event of one utterance as a waterfall: offset, hop, latency since its
    parent, dead letters, errors and cancellations."""
    if source is not None:
        with out.reported_errors():
            found = traces(load_recording(source), correlation_id)
        found = [t for t in found if t.rows]
        if not found:
            what = f"correlation id {correlation_id}" if correlation_id else "any correlation id"
            out.fail(f"no message with {what} in {source}", out.EXIT_INPUT)
        for one in found:
            _print_trace(one, as_json)
        return
    if correlation_id is None and not follow:
        out.fail("give a CORRELATION_ID, --follow, or --from FILE", out.EXIT_INPUT)
    bus_url = resolve_url(url)
    with out.reported_errors():
        check_url(bus_url)
    _live(bus_url, correlation_id, follow, quiet, timeout, as_json)


def _live(
    url: str,
    correlation_id: str | None,
    follow: bool,
    quiet: float,
    timeout: float | None,
    as_json: bool,
) -> None:
    collector = TraceCollector(quiet, correlation_id)
    printed = 0
    started = time.time()
    limit = timeout if timeout is not None else (0.0 if follow else 30.0)

    def on_record(recorded: RecordedMessage) -> bool:
        collector.add(recorded)
        return True

    def tick() -> float | None:
        nonlocal printed
        now = time.time()
        for done in collector.finished(now):
            _print_trace(done, as_json)
            printed += 1
        if printed and not follow:
            return 0
        due = collector.next_due()
        if due is None and not follow and limit:
            left = started + limit - now
            return 0 if left <= 0 else left
        return None if due is None else max(due - now, 0.001)

    async def body() -> None:
        what = f"correlation id {correlation_id}" if correlation_id else "every utterance"
        ready = f"tracing {what} (ends after {quiet:g}s without a message; Ctrl-C to stop)"
        await _listen(
            url,
            ["#"],
            on_record,
            ready,
            retained=correlation_id is not None,
            duration=limit if follow else 0.0,
            tick=tick,
            connect_timeout=limit or None,  # --timeout covers connecting too
        )
        for done in collector.finished(time.time(), everything=True):
            _print_trace(done, as_json)

    run(body)
    if correlation_id is not None and not follow and not printed:
        out.fail(
            f"no message with correlation id {correlation_id} within {limit:g}s (the broker "
            "keeps no history: start `voicebus trace` before the utterance, or "
            "`voicebus record` it and use `trace --from FILE`)",
            out.EXIT_TIMEOUT,
        )


def _print_trace(one: Trace, as_json: bool) -> None:
    if as_json:
        out.print_json(one.to_dict())
        return
    extra = [
        f"{n} {name}"
        for name, kind in (("dead letter(s)", "dead_letter"), ("error(s)", "error"))
        if (n := one.count(kind))
    ]
    if one.count("cancelled"):
        extra.append("cancelled")
    title = f"trace {one.correlation_id}: {len(one.rows)} message(s), {one.total_ms:.1f} ms" + (
        f", {', '.join(extra)}" if extra else ""
    )
    rows = [
        [
            f"{row.offset_ms:8.1f} ms",
            row.hop,
            "" if row.latency_ms is None else f"{row.latency_ms:6.1f} ms",
            row.type if row.kind == "event" else f"{row.type} [{row.kind.replace('_', ' ')}]",
            row.topic,
            out.short(row.detail, 60),
        ]
        for row in one.rows
    ]
    out.print_table(["at", "hop", "latency", "event", "topic", "detail"], rows, title)
    print(flush=True)


def register(app: typer.Typer) -> None:
    """Add ``record``, ``replay`` and ``trace`` to the ``voicebus`` app."""
    app.command("record")(record)
    app.command("replay")(replay_command)
    app.command("trace")(trace)


__all__ = ["record", "register", "replay_command", "trace"]
