"""What the ``voicebus`` command prints: rich on a terminal, plain text in a pipe, JSON on request.

Errors are one line on stderr and an exit code (`CliError`); nothing here prints
a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import (
    AuthenticationError,
    NotAuthorizedError,
    PayloadTooLargeError,
    PayloadValidationError,
    TopicError,
    TransportError,
    UnknownEventTypeError,
    VoicebusError,
)
from ..wire.events import Event

if TYPE_CHECKING:
    from .demo import Utterance

EXIT_OK = 0
EXIT_TIMEOUT = 1
"""`wait` saw no event in time (also: `status` found no service with --require)."""
EXIT_INPUT = 2
"""Bad input: JSON, payload, event type, topic filter, bus URL (click uses 2 for usage errors)."""
EXIT_BROKER = 3
"""The broker could not be reached (DNS, refused, TLS, no answer) or went away."""
EXIT_AUTH = 4
"""The broker refused our credentials (user name, password, client certificate)."""
EXIT_DENIED = 5
"""The broker's ACL refused a publish or subscription."""
EXIT_INTERRUPTED = 130

_INPUT_ERRORS = (PayloadValidationError, UnknownEventTypeError, TopicError, PayloadTooLargeError)


class CliError(Exception):
    """An error the CLI reports as one line and an exit code."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def is_terminal() -> bool:
    return stdout().is_terminal


def fail(message: str, code: int) -> NoReturn:
    """Print ``voicebus: error: <message>`` as one line on stderr and exit with `code`."""
    line = " ".join(message.split())
    err = stderr()
    if err.is_terminal:
        err.print(Text.assemble(("voicebus: error: ", "bold red"), line))
    else:
        print(f"voicebus: error: {line}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def note(message: str) -> None:
    """An informational line on stderr (ready lines, hints): never on stdout."""
    err = stderr()
    if err.is_terminal:
        err.print(Text(message, style="dim"))
    else:
        print(message, file=sys.stderr, flush=True)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn voicebus errors into one line on stderr and the matching exit code."""
    try:
        yield
    except CliError as exc:
        fail(str(exc), exc.code)
    except _INPUT_ERRORS as exc:
        fail(str(exc), EXIT_INPUT)
    except AuthenticationError as exc:
        fail(str(exc), EXIT_AUTH)
    except NotAuthorizedError as exc:
        fail(str(exc), EXIT_DENIED)
    except TransportError as exc:
        fail(str(exc), EXIT_BROKER)
    except VoicebusError as exc:
        fail(str(exc), EXIT_INPUT)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)


