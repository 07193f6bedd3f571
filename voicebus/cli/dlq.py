"""``voicebus dlq``: the dead letters retained on the broker (``voicebus/deadLetter/<id>``).

Each subcommand is one call into `voicebus.ops.dlq`: ``list_dead_letters``,
``replay_dead_letter``, ``purge_dead_letters``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..bus import EventBus
from ..ops import dlq
from ..transport import resolve_url
from ..wire.events import Event
from . import output as out
from .support import AsJson, Url, check_url, cli_bus, run

dlq_app = typer.Typer(
    help="Dead letters retained on the broker: list, replay, purge.", no_args_is_help=True
)

Timeout = Annotated[
    float, typer.Option("--timeout", "-t", help="Seconds the broker may take to answer.")
]


def _bus(url: str | None) -> EventBus:
    bus_url = resolve_url(url)
    with out.reported_errors():
        if check_url(bus_url):
            out.note("note: on memory:// only this process's own dead letters exist")
    return cli_bus(bus_url)


@dlq_app.command("list")
def list_command(url: Url = None, timeout: Timeout = 5.0, as_json: AsJson = False) -> None:
    """List dead letters (id, time, reason, topic, error), oldest first."""
    bus = _bus(url)

    async def body() -> list[dict[str, Any]]:
        return await dlq.list_dead_letters(bus, timeout)

    records: list[dict[str, Any]] = run(body)
    if as_json:
        out.print_json(records)
        return
    if not records:
        out.note("no dead letters")
        return
    out.print_table(
        ["id", "time", "reason", "topic", "client", "error"],
        [
            [
                str(r.get("id")),
                out.date_time(r.get("time")),
                str(r.get("reason") or "-"),
                str(r.get("topic") or "-"),
                str(r.get("client_id") or "-"),
                out.short(str(r.get("error") or ""), 60),
            ]
            for r in records
        ],
    )


@dlq_app.command("replay")
def replay_command(
    letter_id: Annotated[str, typer.Argument(metavar="ID", help="Dead letter id (dlq list).")],
    url: Url = None,
    timeout: Timeout = 5.0,
    as_json: AsJson = False,
) -> None:
    """Send a dead letter again (a failed handler's event, or the raw message) and clear it."""
    bus = _bus(url)

    async def body() -> Event | None:
        async with bus:
            return await dlq.replay_dead_letter(bus, letter_id, timeout)

    event: Event | None = run(body)
    if as_json:
        out.print_json({"replayed": letter_id, "event": event.to_dict() if event else None})
    elif event is not None:
        print(f"replayed {letter_id} as {event.type.value} on {event.topic} (id {event.id})")
    else:
        print(f"replayed {letter_id}: the original message was published again")


@dlq_app.command("purge")
def purge_command(
    letter_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="Dead letter id.", show_default=False)
    ] = None,
    purge_all: Annotated[bool, typer.Option("--all", help="Purge every dead letter.")] = False,
    url: Url = None,
    timeout: Timeout = 5.0,
    as_json: AsJson = False,
) -> None:
    """Clear one dead letter (ID) or all of them (--all) from the broker."""
    if (letter_id is None) == (not purge_all):
        out.fail("give a dead letter ID or --all (not both)", out.EXIT_INPUT)
    bus = _bus(url)

    async def body() -> int:
        return await dlq.purge_dead_letters(bus, letter_id, timeout)

    count: int = run(body)
    if letter_id is not None and count == 0:
        out.fail(f"no dead letter {letter_id!r} (voicebus dlq list shows them)", out.EXIT_INPUT)
    if as_json:
        out.print_json({"purged": count})
    else:
        print(f"purged {count} dead letter(s)", flush=True)
