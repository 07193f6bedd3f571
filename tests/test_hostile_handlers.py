"""Nothing a handler, filter_func or middleware raises takes dispatch down.

`asyncio.CancelledError` and `GeneratorExit` are `BaseException`s: before, one of
them from a handler, a filter or a pre middleware ended the dispatch task in
silence (no dead letter, `is_running` still true, later events never handled, and
on memory:// the emitters blocked on the full queue). Each case runs on memory://
and on a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import Collector
from voicebus import Event, EventBus, EventType
from voicebus.receive.subscriptions import handler_name

FOLLOWING = 21
POISON = "poison"


def _raiser(exc_type: type[BaseException]) -> Callable[[Event], bool]:
    """A sync callable raising `exc_type` on the poison event only (True otherwise)."""

    def culprit(event: Event) -> bool:
        if event.data.get("text") == POISON:
            raise exc_type()
        return True

    return culprit


def _async_raiser(exc_type: type[BaseException]) -> Callable[[Event], Any]:
    """An async callable that awaits, then raises `exc_type` on the poison event."""

    async def culprit(event: Event) -> bool:
        await asyncio.sleep(0)
        if event.data.get("text") == POISON:
            raise exc_type()
        return True

    return culprit


@pytest.mark.parametrize("exc_type", [asyncio.CancelledError, GeneratorExit])
@pytest.mark.parametrize("place", ["handler", "filter_func", "pre_middleware"])
async def test_dispatch_survives_base_exceptions(
    bus_url: str, place: str, exc_type: type[BaseException]
) -> None:
    got = Collector("counter")
    errors = Collector("errors")
    # A small queue: a dead dispatcher would block the emitter on memory:// at once.
    async with EventBus(bus_url, max_queue_size=2) as bus, EventBus(bus_url) as peer:
        culprit: Callable[[Event], Any]
        if place == "handler":
            culprit = _async_raiser(exc_type)
            bus.subscribe(EventType.SPEECH_DETECTED, culprit, priority=10)
        elif place == "filter_func":
            culprit = Collector("filtered")  # the record names the filter's handler
            bus.subscribe(
                EventType.SPEECH_DETECTED, culprit, priority=10, filter_func=_raiser(exc_type)
            )
        else:
            culprit = _async_raiser(exc_type)
            bus.add_middleware(culprit)
        bus.subscribe(EventType.SPEECH_DETECTED, got)
        bus.subscribe(EventType.ERROR_OCCURRED, errors)
        await bus.ready()

        texts = [POISON] + [f"after-{i}" for i in range(FOLLOWING)]
        for text in texts:  # never blocks: the dispatcher keeps draining the queue
            await asyncio.wait_for(peer.emit(EventType.SPEECH_DETECTED, {"text": text}), 5)

        if place == "pre_middleware":  # fails closed: the handlers never see the event
            await got.wait(FOLLOWING)
            handled = [e.data["text"] for e in got.events]
            assert handled == texts[1:]
        else:  # the other handlers of that event still run
            await got.wait(FOLLOWING + 1)
            handled = [e.data["text"] for e in got.events]
            assert handled == texts
        (error,) = await errors.wait(1)
        assert bus.is_running
        (record,) = bus.get_dead_letter_queue()
        assert record["exception"] == exc_type.__name__
        assert record["reason"] == "handler_error"
        assert record["event"].data["text"] == POISON
        assert record["handler"] == handler_name(culprit)
        assert error.data["error"] == exc_type.__name__
        stats = bus.get_stats()
        assert stats["metrics"]["dead_letters"] == 1


async def test_a_handler_awaiting_a_cancelled_task_is_a_failure_not_a_stop(bus_url: str) -> None:
    got = Collector()

    async def waits_on_cancelled(event: Event) -> None:
        inner = asyncio.ensure_future(asyncio.sleep(10))
        inner.cancel()
        await inner  # CancelledError, though nobody cancelled the dispatch task

    async with EventBus(bus_url) as bus, EventBus(bus_url) as peer:
        bus.subscribe(EventType.SPEECH_DETECTED, waits_on_cancelled, priority=1)
        bus.subscribe(EventType.SPEECH_DETECTED, got)
        await bus.ready()
        for i in range(3):
            await asyncio.wait_for(peer.emit(EventType.SPEECH_DETECTED, {"text": str(i)}), 5)
        await got.wait(3)
        assert [r["exception"] for r in bus.get_dead_letter_queue()] == ["CancelledError"] * 3
        assert bus.is_running


async def test_a_raising_post_middleware_is_recorded_and_dispatch_goes_on(bus_url: str) -> None:
    got = Collector()
    async with EventBus(bus_url) as bus, EventBus(bus_url) as peer:
        bus.add_middleware(_raiser(GeneratorExit), pre=False, post=True)
        bus.subscribe(EventType.SPEECH_DETECTED, got)
        await bus.ready()
        for text in (POISON, "next"):
            await asyncio.wait_for(peer.emit(EventType.SPEECH_DETECTED, {"text": text}), 5)
        await got.wait(2)
        assert [e.data["text"] for e in got.events] == [POISON, "next"]
        (record,) = bus.get_dead_letter_queue()
        assert record["exception"] == "GeneratorExit"


async def test_an_exception_that_cannot_be_printed_is_still_a_dead_letter(bus_url: str) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    def culprit(event: Event) -> None:
        raise Unprintable

    got = Collector()
    async with EventBus(bus_url) as bus, EventBus(bus_url) as peer:
        bus.subscribe(EventType.SPEECH_DETECTED, culprit, priority=1)
        bus.subscribe(EventType.SPEECH_DETECTED, got)
        await bus.ready()
        for text in ("a", "b"):
            await asyncio.wait_for(peer.emit(EventType.SPEECH_DETECTED, {"text": text}), 5)
        await got.wait(2)
        records = bus.get_dead_letter_queue()
        assert [r["handler"] for r in records] == [culprit.__qualname__] * 2
        assert bus.is_running


@pytest.mark.parametrize("swallow", [False, True])
async def test_stop_still_cancels_a_handler_that_never_returns(bus_url: str, swallow: bool) -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def forever(event: Event) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            if not swallow:
                raise  # a handler that swallows it must not keep the bus alive either

    bus = EventBus(bus_url)
    bus.subscribe(EventType.SPEECH_DETECTED, forever)
    await bus.start()
    await bus.ready()
    await bus.emit(EventType.SPEECH_DETECTED, {"text": "hang"})
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(bus.stop(drain_timeout=0.05), 5)
    assert cancelled == [True]
    assert not bus.is_running
    assert bus.get_dead_letter_queue() == []  # the bus's own cancellation is no failure
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "voicebus-dispatch"]


def _run_script(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_system_exit_from_a_handler_ends_the_process() -> None:
    result = _run_script(
        """
        import asyncio, sys
        from voicebus import EventBus, EventType

        def leave(event):
            raise SystemExit(7)

        async def main():
            bus = EventBus("memory://exit")
            bus.subscribe(EventType.SPEECH_DETECTED, leave)
            await bus.start()
            await bus.emit(EventType.SPEECH_DETECTED, {"text": "bye"})
            await asyncio.sleep(30)
            print("still running")

        asyncio.run(main())
        """
    )
    assert result.returncode == 7, result.stderr
    assert "still running" not in result.stdout


def test_asyncio_run_ends_with_a_bus_left_running() -> None:
    """Cancelling the dispatch task from outside (asyncio.run at exit) is obeyed."""
    result = _run_script(
        """
        import asyncio
        from voicebus import EventBus, EventType

        async def main():
            bus = EventBus("memory://left")
            bus.subscribe(EventType.SPEECH_DETECTED, lambda e: None)
            await bus.start()
            await bus.emit(EventType.SPEECH_DETECTED, {"text": "hi"})
            print("done")

        asyncio.run(main())
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


@pytest.mark.parametrize("exc_type", [asyncio.CancelledError, GeneratorExit])
async def test_a_wait_for_filter_that_raises_fails_only_its_own_wait(
    bus_url: str, exc_type: type[BaseException]
) -> None:
    """The predicate runs in the transport callback: on memory:// that is inside the
    emitter's `publish`. Before, its CancelledError came out of the peer's `emit`."""
    got = Collector()
    async with EventBus(bus_url) as bus, EventBus(bus_url) as peer:
        bus.subscribe(EventType.SPEECH_DETECTED, got)
        waiting = bus.wait_for(EventType.SPEECH_DETECTED, timeout=5, filter_func=_raiser(exc_type))
        waiter = asyncio.ensure_future(waiting)
        await bus.ready()
        for text in (POISON, "a", "b"):
            await asyncio.wait_for(peer.emit(EventType.SPEECH_DETECTED, {"text": text}), 5)
        await got.wait(3)
        with pytest.raises(exc_type):
            await asyncio.wait_for(waiter, 5)
        assert bus.get_stats()["pending_waits"] == 0
        assert bus.is_running