class _NoTraceback(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        return ""

    def formatStack(self, stack_info: str) -> str:
        return ""


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is logged."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(verbose: bool) -> Callable[[], None]:
    """Log warnings as single lines on stderr; ``--verbose`` adds debug and tracebacks.

    Returns the function that puts the ``voicebus`` logger back as it was.
    """
    handler = _CurrentStderr()
    fmt = "voicebus: %(levelname)s: %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt) if verbose else _NoTraceback(fmt))
    logger = logging.getLogger("voicebus")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logger.propagate = False
    # paho's own lines ("failed to receive on socket") come again in the one-line
    # error (or the transport's warning): shown with --verbose only
    paho = logging.getLogger("voicebus.mqtt.paho")
    paho_level = paho.level
    paho.setLevel(logging.NOTSET if verbose else logging.CRITICAL)

    def restore() -> None:
        logger.handlers[:], level, logger.propagate = saved
        logger.setLevel(level)
        paho.setLevel(paho_level)

    return restore


# --- generic output ------------------------------------------------------------------


def silence_stdout() -> None:
    """After a broken pipe: send the rest of stdout (and its final flush) nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, default=str), flush=True)


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None
) -> None:
    """A rich table on a terminal, aligned plain columns otherwise."""
    out = stdout()
    if out.is_terminal:
        table = Table(title=title, title_justify="left", header_style="bold")
        for column in columns:  # a narrow terminal folds a long cell, never cuts it ("…")
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    if title:
        print(title)
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    for row in [list(columns), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    sys.stdout.flush()


def short(value: Any, limit: int = 72) -> str:
    """A one-line, shortened JSON rendering of a payload."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _local(timestamp: Any) -> time.struct_time | None:
    """`timestamp` in local time; None when it is no time at all (NaN, 1e300, text)."""
    try:
        return time.localtime(float(timestamp))
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def clock(timestamp: float) -> str:
    local = _local(timestamp)
    if local is None:
        return "??:??:??.???"
    return time.strftime("%H:%M:%S", local) + f".{int(float(timestamp) % 1 * 1000):03d}"


def date_time(timestamp: Any) -> str:
    """``YYYY-mm-dd HH:MM:SS`` in local time, or the raw value when it is no time."""
    local = _local(timestamp)
    return str(timestamp) if local is None else time.strftime("%Y-%m-%d %H:%M:%S", local)


# --- listen --------------------------------------------------------------------------


def event_record(
    event: Event | None, topic: str, payload: bytes, retain: bool, problem: str | None
) -> dict[str, Any]:
    """The JSON line `listen --json` prints for one message (``timestamp``, as in
    `Event.to_dict`: the same key as `wait` and `publish --json`)."""
    record: dict[str, Any] = {
        "timestamp": event.timestamp if event else time.time(),
        "type": event.type.value if event else None,
        "topic": topic,
        "correlation_id": event.correlation_id if event else None,
        "retain": retain,
    }
    if event is not None and problem is None:
        record.update(id=event.id, source=event.source, data=event.data)
    else:
        record["payload"] = payload.decode("utf-8", "replace")
        record["problem"] = problem
    return record


def print_event_line(record: dict[str, Any]) -> None:
    """One line per message: time, type, topic, correlation id, short payload."""
    kind = record["type"] or "-"
    cid = record["correlation_id"] or "-"
    body = short(record["data"]) if "data" in record else short(record["payload"])
    flags = " (retained)" if record["retain"] else ""
    problem = record.get("problem")
    out = stdout()
    if out.is_terminal:
        line = Text.assemble(
            (clock(record["timestamp"]), "dim"),
            "  ",
            (f"{kind:24}", "bold red" if problem else "bold cyan"),
            "  ",
            (f"{record['topic']:40}", "green"),
            "  ",
            (f"{cid:14}", "magenta"),
            "  ",
            (f"[{problem}] " if problem else "", "red"),
            body,
            (flags, "dim"),
        )
        out.print(line)
        return
    prefix = f"[{problem}] " if problem else ""
    print(
        f"{clock(record['timestamp'])}  {kind:24}  {record['topic']:40}  {cid:14}  "
        f"{prefix}{body}{flags}",
        flush=True,
    )


# --- demo ----------------------------------------------------------------------------


def print_demo(runs: Sequence[Utterance], summary: Sequence[dict[str, Any]]) -> None:
    """Each utterance's timeline (offset, hop, latency, event, topic), then a summary."""
    for run in runs:
        start = run.hops[0].event.timestamp
        title = (
            f"utterance {run.number}  correlation id {run.correlation_id}\n"
            f'  heard "{run.said}" -> answered "{run.answer}"'
        )
        rows = [
            [
                f"{(h.event.timestamp - start) * 1000:8.1f} ms",
                h.label,
                f"{h.hop_ms:6.1f} ms" if h.previous else "",
                h.event.type.value,
                h.event.topic,
                f"{h.bus_ms:5.2f} ms",
            ]
            for h in run.hops
        ]
        print_table(["at", "hop", "latency", "event", "topic", "bus"], rows, title)
        print(f"  total {run.total_ms:.1f} ms from wake word to sayFinished\n", flush=True)
    if summary:
        print_table(
            ["hop", "median", "max"],
            [[s["hop"], f"{s['median_ms']:.1f} ms", f"{s['max_ms']:.1f} ms"] for s in summary],
            f"latency per hop over {len(runs)} utterances",
        )
