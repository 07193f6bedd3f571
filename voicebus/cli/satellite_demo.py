"""The demo pipeline across satellites: wake word and playback on each site's own
broker, STT, LLM and TTS on the central one, linked by Mosquitto bridges made by
``voicebus satellite-config`` (README, "Satellites").

```
site broker                      bridge              central broker
wakeword-<site>  PLAY_BYTES chime ─► playback-<site>   (local: works with the link down)
wakeword-<site>  WAKE_WORD_DETECTED ──── out ────► stt  SPEECH_DETECTED
                                                   llm  RESPONSE_GENERATING, RESPONSE_GENERATED
playback-<site> ◄── in: hermes/audioServer/<site>/playBytes/<id> ── tts  TTS_STARTED, PLAY_BYTES
playback-<site>  AUDIO_PLAYBACK_STARTED, AUDIO_PLAYBACK_ENDED ── out ─► tts  TTS_COMPLETED
```

The answer goes to the site's speaker as Hermes ``playBytes`` on a topic with the
site in it, so only that site's bridge carries it. Every service is a
`voicebus.cli.demo.Service` (its own `EventBus`); one correlation id per
utterance, ``demo-<run id>-<site>-<n>``.
"""

from __future__ import annotations

import io
import wave
from typing import Unpack

from ..config import BusSettings
from ..wire.events import Event, EventType
from .demo import WAKEWORD, Engines, Service, Tts

E = EventType

__all__ = ["CHIME", "CentralTts", "SitePlayer", "SiteWakeWord", "wav"]


def wav(seconds: float) -> bytes:
    """A WAV file of `seconds` of silence (16 kHz, 16-bit mono), standing in for speech."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(b"\0\0" * int(16_000 * seconds))
    return buffer.getvalue()


CHIME = wav(0.01)
"""What a satellite plays when it hears its wake word."""


def _is_answer(event: Event) -> bool:
    return str(event.data.get("id", "")).startswith("say-")


class CentralTts(Tts):
    """The demo's TTS for satellites: the speech goes to the site's speaker as
    ``PLAY_BYTES`` (``hermes/audioServer/<site>/playBytes/say-<correlation id>``);
    TTS_COMPLETED once that site reports ``playFinished`` for it (a satellite's own
    chimes come over the bridge too: they are not this service's to complete)."""

    async def on_response(self, event: Event) -> None:
        text = str(event.data.get("response", ""))
        await self.engines.synthesize(text)
        say_id = f"say-{event.correlation_id}"
        await self.emit(E.TTS_STARTED, event, id=say_id, text=text)
        site = event.data.get("siteId", "default")
        speech = wav(0.02 * len(text.split()))
        await self.bus.emit(E.PLAY_BYTES, {"siteId": site, "requestId": say_id, "wav": speech})

    async def on_played(self, event: Event) -> None:
        if _is_answer(event):
            await super().on_played(event)


class SitePlayer(Service):
    """A satellite's audio output: plays every ``PLAY_BYTES`` its broker delivers (the
    bridge brings only this site's), then AUDIO_PLAYBACK_STARTED / ENDED."""

    def __init__(
        self, site: str, url: str, run_id: str, engines: Engines, **settings: Unpack[BusSettings]
    ) -> None:
        super().__init__(f"playback-{site}", url, run_id, engines, **settings)
        self.on(E.PLAY_BYTES, self.on_play_bytes)

    async def on_play_bytes(self, event: Event) -> None:
        request_id = event.data["requestId"]
        await self.emit(E.AUDIO_PLAYBACK_STARTED, event, id=request_id)
        await self.engines.pause(len(event.data["wav"]) / 32_000)  # 16 kHz, 16-bit
        await self.emit(E.AUDIO_PLAYBACK_ENDED, event, id=request_id)


class SiteWakeWord(Service):
    """A satellite's wake word service: on a detection, a chime on its own speaker
    (local) and WAKE_WORD_DETECTED for the central STT."""

    def __init__(
        self,
        site: str,
        url: str,
        run_id: str,
        engines: Engines,
        heard: dict[str, str],
        **settings: Unpack[BusSettings],
    ) -> None:
        super().__init__(f"wakeword-{site}", url, run_id, engines, **settings)
        self.site = site
        self.heard = heard
        self.count = 0

    async def utterance(
        self, said: str, timeout: float, answer_timeout: float | None = None
    ) -> tuple[Event, Event | None, Event | None]:
        """Detect the wake word, the user says `said`: the WAKE_WORD_DETECTED sent, then
        this site's playFinished of the chime (None: not within `timeout`) and of the
        answer (None: not within `answer_timeout`, default `timeout`, after the chime)."""
        self.count += 1
        cid = f"demo-{self.run_id}-{self.site}-{self.count}"
        self.heard[cid] = said
        chimed = self.bus.wait_for(
            E.AUDIO_PLAYBACK_ENDED, timeout, cid, lambda e: not _is_answer(e)
        )
        answered = self.bus.wait_for(
            E.AUDIO_PLAYBACK_ENDED,
            timeout if answer_timeout is None else answer_timeout,
            cid,
            _is_answer,
        )
        try:
            await self.bus.emit(
                E.PLAY_BYTES,
                {"siteId": self.site, "requestId": f"chime-{cid}", "wav": CHIME},
                correlation_id=cid,
            )
            data = {"wakewordId": WAKEWORD, "siteId": self.site, "sessionId": cid}
            wake = await self.bus.emit(E.WAKE_WORD_DETECTED, data, correlation_id=cid)
            return wake, await chimed, await answered
        finally:
            chimed.close()
            answered.close()
