"""`voicebus.run` and `EventBus.run_forever`: a service runs until SIGINT or SIGTERM,
then stops cleanly: handlers in flight finish, its status turns ``offline``, it
exits 0 within 2 s and prints no traceback. Services are real subprocesses."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import voicebus
from tests.broker import Mosquitto
from tests.test_cli import Background, cli_env
from voicebus import EventBus, EventType
from voicebus.ops.status import get_statuses

STOP_WITHIN = 2.0
"""Seconds from the signal to the exit of a service with nothing left to do."""

SERVICE = """
import asyncio
import sys

import voicebus
from voicebus import Event, EventBus, EventType


async def main() -> None:
    async with EventBus(client_id=sys.argv[1]) as bus:

        async def slow(event: Event) -> None:
            print("working", flush=True)
            await asyncio.sleep(0.5)  # the work a stop must not cut short
            await bus.emit(
                EventType.RESPONSE_GENERATED,
                {{"response": "done"}},
                correlation_id=event.correlation_id,
            )

        bus.subscribe(EventType.SPEECH_DETECTED, slow)
        await bus.ready()
        print("ready", flush=True)
        await bus.run_forever()
    print("stopped", flush=True)


{runner}
"""
RUNNERS = {
    "voicebus.run": "voicebus.run(main)",
    "asyncio.run": "asyncio.run(main())",  # run_forever handles the signals itself
}
SIGNALS = [signal.SIGTERM, signal.SIGINT]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("service-broker")) as mosquitto:
        yield mosquitto


def status_of(broker: Mosquitto, client_id: str) -> str | None:
    """The retained status of `client_id`, read over a connection of its own."""

    async def read() -> str | None:
        return (await get_statuses(EventBus(broker.url(), status=False))).get(client_id)

    return asyncio.run(read())


def start(script: Path, broker: Mosquitto, *args: str) -> Background:
    return Background([sys.executable, str(script), *args], cli_env(broker.url()))


def stop(service: Background, sig: signal.Signals) -> tuple[int, str, str, float]:
    """Send `sig`; the exit code, stdout, stderr and seconds until the exit."""
    sent = time.monotonic()
    service.proc.send_signal(sig)
    code, out, err = service.finish(timeout=10)
    return code, out, err, time.monotonic() - sent


def assert_stopped_cleanly(
    code: int, err: str, elapsed: float, broker: Mosquitto, client_id: str
) -> None:
    assert code == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert elapsed < STOP_WITHIN, f"{elapsed:.2f} s from the signal to the exit"
    assert status_of(broker, client_id) == "offline"


def service_script(tmp_path: Path, runner: str) -> Path:
    script = tmp_path / "service.py"
    script.write_text(SERVICE.format(runner=RUNNERS[runner]))
    return script


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_a_signal_stops_the_service_cleanly(
    tmp_path: Path, broker: Mosquitto, runner: str, sig: signal.Signals
) -> None:
    client_id = f"service-{runner.split('.')[0]}-{sig.name.lower()}"
    with start(service_script(tmp_path, runner), broker, client_id) as service:
        service.wait_for("ready")
        assert status_of(broker, client_id) == "online"
        code, out, err, elapsed = stop(service, sig)
    assert_stopped_cleanly(code, err, elapsed, broker, client_id)
    # Under voicebus.run the signal cancels main; under asyncio.run main goes on.
    assert ("stopped" in out) == (runner == "asyncio.run"), out


@pytest.mark.parametrize("runner", RUNNERS)
def test_handlers_in_flight_finish_before_the_service_stops(
    tmp_path: Path, broker: Mosquitto, runner: str
) -> None:
    client_id = f"drain-{runner.split('.')[0]}"

    async def scenario(service: Background) -> None:
        async with EventBus(broker.url(), status=False) as asker:
            waiting = asker.wait_for(
                EventType.RESPONSE_GENERATED, timeout=10, correlation_id="drain-1"
            )
            await asker.emit(EventType.SPEECH_DETECTED, {"text": "x"}, correlation_id="drain-1")
            await asyncio.to_thread(service.wait_for, "working")
            service.proc.send_signal(signal.SIGTERM)
            service.proc.send_signal(signal.SIGINT)  # a second signal: still a clean stop
            reply = await waiting
        assert reply is not None, "the handler was cut short by the stop"
        assert reply.data["response"] == "done"

    with start(service_script(tmp_path, runner), broker, client_id) as service:
        service.wait_for("ready")
        asyncio.run(scenario(service))
        code, _, err = service.finish(timeout=10)
    assert code == 0, err
    assert "Traceback" not in err, err
    assert status_of(broker, client_id) == "offline"
    if runner == "voicebus.run":
        # Two standard signals pending at once are delivered lowest number first
        # (Linux), so SIGINT may be handled before SIGTERM: either is the second.
        assert re.search(r"SIG(INT|TERM): already stopping \(after SIG(TERM|INT)\)", err), err


@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_run_covers_all_of_main(tmp_path: Path, sig: signal.Signals) -> None:
    """A signal before any bus exists (while a service sets itself up) ends `run`
    quietly too: it handles the signals for the whole of `main`."""
    script = tmp_path / "setup.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio

            import voicebus


            async def main() -> None:
                print("setting up", flush=True)
                await asyncio.Event().wait()


            print(voicebus.run(main), flush=True)
            """
        )
    )
    with Background([sys.executable, str(script)], cli_env()) as service:
        service.wait_for("setting up")
        sent = time.monotonic()
        service.proc.send_signal(sig)
        code, out, err = service.finish(timeout=10)
    assert code == 0, err
    assert "Traceback" not in err, err
    assert time.monotonic() - sent < STOP_WITHIN
    assert out.splitlines()[-1] == "None"  # what run returns when a signal stopped main


def test_run_returns_what_main_returns_and_raises_what_it_raises() -> None:
    async def answer() -> int:
        return 42

    async def fails() -> None:
        raise ValueError("boom")

    assert voicebus.run(answer) == 42
    assert voicebus.run(answer()) == 42  # a coroutine works too
    with pytest.raises(ValueError, match="boom"):
        voicebus.run(fails)
    # Its signal handlers are gone again: Ctrl-C is KeyboardInterrupt as before.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


async def test_run_forever_on_memory_ends_with_the_signal() -> None:
    """In-process, on memory://: the signal handlers of run_forever (no `run`)."""
    bus = EventBus(f"memory://service-{time.monotonic_ns()}")
    serving = asyncio.create_task(bus.run_forever())
    deadline = time.monotonic() + 5
    while not bus.is_running and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    assert bus.is_running
    assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL  # else the signal ends pytest
    loop = asyncio.get_running_loop()
    loop.call_soon(signal.raise_signal, signal.SIGTERM)
    await asyncio.wait_for(serving, 5)
    assert not bus.is_running
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
