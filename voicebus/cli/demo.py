"""The seed guide's pipeline as separate services on one bus, with simulated engines.

Wake word -> STT -> LLM -> TTS -> playback, each service on its own `EventBus`
(its own MQTT connection on ``mqtt://``), one correlation id per utterance:

```
wakeword  WAKE_WORD_DETECTED ─► stt       SPEECH_DETECTED
       ─► llm  RESPONSE_GENERATING, RESPONSE_GENERATED
       ─► tts  TTS_STARTED ─► playback AUDIO_PLAYBACK_STARTED, AUDIO_PLAYBACK_ENDED
       ─► tts  TTS_COMPLETED (Hermes sayFinished: the speech finished playing)
```

The wake-word service sends each utterance with `EventBus.request` and waits
for TTS_COMPLETED with the same correlation id; an observer bus records when
each event arrived, which gives the latency of every hop.

```python
runs = await run_demo("memory://", utterances=3)
for hop in runs[0].hops:
    print(hop.event.type.value, hop.service, f"{hop.hop_ms:.1f} ms")
```
"""

from __future__ import annotations

import asyncio
import itertools
import re
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Unpack

from ..bus import EventBus
from ..config import BusSettings
from ..errors import DemoError
from ..wire.events import Event, EventType
from .support import no_status

E = EventType

PIPELINE: tuple[EventType, ...] = (
    E.WAKE_WORD_DETECTED,
    E.SPEECH_DETECTED,
    E.RESPONSE_GENERATING,
    E.RESPONSE_GENERATED,
    E.TTS_STARTED,
    E.AUDIO_PLAYBACK_STARTED,
    E.AUDIO_PLAYBACK_ENDED,
    E.TTS_COMPLETED,
)
"""The events of one utterance, in the order the services emit them."""

SERVICES = ("wakeword", "stt", "llm", "tts", "playback")

SCRIPT: tuple[tuple[str, str], ...] = (
    ("what's the weather like tomorrow", "Tomorrow will be sunny, with a high of 21 degrees."),
    ("turn on the kitchen light", "Turning on the kitchen light."),
    ("set a timer for ten minutes", "Timer set for ten minutes, starting now."),
    ("tell me a joke", "Why did the broker retain the message? It had a feeling you'd be back."),
)
"""What the simulated user says and what the simulated LLM answers."""

WAKEWORD = "hey_voicebus"
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
"""A run id: part of the client ids and of the correlation ids ``demo-<run id>-<n>``."""


@dataclass
class Engines:
    """Simulated engine latencies in seconds; `scale` multiplies them all (0: none)."""

    scale: float = 1.0
    stt_base: float = 0.040
    stt_per_word: float = 0.004
    llm_first_token: float = 0.012
    llm_per_char: float = 0.0012
    tts_base: float = 0.020
    tts_per_char: float = 0.0004
    playback_per_word: float = 0.008
    answers: dict[str, str] = field(default_factory=lambda: dict(SCRIPT))

    async def pause(self, seconds: float) -> None:
        if self.scale > 0:
            await asyncio.sleep(seconds * self.scale)

    async def transcribe(self, heard: str) -> str:
        await self.pause(self.stt_base + self.stt_per_word * len(heard.split()))
        return heard

    async def think(self, prompt: str) -> str:
        await self.pause(self.llm_first_token)
        answer = self.answers.get(prompt, f"You said: {prompt}.")
        await self.pause(self.llm_per_char * len(answer))
        return answer

    async def synthesize(self, text: str) -> None:
        await self.pause(self.tts_base + self.tts_per_char * len(text))

    async def play(self, text: str) -> None:
        await self.pause(self.playback_per_word * len(text.split()))


@dataclass
class Hop:
    """One event of an utterance as the observer saw it."""

    event: Event
    service: str
    received: float
    previous: Hop | None = None

    @property
    def hop_ms(self) -> float:
        """Time since the previous event of the utterance was sent (engine + bus)."""
        if self.previous is None:
            return 0.0
        return (self.event.timestamp - self.previous.event.timestamp) * 1000

    @property
    def bus_ms(self) -> float:
        """Time from `emit` to delivery at the observer (the bus's own share)."""
        return max(0.0, (self.received - self.event.timestamp) * 1000)

    @property
    def label(self) -> str:
        return f"{self.previous.service} -> {self.service}" if self.previous else self.service


