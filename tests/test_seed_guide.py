"""Every example of the user guide (tests/seed/SEED-GUIDE.md), run on both transports.

The examples are read from the guide at test time and run with one textual change,
``from core.event_bus import`` -> ``from voicebus import`` (see `tests/seed_harness.py`).
Each test names the guide blocks it runs with ``block("<heading>")``;
`test_every_guide_block_is_covered` fails when a block of the guide is run by no test.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.helpers import Collector, eventually
from tests.seed_harness import (
    OUR_IMPORT,
    SEED_IMPORT,
    Output,
    block,
    compile_block,
    guide_blocks,
    namespace,
    run_block,
    when_waiting,
)
from voicebus import Event, EventBus, EventType

TRANSPORT_FIXTURES = {"bus", "peer", "seed_url", "bus_url"}


# --- fixtures and helpers ------------------------------------------------------------


@pytest.fixture
async def seed_url(bus_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """`VOICEBUS_URL` set to the transport under test; the singleton stopped afterwards."""
    monkeypatch.setenv("VOICEBUS_URL", bus_url)
    yield bus_url
    await (await EventBus.get_instance()).stop()


@pytest.fixture
def out(capsys: pytest.CaptureFixture[str]) -> Output:
    """What the examples print."""
    return Output(capsys)


def sentinel(bus: EventBus, *event_types: EventType) -> Collector:
    """A handler that runs after every other handler of these events (lowest priority),
    so once it has seen an event, the example's handlers have run for it."""
    last = Collector("sentinel")
    for event_type in event_types:
        bus.subscribe(event_type, last, priority=-1000)
    return last


def transcribe_or_fail(event: Event) -> None:
    """A handler that always fails (fills the dead-letter queue, emits ERROR_OCCURRED)."""
    raise RuntimeError("engine offline")


# --- Quick Start -----------------------------------------------------------------------


