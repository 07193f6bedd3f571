"""`EventType` (the seed's 28 event kinds, the Hermes commands and dialogue messages,
the Hermes audio, CANCELLED) and `Event` (one occurrence on the bus)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from difflib import get_close_matches
from enum import Enum
from typing import Any

from ..errors import UnknownEventTypeError


class EventType(str, Enum):
    """The event kinds of a voice assistant; values are the lower-case names."""

    # Audio
    AUDIO_STARTED = "audio_started"
    AUDIO_STOPPED = "audio_stopped"
    WAKE_WORD_DETECTED = "wake_word_detected"
    SPEECH_DETECTED = "speech_detected"
    SPEECH_ENDED = "speech_ended"
    SILENCE_DETECTED = "silence_detected"
    AUDIO_PLAYBACK_STARTED = "audio_playback_started"
    AUDIO_PLAYBACK_PROGRESS = "audio_playback_progress"
    AUDIO_PLAYBACK_ENDED = "audio_playback_ended"
    # AI / decisions
    CONVERSATION_UPDATED = "conversation_updated"
    DECISION_MADE = "decision_made"
    RESPONSE_GENERATING = "response_generating"
    RESPONSE_GENERATED = "response_generated"
    EMOTION_CHANGED = "emotion_changed"
    # Model management
    MODEL_DOWNLOAD_STARTED = "model_download_started"
    MODEL_DOWNLOAD_PROGRESS = "model_download_progress"
    MODEL_DOWNLOAD_COMPLETED = "model_download_completed"
    MODEL_DOWNLOAD_FAILED = "model_download_failed"
    MODEL_LOADED = "model_loaded"
    MODEL_UNLOADED = "model_unloaded"
    PROVIDER_SWITCHED = "provider_switched"
    # TTS
    TTS_STARTED = "tts_started"
    PHONEME_EVENT = "phoneme_event"
    TTS_COMPLETED = "tts_completed"
    # System
    SYSTEM_STARTED = "system_started"
    SYSTEM_STOPPED = "system_stopped"
    ERROR_OCCURRED = "error_occurred"
    HEALTH_CHECK = "health_check"
    # Hermes commands and dialogue messages (commands ask for something: TTS_SAY,
    # ASR_*_LISTENING, HOTWORD_TOGGLE_*, SESSION_START/CONTINUE/END, NLU_QUERY)
    TTS_SAY = "tts_say"
    ASR_START_LISTENING = "asr_start_listening"
    ASR_STOP_LISTENING = "asr_stop_listening"
    HOTWORD_TOGGLE_ON = "hotword_toggle_on"
    HOTWORD_TOGGLE_OFF = "hotword_toggle_off"
    SESSION_START = "session_start"
    SESSION_STARTED = "session_started"
    SESSION_CONTINUE = "session_continue"
    SESSION_END = "session_end"
    SESSION_ENDED = "session_ended"
    NLU_QUERY = "nlu_query"
    INTENT_RECOGNIZED = "intent_recognized"
    INTENT_NOT_RECOGNIZED = "intent_not_recognized"
    # Hermes audio: binary payloads (raw WAV bytes in ``data["wav"]``, never JSON)
    AUDIO_FRAME = "audio_frame"
    PLAY_BYTES = "play_bytes"
    # Time
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True, eq=False)
class Event:
    """One event: its kind, its payload (wire keys) and its envelope.

    `data` holds the payload as it travels (camelCase keys, defaults for keys the
    wire format requires); `metadata` may be changed by middleware. `parent_id` is
    the id of the event being handled when this one was emitted (None otherwise).

    Every handler gets an `Event` of its own (`copy`, made after the pre
    middleware ran): whatever a handler changes in it, its `data` and `metadata`
    included, no other handler, bus, `wait_for` or the history sees.
    """

    type: Enum
    data: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    source: str | None = None
    timestamp: float = field(default_factory=time.time)
    correlation_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    topic: str = ""
    parent_id: str | None = None
    """The id of the event whose handler emitted this one (causality; see `codec`)."""

    def copy(self) -> Event:
        """An equal event whose `data` and `metadata` share no container with this one."""
        return Event(
            self.type,
            fresh(self.data),
            self.id,
            self.source,
            self.timestamp,
            self.correlation_id,
            fresh(self.metadata) if self.metadata else {},
            self.topic,
            self.parent_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view of the event."""
        return {
            "id": self.id,
            "type": self.type.value,
            "topic": self.topic,
            "source": self.source,
            "timestamp": self.timestamp,
            "correlation_id": self.correlation_id,
            "parent_id": self.parent_id,
            "metadata": self.metadata,
            "data": self.data,
        }

    def __repr__(self) -> str:
        return (
            f"Event(type={self.type.value!r}, id={self.id!r}, topic={self.topic!r}, "
            f"correlation_id={self.correlation_id!r}, data={self.data!r})"
        )


_CONTAINERS = frozenset({dict, list, set, tuple, bytearray})


def fresh(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of `data` sharing no container with it (values that cannot change,
    such as strings and numbers, are shared): a plain dict copy when it is flat."""
    copied = data.copy()
    if not _CONTAINERS.isdisjoint(map(type, copied.values())):
        for key, value in copied.items():
            if type(value) in _CONTAINERS:
                copied[key] = _deep(value)
    return copied


def _deep(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {k: _deep(v) for k, v in value.items()}
    if kind is list:
        return [_deep(v) for v in value]
    if kind is tuple:
        return tuple(_deep(v) for v in value)
    if kind is set or kind is bytearray:
        return kind(value)
    return value


def event_type_named(name: str, known: Iterable[Enum] = EventType) -> Enum:
    """The event type of `known` (default: every `EventType`) called `name`: its value
    (``speech_detected``) or its name (``SPEECH_DETECTED``), in any case, with ``-``
    for ``_``. `UnknownEventTypeError` otherwise, with up to three `suggestions`."""
    types: dict[str, Enum] = {}
    for event_type in known:
        types.setdefault(str(event_type.value).lower(), event_type)
        types.setdefault(event_type.name.lower(), event_type)
    key = name.strip().lower().replace("-", "_")
    if key in types:
        return types[key]
    values = sorted({str(t.value) for t in types.values()})
    close = get_close_matches(key, values, n=3, cutoff=0.6)
    close += [v for v in values if key and key in v and v not in close][: 3 - len(close)]
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise UnknownEventTypeError(f"unknown event type {name!r}{hint}", close)
