"""Run a service until it is told to stop: SIGINT (Ctrl-C) or SIGTERM (``kill``,
``docker stop``, systemd).

```python
import voicebus
from voicebus import EventBus

async def main() -> None:
    async with EventBus(client_id="llm") as bus:
        bus.subscribe(...)
        await bus.ready()
        await bus.run_forever()   # until SIGINT/SIGTERM; then the bus stops

voicebus.run(main)
```

`run` is `asyncio.run` for a service: SIGINT and SIGTERM, for the whole life of
`main` (start-up and shutdown too), cancel `main` once; its ``async with EventBus``
blocks then stop their buses (handlers drained, ``offline`` status published), and
`run` returns ``None``: the process exits 0, without a ``KeyboardInterrupt``
traceback. Further signals while it shuts down are ignored.

`EventBus.run_forever` (`run_forever` here) starts the bus if needed, waits until
the process is told to stop, then stops the bus. Under `run` it leaves the
signals to `run`; under a plain `asyncio.run` it handles them itself while it
waits and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

log = logging.getLogger("voicebus")

T = TypeVar("T")


class Service(Protocol):
    """What `run_forever` serves: an `EventBus`, or anything that starts and stops like one."""

    async def ready(self) -> None: ...

    async def stop(self) -> None: ...

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that tell a service to stop."""

_UNDER_RUN: ContextVar[bool] = ContextVar("voicebus_under_run", default=False)
"""True in the task of `run`'s `main` (its signals are handled by `run`)."""


@contextlib.contextmanager
def on_stop_signals(callback: Callable[[signal.Signals], None]) -> Iterator[None]:
    """Call `callback(signal)` on SIGINT/SIGTERM inside this block (the running loop's
    handlers; where a loop cannot handle signals, e.g. off the main thread, none)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, callback, sig)
        except (NotImplementedError, RuntimeError, ValueError) as exc:
            log.debug("cannot handle %s here: %s", sig.name, exc)
            continue
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)  # back to the default (SIGINT: KeyboardInterrupt)


def run(
    main: Callable[[], Coroutine[Any, Any, T]] | Coroutine[Any, Any, T],
    *,
    debug: bool | None = None,
) -> T | None:
    """Run the service `main` until it returns or SIGINT/SIGTERM tells it to stop.

    `main` is an async function (or a coroutine: ``run(main())`` works too). The
    first SIGINT or SIGTERM cancels it, so its ``async with EventBus(...)`` blocks
    stop their buses: handlers drain, the ``offline`` status is published. Returns
    what `main` returned, or ``None`` when a signal stopped it; an exception from
    `main` propagates as from `asyncio.run`.
    """
    coro = main if isinstance(main, Coroutine) else main()
    return asyncio.run(_supervise(coro), debug=debug)


async def _supervise(coro: Coroutine[Any, Any, T]) -> T | None:
    _UNDER_RUN.set(True)  # copied into the context of the task made below
    task: asyncio.Task[T] = asyncio.ensure_future(coro)
    received: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        if received:
            log.warning("%s: already stopping (after %s)", sig.name, received[0].name)
            return
        received.append(sig)
        log.info("%s: stopping", sig.name)
        task.cancel()

    with on_stop_signals(stop):
        try:
            return await task
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if received and task.cancelled() and (me is None or not me.cancelling()):
                return None  # stopped by a signal, as asked
            raise


async def run_forever(bus: Service) -> None:
    """Start `bus` if needed and serve until the process is told to stop (SIGINT or
    SIGTERM), then stop `bus`: its handlers drain and it publishes ``offline``.

    Under `run`, the signal cancels the service and this stops the bus on the way
    out; elsewhere (a plain `asyncio.run`) this handles the signals itself and
    returns normally once the bus has stopped.
    """
    stopped = asyncio.Event()
    handling: contextlib.AbstractContextManager[None] = (
        contextlib.nullcontext() if _UNDER_RUN.get() else on_stop_signals(_set(stopped))
    )
    with handling:
        try:
            await bus.ready()
            await stopped.wait()
        finally:
            await bus.stop()


def _set(event: asyncio.Event) -> Callable[[signal.Signals], None]:
    def callback(sig: signal.Signals) -> None:
        log.info("%s: stopping", sig.name)
        event.set()

    return callback