@dataclass
class Utterance:
    """The timeline of one utterance."""

    number: int
    correlation_id: str
    said: str
    answer: str = ""
    hops: list[Hop] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        if not self.hops:
            return 0.0
        return (self.hops[-1].received - self.hops[0].event.timestamp) * 1000

    def as_dict(self) -> dict[str, Any]:
        start = self.hops[0].event.timestamp if self.hops else 0.0
        return {
            "number": self.number,
            "correlation_id": self.correlation_id,
            "said": self.said,
            "answer": self.answer,
            "total_ms": round(self.total_ms, 3),
            "events": [
                {
                    "type": h.event.type.value,
                    "topic": h.event.topic,
                    "service": h.service,
                    "hop": h.label,
                    "offset_ms": round((h.event.timestamp - start) * 1000, 3),
                    "hop_ms": round(h.hop_ms, 3),
                    "bus_ms": round(h.bus_ms, 3),
                }
                for h in self.hops
            ],
        }


class Service:
    """A pipeline stage on a bus of its own; handlers only see this run's utterances."""

    def __init__(
        self, name: str, url: str, run_id: str, engines: Engines, **settings: Unpack[BusSettings]
    ) -> None:
        self.name = name
        self.run_id = run_id
        self.engines = engines
        settings.setdefault("component", name)
        self.bus = EventBus(
            url, client_id=f"demo-{name}-{run_id}", config=no_status(url), **settings
        )

    def mine(self, event: Event) -> bool:
        return (event.correlation_id or "").startswith(f"demo-{self.run_id}-")

    def on(self, event_type: EventType, handler: Any) -> None:
        self.bus.subscribe(event_type, handler, filter_func=self.mine)

    async def emit(self, event_type: EventType, cause: Event, **data: Any) -> Event:
        data.setdefault("sessionId", cause.correlation_id)
        data.setdefault("siteId", cause.data.get("siteId", "default"))
        return await self.bus.emit(event_type, data, correlation_id=cause.correlation_id)


class Stt(Service):
    def __init__(
        self,
        url: str,
        run_id: str,
        engines: Engines,
        heard: dict[str, str],
        **settings: Unpack[BusSettings],
    ) -> None:
        super().__init__("stt", url, run_id, engines, **settings)
        self.heard = heard
        self.on(E.WAKE_WORD_DETECTED, self.on_wake_word)

    async def on_wake_word(self, event: Event) -> None:
        text = await self.engines.transcribe(self.heard.get(event.correlation_id or "", ""))
        await self.emit(E.SPEECH_DETECTED, event, text=text, confidence=0.93)


class Llm(Service):
    def __init__(
        self, url: str, run_id: str, engines: Engines, **settings: Unpack[BusSettings]
    ) -> None:
        super().__init__("llm", url, run_id, engines, **settings)
        self.on(E.SPEECH_DETECTED, self.on_speech)

    async def on_speech(self, event: Event) -> None:
        prompt = str(event.data.get("text", ""))
        await self.emit(E.RESPONSE_GENERATING, event, prompt=prompt)
        answer = await self.engines.think(prompt)
        await self.emit(E.RESPONSE_GENERATED, event, response=answer, prompt=prompt)


class Tts(Service):
    def __init__(
        self, url: str, run_id: str, engines: Engines, **settings: Unpack[BusSettings]
    ) -> None:
        super().__init__("tts", url, run_id, engines, **settings)
        self.on(E.RESPONSE_GENERATED, self.on_response)
        self.on(E.AUDIO_PLAYBACK_ENDED, self.on_played)

    async def on_response(self, event: Event) -> None:
        text = str(event.data.get("response", ""))
        await self.engines.synthesize(text)
        await self.emit(E.TTS_STARTED, event, id=f"say-{event.correlation_id}", text=text)

    async def on_played(self, event: Event) -> None:
        await self.emit(E.TTS_COMPLETED, event, id=event.data.get("id", ""))


class Player(Service):
    def __init__(self, url: str, run_id: str, engines: Engines) -> None:
        super().__init__("playback", url, run_id, engines)
        self.on(E.TTS_STARTED, self.on_say)

    async def on_say(self, event: Event) -> None:
        say_id = event.data.get("id", "")
        await self.emit(E.AUDIO_PLAYBACK_STARTED, event, id=say_id)
        await self.engines.play(str(event.data.get("text", "")))
        await self.emit(E.AUDIO_PLAYBACK_ENDED, event, id=say_id)


class Observer:
    """Records when each event of this run arrives, per correlation id."""

    def __init__(self, url: str, run_id: str) -> None:
        self.prefix = f"demo-{run_id}-"
        self.services = {f"demo-{name}-{run_id}": name for name in SERVICES}
        self.bus = EventBus(
            url, client_id=f"demo-observer-{run_id}", config=no_status(url), component="observer"
        )
        self.seen: dict[str, list[Hop]] = {}
        self._complete: dict[str, asyncio.Event] = {}
        for event_type in PIPELINE:
            self.bus.subscribe(event_type, self.record, filter_func=self.mine)

    def mine(self, event: Event) -> bool:
        return (event.correlation_id or "").startswith(self.prefix)

    def expect(self, correlation_id: str) -> asyncio.Event:
        self.seen[correlation_id] = []
        done = self._complete[correlation_id] = asyncio.Event()
        return done

    def record(self, event: Event) -> None:
        received = time.time()
        cid = event.correlation_id or ""
        hops = self.seen.setdefault(cid, [])
        service = self.services.get(event.source or "", event.source or "?")
        hops.append(Hop(event, service, received))
        if {h.event.type for h in hops} >= set(PIPELINE) and cid in self._complete:
            self._complete[cid].set()

    def timeline(self, correlation_id: str) -> list[Hop]:
        hops = sorted(self.seen.get(correlation_id, []), key=lambda h: h.event.timestamp)
        for previous, hop in itertools.pairwise(hops):
            hop.previous = previous
        return hops


