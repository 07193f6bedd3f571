"""Payload models, one per event type: the JSON that travels on the topic.

Python attribute names are snake_case; the wire keys are camelCase (Hermes style).
Every model keeps extra keys (seed code sends ``{"text": ..., "confidence": 0.95}``)
and has defaults for what the wire format requires, so ``{"model": "llama"}`` is a
valid MODEL_LOADED payload. Fields left as ``None`` never appear on the wire.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

from .binary import WavBytes


class Payload(BaseModel):
    """Base of every payload model: camelCase wire keys, extra keys kept."""

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        alias_generator=to_camel,
    )

    site_id: str = "default"
    session_id: str | None = None


# --- audio input -----------------------------------------------------------------


class AudioCapture(Payload):
    """Audio capture started or stopped on a site (AUDIO_STARTED / AUDIO_STOPPED)."""


class HotwordDetected(Payload):
    """A wake word was detected (Hermes ``HotwordDetected``).

    ``wakewordId`` travels in the topic (as in Hermes) and in the payload too (Hermes
    peers ignore the extra key; Home Assistant templates see only the payload); when
    they differ, the topic wins. ``modelId`` and ``wakewordId`` default to each other,
    then to ``"default"``. An explicit empty ``wakewordId`` is kept (and refused as a
    topic parameter), never silently replaced.
    """

    wakeword_id: str | None = None
    model_id: str = ""
    model_version: str = ""
    model_type: str = "personal"
    current_sensitivity: float = 1.0
    send_audio_captured: bool | None = None
    lang: str | None = None

    @model_validator(mode="after")
    def _default_ids(self) -> HotwordDetected:
        if not self.model_id:
            self.model_id = self.wakeword_id or "default"
        if self.wakeword_id is None:
            self.wakeword_id = self.model_id
        return self


class TextCaptured(Payload):
    """A transcript (Hermes ``AsrTextCaptured``): ``likelihood`` takes ``confidence``."""

    text: str
    likelihood: float = 1.0
    seconds: float = 0.0
    wakeword_id: str | None = None
    lang: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _likelihood_from_confidence(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and "likelihood" not in data
            and isinstance(data.get("confidence"), int | float)
        ):
            return {**data, "likelihood": data["confidence"]}
        return data


class VoiceActivity(Payload):
    """Voice activity ended (Snips ``vadDown``)."""

    signal_ms: int = 0


class RecordingFinished(Payload):
    """The ASR stopped recording: silence after speech (``AsrRecordingFinished``)."""


class Playback(Payload):
    """Audio playback started or progressed on a site."""

    id: str | None = None
    position: float | None = None


class PlayFinished(Payload):
    """Audio playback finished (Hermes ``AudioPlayFinished``; siteId in the topic)."""

    id: str | None = None


# --- dialogue ----------------------------------------------------------------------


class Dialogue(Payload):
    """Conversation state and decisions of the dialogue manager."""


class ResponseGenerating(Payload):
    """The LLM started generating a response."""

    prompt: str | None = None


class ResponseGenerated(Payload):
    """The LLM produced a response."""

    response: str
    prompt: str | None = None


class EmotionChanged(Payload):
    """The assistant's emotional state changed."""

    emotion: str | None = None


# --- models and providers ----------------------------------------------------------


class ModelPayload(Payload):
    """A model lifecycle step (download, load, unload)."""

    model: str
    progress: float | None = None


class ModelDownloadFailed(Payload):
    """A model download failed (Rhasspy error shape plus ``model``)."""

    model: str | None = None
    error: str = ""
    context: str | None = None


class ProviderSwitched(Payload):
    """The active provider (LLM, STT, TTS backend) changed."""

    provider: str | None = None


# --- text to speech ----------------------------------------------------------------


class TtsStarted(Payload):
    """Speech synthesis started."""

    id: str | None = None
    text: str | None = None


class Phoneme(Payload):
    """A phoneme or viseme was produced (lip sync)."""

    phoneme: str | None = None


class TtsFinished(Payload):
    """Speech finished playing (Hermes ``TtsSayFinished``)."""

    id: str | None = None


# --- system ------------------------------------------------------------------------


class SystemPayload(Payload):
    """The system started, stopped, or reports health."""

    status: str | None = None


class Cancelled(Payload):
    """An utterance was cancelled (barge-in, lost arbitration): its correlation id is
    in the envelope; every bus stops its work for it (`EventBus.cancel`)."""

    reason: str = "cancelled"


class ErrorPayload(Payload):
    """An error (Rhasspy error shape plus the failing ``handler``).

    ``component`` travels in the topic ``voicebus/error/{component}``.
    """

    error: str
    context: str | None = None
    handler: str | None = None
    component: str = "bus"


# --- Hermes audio: binary payloads (see wire/binary.py) ------------------------------


class BinaryPayload(Payload):
    """Base of the binary payloads: topic parameters and the bytes, nothing else.

    The bytes are the whole payload, so no other key can travel: extra keys and a
    ``sessionId`` are refused (the correlation id travels in Correlation Data).
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_session(self) -> BinaryPayload:
        if self.session_id is not None:
            raise ValueError(
                "a binary payload has no room for sessionId; pass correlation_id= to emit "
                "(it travels in the MQTT 5 Correlation Data)"
            )
        return self


class AudioFrame(BinaryPayload):
    """A chunk of microphone audio as a WAV file (Hermes ``AudioFrame``, binary)."""

    wav: WavBytes


class PlayBytes(BinaryPayload):
    """A WAV file for a site to play (Hermes ``AudioPlayBytes``, binary)."""

    request_id: str
    wav: WavBytes
