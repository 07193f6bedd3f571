"""``voicebus arbiter``: the wake-word arbiter as a service (`voicebus.arbiter`)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from ..arbiter import Arbiter, likelihood
from ..bus import EventBus
from ..transport import resolve_url
from . import output as out
from .support import Url, check_url, run, stop_on_signals


def arbiter(
    window: Annotated[
        float,
        typer.Option("--window", min=0.001, help="Seconds during which wake words compete."),
    ] = 0.3,
    client_id: Annotated[
        str,
        typer.Option("--client-id", help="MQTT client id (one arbiter per installation)."),
    ] = "voicebus-arbiter",
    url: Url = None,
) -> None:
    """Arbitrate wake words between sites: the highest likelihood within the window
    wins, the other sites' utterances are cancelled. Runs until Ctrl-C / SIGTERM."""
    bus_url = resolve_url(url)
    with out.reported_errors():
        check_url(bus_url)

    async def body() -> None:
        stop = asyncio.Event()
        undo = stop_on_signals(stop)
        try:
            async with EventBus(bus_url, client_id=client_id) as bus:
                judge = Arbiter(bus, window=window)
                await bus.ready()
                print(f"arbiter ready on {bus.url} (window {window:g} s)", flush=True)
                shown = 0
                while not stop.is_set():
                    try:
                        await asyncio.wait_for(stop.wait(), 0.1)
                    except TimeoutError:
                        pass
                    for decision in list(judge.decisions)[shown:]:
                        losers = ", ".join(
                            f"{e.data.get('siteId')} ({likelihood(e):.2f})"
                            for e in decision.losers
                        )
                        winner = decision.winner
                        print(
                            f"{winner.data.get('siteId')} ({likelihood(winner):.2f}) wins"
                            + (f"; cancelled: {losers}" if losers else ""),
                            flush=True,
                        )
                    shown = len(judge.decisions)
                await judge.settle()
        finally:
            undo()

    run(body)
