"""`EventType` (the seed's 28 event kinds) and `Event` (one occurrence on the bus)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


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

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True, eq=False)
class Event:
    """One event: its kind, its payload (wire keys) and its envelope.

    `data` holds the payload as it travels (camelCase keys, defaults for keys the
    wire format requires); `metadata` may be changed by middleware.
    """

    type: Enum
    data: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    source: str | None = None
    timestamp: float = field(default_factory=time.time)
    correlation_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    topic: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view of the event."""
        return {
            "id": self.id,
            "type": self.type.value,
            "topic": self.topic,
            "source": self.source,
            "timestamp": self.timestamp,
            "correlation_id": self.correlation_id,
            "metadata": self.metadata,
            "data": self.data,
        }

    def __repr__(self) -> str:
        return (
            f"Event(type={self.type.value!r}, id={self.id!r}, topic={self.topic!r}, "
            f"correlation_id={self.correlation_id!r}, data={self.data!r})"
        )


def event_type_named(name: str) -> Enum:
    """`EventType` by value (``speech_detected``) or name (``SPEECH_DETECTED``);
    an unknown name gets a "did you mean" suggestion."""
    try:
        return EventType(name)
    except ValueError:
        pass
    try:
        return EventType[name.upper()]
    except KeyError:
        from difflib import get_close_matches

        from ..errors import UnknownEventTypeError

        close = get_close_matches(name.lower(), [e.value for e in EventType], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownEventTypeError(f"unknown event type {name!r}{hint}") from None
