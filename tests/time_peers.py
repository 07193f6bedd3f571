"""Voice-pipeline services for tests/test_time_processes.py, one per process.

    python -m tests.time_peers ROLE URL [CORRELATION_ID]

Each prints JSON lines on stdout: ``{"ready": true}`` once subscribed, what it
saw, and on SIGTERM ``{"stats": <get_stats()["metrics"]>, "dead_letters": n}``
before it exits. Roles: ``relay`` (SPEECH_DETECTED -> RESPONSE_GENERATED, no
correlation handling of its own), ``observe`` (prints RESPONSE_GENERATED),
``stt`` (SILENCE_DETECTED -> SPEECH_DETECTED), ``llm`` (SPEECH_DETECTED -> 5 s ->
RESPONSE_GENERATED), ``tts`` (RESPONSE_GENERATED -> TTS_COMPLETED), ``requester``
(requests TTS_COMPLETED for a SILENCE_DETECTED with CORRELATION_ID).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

from voicebus import Event, EventBus, EventType, RequestCancelled

E = EventType


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def serve(role: str, url: str, args: list[str]) -> None:
    bus = EventBus(url, client_id=f"time-{role}")

    async def relay(event: Event) -> None:
        await bus.emit(E.RESPONSE_GENERATED, {"response": "relayed"})

    def observe(event: Event) -> None:
        say(seen=event.type.value, correlation_id=event.correlation_id, parent_id=event.parent_id)

    async def stt(event: Event) -> None:
        await bus.emit(E.SPEECH_DETECTED, {"text": "what time is it"})

    async def llm(event: Event) -> None:
        say(started=event.correlation_id)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            say(cancelled=event.correlation_id)
            raise
        await bus.emit(E.RESPONSE_GENERATED, {"response": "it is late"})

    async def tts(event: Event) -> None:
        say(seen=event.type.value, correlation_id=event.correlation_id)
        await bus.emit(E.TTS_COMPLETED, {})

    handlers = {
        "relay": (E.SPEECH_DETECTED, relay),
        "observe": (E.RESPONSE_GENERATED, observe),
        "stt": (E.SILENCE_DETECTED, stt),
        "llm": (E.SPEECH_DETECTED, llm),
        "tts": (E.RESPONSE_GENERATED, tts),
    }
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with bus:
        if role in handlers:
            bus.subscribe(*handlers[role])
        await bus.ready()
        if role == "requester":
            waiting = bus.request(
                E.SILENCE_DETECTED, {}, E.TTS_COMPLETED, timeout=20, correlation_id=args[0]
            )
            say(ready=True)
            try:
                reply = await waiting
                say(reply=None if reply is None else reply.correlation_id)
            except RequestCancelled as exc:
                say(request_cancelled=exc.correlation_id, reason=exc.reason)
        else:
            say(ready=True)
        await stop.wait()
        say(stats=bus.get_stats()["metrics"], dead_letters=len(bus.get_dead_letter_queue()))


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[3:]))