class Demo:
    """The five services and the observer on `url`; use as ``async with``."""

    def __init__(
        self,
        url: str | None = None,
        engines: Engines | None = None,
        timeout: float = 10.0,
        run_id: str | None = None,
    ) -> None:
        if run_id is not None and not RUN_ID.fullmatch(run_id):
            raise DemoError(f"run id {run_id!r}: use 1-32 letters, digits, '_' or '-'")
        self.run_id = run_id or uuid.uuid4().hex[:6]
        if url is None or url.rstrip("/") == "memory:":
            url = f"memory://demo-{self.run_id}"
        self.url = url
        self.engines = engines or Engines()
        self.timeout = timeout
        self.heard: dict[str, str] = {}
        self.wakeword = Service("wakeword", url, self.run_id, self.engines)
        self.services: list[Service] = [
            self.wakeword,
            Stt(url, self.run_id, self.engines, self.heard),
            Llm(url, self.run_id, self.engines),
            Tts(url, self.run_id, self.engines),
            Player(url, self.run_id, self.engines),
        ]
        self.observer = Observer(url, self.run_id)
        self._count = 0

    @property
    def buses(self) -> list[EventBus]:
        return [self.observer.bus, *(s.bus for s in self.services)]

    async def start(self) -> None:
        """Connect every service (subscriptions are acknowledged when this returns)."""
        results = await asyncio.gather(*(b.start() for b in self.buses), return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await self.stop()
            raise failure

    async def stop(self) -> None:
        await asyncio.gather(*(b.stop(drain_timeout=1.0) for b in self.buses))

    async def __aenter__(self) -> Demo:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def utterance(self, said: str | None = None) -> Utterance:
        """Say one utterance after the wake word; return its timeline."""
        self._count += 1
        if said is None:
            said = SCRIPT[(self._count - 1) % len(SCRIPT)][0]
        cid = f"demo-{self.run_id}-{self._count}"
        self.heard[cid] = said
        complete = self.observer.expect(cid)
        data = {"wakewordId": WAKEWORD, "siteId": "default", "sessionId": cid}
        reply = await self.wakeword.bus.request(
            E.WAKE_WORD_DETECTED, data, E.TTS_COMPLETED, timeout=self.timeout, correlation_id=cid
        )
        if reply is not None:
            try:
                await asyncio.wait_for(complete.wait(), self.timeout)
            except TimeoutError:
                pass
        hops = self.observer.timeline(cid)
        if reply is None or len(hops) < len(PIPELINE):
            got = {h.event.type for h in hops}
            missing = next((t.value for t in PIPELINE if t not in got), None)
            what = f"no {missing}" if missing else "the reply never reached the wakeword service"
            raise DemoError(
                f"the pipeline stalled: {what} for {cid} within {self.timeout}s "
                f"on {self.wakeword.bus.get_stats()['url']}"
            )
        answer = next(
            str(h.event.data.get("response")) for h in hops if h.event.type == E.RESPONSE_GENERATED
        )
        return Utterance(self._count, cid, said, answer, hops)


async def run_demo(
    url: str | None = None,
    utterances: int = 1,
    engines: Engines | None = None,
    timeout: float = 10.0,
    phrases: Sequence[str] | None = None,
    run_id: str | None = None,
) -> list[Utterance]:
    """Run the pipeline for `utterances` utterances on `url` (memory:// by default);
    their correlation ids are ``demo-<run_id>-<n>`` (`run_id` random by default)."""
    async with Demo(url, engines, timeout, run_id) as demo:
        runs = []
        for i in range(utterances):
            said = phrases[i % len(phrases)] if phrases else None
            runs.append(await demo.utterance(said))
        return runs


def hop_summary(runs: Sequence[Utterance]) -> list[dict[str, Any]]:
    """Median and max latency per hop across utterances."""
    by_label: dict[str, list[float]] = {}
    for run in runs:
        for hop in run.hops[1:]:
            by_label.setdefault(f"{hop.label}: {hop.event.type.value}", []).append(hop.hop_ms)
    rows = []
    for label, values in by_label.items():
        rows.append({"hop": label, "median_ms": statistics.median(values), "max_ms": max(values)})
    return rows