async def test_quick_start_script(seed_url: str, tmp_path: Path) -> None:
    """The Quick Start is a script (``asyncio.run(main())``): run it as one."""
    script = tmp_path / "quick_start.py"
    script.write_text(block("Basic Usage").code)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=tmp_path,
        env={**os.environ, "VOICEBUS_URL": seed_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    assert "Traceback" not in stderr.decode(), stderr.decode()
    lines = stdout.decode().splitlines()
    assert len(lines) == 1, lines
    prefix = "Received: speech_detected - "
    assert lines[0].startswith(prefix), lines
    assert ast.literal_eval(lines[0][len(prefix) :])["text"] == "Hello world"


async def test_convenience_functions(seed_url: str, bus: EventBus, out: Output) -> None:
    observed = Collector()
    bus.subscribe(EventType.WAKE_WORD_DETECTED, observed)
    await bus.ready()

    await run_block(block("Using Convenience Functions"), namespace())

    printed = await out.wait_for("Got event: ")
    assert ast.literal_eval(printed.split("Got event: ", 1)[1].strip())["confidence"] == 0.95
    # the singleton is on $VOICEBUS_URL: another bus on that transport saw the event
    (event,) = await observed.wait(1)
    assert event.data["confidence"] == 0.95
    singleton = await EventBus.get_instance()
    assert singleton.is_running and singleton.url == bus.url


# --- Advanced Patterns -----------------------------------------------------------------


async def test_once(bus: EventBus, out: Output) -> None:
    last = sentinel(bus, EventType.MODEL_LOADED)
    await run_block(block("1. One-Time Subscriptions (Mycroft Pattern)"), namespace(bus=bus))
    events = await last.wait(2)
    assert [e.data["model"] for e in events] == ["llama", "gemma"]
    assert out.lines == ["This will only be called once!"]


async def test_request_response(bus: EventBus, out: Output) -> None:
    """The block waits 30 s, so only the answered variant runs: a download service
    answers MODEL_DOWNLOAD_STARTED with MODEL_DOWNLOAD_COMPLETED once the example waits."""

    async def download_service(event: Event) -> None:
        model = event.data["model"]
        await when_waiting(
            bus, lambda: bus.emit(EventType.MODEL_DOWNLOAD_COMPLETED, {"model": model})
        )

    bus.subscribe(EventType.MODEL_DOWNLOAD_STARTED, download_service)
    ns = namespace(bus=bus)
    started = time.monotonic()
    await run_block(block("2. Request/Response Pattern"), ns)

    assert time.monotonic() - started < 5
    assert ns["result"].type is EventType.MODEL_DOWNLOAD_COMPLETED
    (line,) = out.lines
    assert line.startswith("Download completed: "), line
    assert ast.literal_eval(line.removeprefix("Download completed: "))["model"] == "llama"


async def test_priority_handlers(bus: EventBus, out: Output) -> None:
    # subscribed before the example's handlers: it runs between them only if
    # priorities (10 > 5 > 0), not subscription order, decide
    bus.subscribe(EventType.SPEECH_DETECTED, lambda e: print("priority 5"), priority=5)
    await run_block(block("3. Priority Handlers"), namespace(bus=bus))
    last = sentinel(bus, EventType.SPEECH_DETECTED)
    await bus.emit(EventType.SPEECH_DETECTED, {"text": "hi"})
    await last.wait(1)
    assert out.lines == ["Executed first", "priority 5", "Executed second"]


async def test_filtered_subscription(bus: EventBus, out: Output) -> None:
    await run_block(block("4. Filtered Subscriptions"), namespace(bus=bus))
    last = sentinel(bus, EventType.SPEECH_DETECTED)
    for data in (
        {"text": "mumble", "confidence": 0.5},
        {"text": "turn on the lights", "confidence": 0.95},
        {"text": "no score"},
        {"text": "borderline", "confidence": 0.8},
    ):
        await bus.emit(EventType.SPEECH_DETECTED, data)
    await last.wait(4)
    assert out.lines == ["High confidence speech: turn on the lights"]


async def test_middleware(bus: EventBus, out: Output) -> None:
    got = Collector()
    bus.subscribe(EventType.SPEECH_DETECTED, got)
    before = time.time()
    await run_block(block("5. Middleware"), namespace(bus=bus))
    await bus.emit(EventType.SPEECH_DETECTED, {"text": "hi"})
    (event,) = await got.wait(1)
    assert out.lines == [f"[LOG] Event: speech_detected from {bus.source}"]
    # metrics_middleware is a pre middleware (post=False): handlers see its metadata
    assert before <= event.metadata["processed_at"] <= time.time()


async def test_correlation_and_metadata(bus: EventBus, out: Output) -> None:
    got = Collector()
    bus.subscribe(EventType.SPEECH_DETECTED, got)
    ns = namespace(bus=bus)
    await run_block(block("6. Correlation IDs and Metadata"), ns)
    (event,) = await got.wait(1)
    assert event.correlation_id == "request-123"
    assert event.metadata == {"user_id": "alice", "session": "xyz"}
    await ns["handler"](event)  # the example's handler, on the event that travelled
    assert out.lines == ["Correlation: request-123", "User: alice"]


# --- Service Integration Examples ------------------------------------------------------


async def test_service_pipeline(seed_url: str, bus: EventBus) -> None:
    """STT -> LLM -> TTS through the singleton, with the engines the guide leaves out."""
    ns = namespace()
    await run_block(block("STT Service Integration"), ns)
    await run_block(block("LLM Service Integration"), ns)
    await run_block(block("TTS Service Integration"), ns)

    class STT(ns["STTService"]):  # type: ignore[misc]
        async def on_silence(self, event: Event) -> None:  # referenced, not defined
            await self.on_transcription_complete("what time is it")

    class LLM(ns["LLMService"]):  # type: ignore[misc]
        async def generate(self, text: str) -> str:
            return f"It is noon ({text})"

    class TTS(ns["TTSService"]):  # type: ignore[misc]
        async def synthesize(self, text: str) -> Any:
            return SimpleNamespace(duration=len(text) / 10)

    seen = {
        t: Collector(t.value)
        for t in (
            EventType.SPEECH_DETECTED,
            EventType.RESPONSE_GENERATING,
            EventType.RESPONSE_GENERATED,
            EventType.TTS_STARTED,
            EventType.TTS_COMPLETED,
        )
    }
    for event_type, collector in seen.items():
        bus.subscribe(event_type, collector)
    await bus.ready()
    for service in (STT(), LLM(), TTS()):
        await service.initialize()
    app_bus = await EventBus.get_instance()
    await app_bus.start()  # the application starts the singleton (as in the Quick Start)

    # 1. speech from another component, with a correlation id, through LLM and TTS
    await bus.emit(
        EventType.SPEECH_DETECTED, {"text": "hello", "confidence": 0.9}, correlation_id="conv-1"
    )
    await seen[EventType.TTS_COMPLETED].wait(1)
    chain = [seen[t].events[0] for t in list(seen)[1:]]
    assert [e.correlation_id for e in chain] == ["conv-1"] * 4
    generating, generated, tts_started, tts_completed = chain
    assert generating.data["prompt"] == "hello"
    assert generated.data["response"] == "It is noon (hello)"
    assert generated.data["prompt"] == "hello"
    assert tts_started.data["text"] == "It is noon (hello)"
    assert tts_completed.data["duration"] == pytest.approx(len("It is noon (hello)") / 10)

    # 2. audio, then silence: the STT service transcribes and the pipeline follows
    await bus.emit(EventType.AUDIO_STARTED, {})
    await bus.emit(EventType.SILENCE_DETECTED, {})
    await seen[EventType.TTS_COMPLETED].wait(2)
    speech = seen[EventType.SPEECH_DETECTED].events[1]
    assert speech.data["text"] == "what time is it"
    assert speech.data["confidence"] == 0.95
    assert abs(speech.data["timestamp"] - time.time()) < 10
    chain = [seen[t].events[1] for t in list(seen)[1:]]
    assert {e.correlation_id for e in chain} == {speech.correlation_id}
    assert chain[1].data["response"] == "It is noon (what time is it)"
    assert chain[3].data["duration"] == pytest.approx(len("It is noon (what time is it)") / 10)

    def calls() -> dict[str, int]:
        return {s["handler"]: s["call_count"] for s in app_bus.get_stats()["handler_stats"]}

    # A handler is counted when it returns: TTS's last emit can reach `bus` (over MQTT,
    # before its PUBACK) while that handler still awaits it.
    expected = {
        "STTService.on_audio_started": 1,
        "LLMService.on_speech_detected": 2,
        "TTSService.on_response_generated": 2,
    }
    await eventually(lambda: all(calls().get(k) == n for k, n in expected.items()), 5)


# --- Monitoring and Debugging ----------------------------------------------------------


async def test_statistics(bus: EventBus, out: Output) -> None:
    speech_counter = Collector("speech_counter")
    bus.subscribe(EventType.SPEECH_DETECTED, speech_counter)
    await bus.emit(EventType.SPEECH_DETECTED, {"text": "one"})
    await bus.emit(EventType.SPEECH_DETECTED, {"text": "two"})
    await bus.emit(EventType.WAKE_WORD_DETECTED, {"confidence": 0.9})
    await speech_counter.wait(2)

    ns = namespace(bus=bus)
    await run_block(block("Get Statistics"), ns)
    lines = out.lines
    assert lines[:2] == ["Total events: 3", "Total errors: 0"]
    average = float(lines[2].removeprefix("Average processing time: "))
    assert 0 < average < 1
    by_type = ast.literal_eval(lines[3].removeprefix("Events by type: "))
    assert by_type == {"speech_detected": 2, "wake_word_detected": 1}
    assert len(lines) == 4

    await run_block(block("Handler Statistics"), ns)
    handler_lines = out.lines[4:]
    assert handler_lines[:2] == ["Handler: speech_counter", "  Calls: 2"]
    assert re.fullmatch(r"  Avg duration: \d+\.\d{6}s", handler_lines[2])
    assert len(handler_lines) == 3


async def test_event_history(bus: EventBus, peer: EventBus, out: Output) -> None:
    """History of events received from another service over the transport."""
    last = sentinel(bus, EventType.SPEECH_DETECTED, EventType.WAKE_WORD_DETECTED)
    await bus.ready()
    for n in range(11):
        await peer.emit(EventType.SPEECH_DETECTED, {"text": f"s{n}"})
    await peer.emit(EventType.WAKE_WORD_DETECTED, {"confidence": 0.9})
    await last.wait(12)

    ns = namespace(bus=bus)
    await run_block(block("View Event History"), ns)
    lines = out.lines
    assert len(lines) == 10
    assert [line.split(": ", 1)[0] for line in lines] == ["speech_detected"] * 9 + [
        "wake_word_detected"
    ]
    texts = [ast.literal_eval(line.split(": ", 1)[1]).get("text") for line in lines]
    assert texts == [f"s{n}" for n in range(2, 11)] + [None]
    assert [e.data["text"] for e in ns["speech_events"]] == [f"s{n}" for n in range(6, 11)]


async def test_dead_letter_queue(bus: EventBus, out: Output) -> None:
    errors = Collector()
    bus.subscribe(EventType.ERROR_OCCURRED, errors)
    bus.subscribe(EventType.SPEECH_DETECTED, transcribe_or_fail)
    await bus.emit(EventType.SPEECH_DETECTED, {"text": "hi"})
    await errors.wait(1)

    await run_block(block("Check Dead Letter Queue"), namespace(bus=bus))
    assert out.lines == [
        "Failed: speech_detected",
        "Error: engine offline",
        "Handler: transcribe_or_fail",
    ]


async def test_error_monitor(bus: EventBus, out: Output) -> None:
    await run_block(block("Error Handling"), namespace(bus=bus))
    bus.subscribe(EventType.SPEECH_DETECTED, transcribe_or_fail)
    seen = Collector()
    bus.subscribe(EventType.SPEECH_DETECTED, seen, priority=-1)
    await bus.emit(EventType.SPEECH_DETECTED, {"text": "hi"})
    await out.wait_for("Error in ")
    assert out.lines == ["Error in transcribe_or_fail: engine offline"]
    # "Handler errors don't stop the bus": the next handler still ran
    assert len(seen.events) == 1


# --- Best Practices --------------------------------------------------------------------


async def test_request_tracing(seed_url: str, bus: EventBus) -> None:
    got = Collector()
    bus.subscribe(EventType.SPEECH_DETECTED, got)
    await bus.ready()
    ns = namespace(data={"text": "what's the weather"})
    await run_block(block("1. Use Correlation IDs for Request Tracing"), ns)
    (event,) = await got.wait(1)
    assert re.fullmatch(r"request-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", ns["correlation_id"])
    assert event.correlation_id == ns["correlation_id"]
    assert event.data["text"] == "what's the weather"


async def test_filters_for_selective_processing(bus: EventBus) -> None:
    process = Collector("process")
    await run_block(
        block("2. Use Filters for Selective Processing"), namespace(bus=bus, process=process)
    )
    last = sentinel(bus, EventType.SPEECH_DETECTED)
    for data in (
        {"text": "low", "confidence": 0.3},
        {"text": "high", "confidence": 0.9},
        {"text": "unscored"},  # the handler alone would fail on it (None > 0.8)
    ):
        await bus.emit(EventType.SPEECH_DETECTED, data)
    await last.wait(3)
    assert [e.data["text"] for e in process.events] == ["high"]
    assert bus.get_dead_letter_queue() == []


async def test_priorities_wisely(bus: EventBus) -> None:
    order: list[str] = []
    # subscribed before the example's handlers, so only priorities can put them after
    bus.subscribe(EventType.SPEECH_DETECTED, Collector("between", order), priority=25)
    error_observer = Collector("error_observer", order)
    bus.subscribe(EventType.ERROR_OCCURRED, error_observer)

    def fail_on_wake(event: Event) -> None:
        raise ValueError("no wake word engine")

    bus.subscribe(EventType.WAKE_WORD_DETECTED, fail_on_wake)
    critical = Collector("critical_error_handler", order)
    logger = Collector("logger", order)
    ns = namespace(
        bus=bus,
        critical_error_handler=critical,
        speech_processor=Collector("speech_processor", order),
        logger=logger,
    )
    await run_block(block("3. Use Priorities Wisely"), ns)

    await bus.emit(EventType.SPEECH_DETECTED, {"text": "hi"})
    await logger.wait(1)
    assert order == ["speech_processor", "between", "logger"]

    order.clear()
    await bus.emit(EventType.WAKE_WORD_DETECTED, {"confidence": 0.9})
    await error_observer.wait(1)
    assert order == ["critical_error_handler", "error_observer"]
    assert critical.events[0].data["error"] == "no wake word engine"


async def test_clean_up_resources(seed_url: str) -> None:
    app_bus = await EventBus.get_instance()
    await app_bus.start()
    my_handler = Collector("my_handler")
    app_bus.subscribe(EventType.SPEECH_DETECTED, my_handler)
    await app_bus.emit(EventType.SPEECH_DETECTED, {"text": "hi"})
    await my_handler.wait(1)

    ns = namespace(my_handler=my_handler)
    await run_block(block("4. Clean Up Resources"), ns)
    await ns["cleanup"]()

    assert not app_bus.is_running
    stats = app_bus.get_stats()
    assert stats["subscriptions"] == 0
    assert stats["broker_filters"] == ["voicebus/cancelled"]  # every bus hears cancellations
    assert await EventBus.get_instance() is not app_bus  # a stopped singleton is replaced


async def test_middleware_for_cross_cutting_concerns(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("seed_guide.example")
    caplog.set_level(logging.INFO, logger=logger.name)
    got = Collector()
    bus.subscribe(EventType.SPEECH_DETECTED, got)
    before = time.time()
    await run_block(
        block("5. Use Middleware for Cross-Cutting Concerns"), namespace(bus=bus, logger=logger)
    )
    await bus.emit(EventType.SPEECH_DETECTED, {"text": "hi"})
    (event,) = await got.wait(1)
    logged = [r.getMessage() for r in caplog.records if r.name == logger.name]
    assert logged == ["Event: speech_detected"]
    assert before <= event.metadata["received_at"] <= time.time()


# --- Performance Considerations --------------------------------------------------------


async def test_queue_size(seed_url: str) -> None:
    ns = namespace()
    await run_block(block("Performance Considerations #1"), ns)
    configured: EventBus = ns["bus"]
    assert configured.max_queue_size == 5000
    async with configured:
        got = Collector()
        configured.subscribe(EventType.SPEECH_DETECTED, got)
        await configured.emit(EventType.SPEECH_DETECTED, {"text": "hi"})
        await got.wait(1)
        assert configured.get_stats()["max_queue_size"] == 5000


async def test_history_disabled(seed_url: str) -> None:
    ns = namespace()
    await run_block(block("Performance Considerations #2"), ns)
    configured: EventBus = ns["bus"]
    async with configured:
        got = Collector()
        configured.subscribe(EventType.SPEECH_DETECTED, got)
        await configured.emit(EventType.SPEECH_DETECTED, {"text": "one"})
        await configured.emit(EventType.SPEECH_DETECTED, {"text": "two"})
        await got.wait(2)
        assert configured.get_event_history() == []
        assert configured.get_stats()["metrics"]["total_events"] == 2


class FakeDatabase:
    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []
        self.sync_saved: list[dict[str, Any]] = []

    async def save(self, data: dict[str, Any]) -> None:
        await asyncio.sleep(0)  # part of the test: an async save that yields
        self.saved.append(data)

    def sync_save(self, data: dict[str, Any]) -> None:
        self.sync_saved.append(data)


async def test_async_and_sync_handlers(bus: EventBus) -> None:
    database = FakeDatabase()
    ns = namespace(bus=bus, database=database)
    await run_block(block("Performance Considerations #3"), ns)
    bus.subscribe(EventType.SPEECH_DETECTED, ns["handler"])
    bus.subscribe(EventType.SPEECH_DETECTED, ns["sync_handler"])
    last = sentinel(bus, EventType.SPEECH_DETECTED)
    await bus.emit(EventType.SPEECH_DETECTED, {"text": "save me"})
    await last.wait(1)
    assert [d["text"] for d in database.saved] == ["save me"]
    assert [d["text"] for d in database.sync_saved] == ["save me"]


# --- Migration from Old Event Bus ------------------------------------------------------


async def test_migration_examples(bus: EventBus) -> None:
    """Old-style subscribe/emit plus `once` and `wait_for` (no timeout: a TTS service
    answers once the example waits)."""
    handler = Collector("handler")
    ns = namespace(bus=bus, handler=handler)
    tts = asyncio.create_task(
        when_waiting(bus, lambda: bus.emit(EventType.TTS_COMPLETED, {"id": "say-1"}))
    )
    await run_block(block("Migration from Old Event Bus"), ns)
    await tts
    assert ns["result"].type is EventType.TTS_COMPLETED
    assert ns["result"].data["id"] == "say-1"
    (wake,) = await handler.wait(1)
    assert wake.type is EventType.WAKE_WORD_DETECTED
    assert wake.data["confidence"] == 0.9

    last = sentinel(bus, EventType.MODEL_LOADED)
    await bus.emit(EventType.MODEL_LOADED, {"model": "llama"})
    await bus.emit(EventType.MODEL_LOADED, {"model": "gemma"})
    await last.wait(2)
    assert [e.type for e in handler.events] == [
        EventType.WAKE_WORD_DETECTED,
        EventType.MODEL_LOADED,
    ]


# --- the guide itself ------------------------------------------------------------------


def test_guide_blocks_run_with_only_the_import_changed() -> None:
    blocks = guide_blocks()
    assert any(SEED_IMPORT in b.source for b in blocks), "the guide no longer imports the seed"
    for b in blocks:
        assert "core.event_bus" not in b.code, f"block {b.index} ({b.key}) still names the seed"
        changed = [
            (old, new)
            for old, new in zip(b.source.splitlines(), b.code.splitlines(), strict=True)
            if old != new
        ]
        assert all(new == old.replace(SEED_IMPORT, OUR_IMPORT) for old, new in changed)
        compile_block(b)  # valid Python (top-level await allowed)


def _blocks_run_by_tests() -> dict[str, list[str]]:
    """test name -> the guide blocks it runs (the literal keys of its `block(...)` calls)."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    found: dict[str, list[str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if not node.name.startswith("test_"):
            continue
        keys = [
            call.args[0].value
            for call in ast.walk(node)
            if isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == "block"
            and call.args
            and isinstance(call.args[0], ast.Constant)
        ]
        if keys:
            args = {a.arg for a in node.args.args}
            assert args & TRANSPORT_FIXTURES, f"{node.name} does not run on both transports"
            found[node.name] = keys
    return found


def test_every_guide_block_is_covered() -> None:
    """A new example in the guide fails here until a test runs it."""
    blocks = guide_blocks()
    assert len({b.key for b in blocks}) == len(blocks)
    by_test = _blocks_run_by_tests()
    covered = {key for keys in by_test.values() for key in keys}
    known = {b.key for b in blocks}
    assert covered <= known, f"tests name blocks the guide lacks: {sorted(covered - known)}"
    missing = [f"#{b.index} {b.key!r} (line {b.line})" for b in blocks if b.key not in covered]
    assert not missing, "guide blocks run by no test:\n  " + "\n  ".join(missing)
    tests = {name for name in globals() if name.startswith("test_")}
    assert set(by_test) <= tests
