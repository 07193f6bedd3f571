"""`EventType` (the seed's 28 event kinds, the Hermes commands and dialogue messages,
the Hermes audio, CANCELLED) and `Event` (one occurrence on the bus)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from difflib import get_close_matches
from enum import Enum
from typing import Any, NoReturn

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

    A received event is **read-only** (`ReadOnlyEvent`): its `data` (nested
    dicts and lists too) from the start, its `metadata` once the pre middleware
    ran, its attributes always. Every handler, ``filter_func``, post middleware and
    `wait_for` of a bus sees that one event, so no handler can change what another
    sees; a change raises ``TypeError`` (``AttributeError`` for an attribute).
    Change a copy instead: `copy` (or ``dict(event.data)``). The event `emit`
    returns is the sender's own and stays changeable (receivers got a copy).
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
        """An equal, changeable event: plain dicts and lists all the way down, sharing
        no container with this one."""
        return Event(
            self.type,
            thaw(self.data),
            self.id,
            self.source,
            self.timestamp,
            self.correlation_id,
            thaw(self.metadata),
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


def _read_only(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(
        "a received event is read-only (every handler sees the same one): "
        "change a copy (`event.copy()`, `dict(event.data)`)"
    )


class FrozenDict(dict[str, Any]):
    """A dict that refuses changes: a received event's `data` and `metadata`."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[Any, ...]:  # copy, deepcopy, pickle: the same again
        return (FrozenDict, (dict(self),))


class FrozenList(list[Any]):
    """A list that refuses changes: a JSON array inside a received event."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))


FROZEN_EMPTY = FrozenDict()
"""The `metadata` of a received event that came without any."""

_CONTAINERS = frozenset({dict, list, FrozenDict, FrozenList, tuple, set})


def freeze(data: dict[str, Any]) -> FrozenDict:
    """`data` as a `FrozenDict`, nested dicts and lists frozen too (sharing nothing
    changeable with `data`)."""
    if _CONTAINERS.isdisjoint(map(type, data.values())):
        return FrozenDict(data)
    return FrozenDict({k: _frozen(v) for k, v in data.items()})


def _frozen(value: Any) -> Any:
    kind = type(value)
    if kind is dict or kind is FrozenDict:
        return FrozenDict({k: _frozen(v) for k, v in value.items()})
    if kind is list or kind is FrozenList:
        return FrozenList([_frozen(v) for v in value])
    if kind is tuple:
        return tuple(_frozen(v) for v in value)
    if kind is set:
        return frozenset(value)
    return value


def thaw(data: dict[str, Any]) -> dict[str, Any]:
    """A changeable deep copy of `data`: plain dicts and lists all the way down."""
    if _CONTAINERS.isdisjoint(map(type, data.values())):
        return dict(data)
    return {k: _thawed(v) for k, v in data.items()}


def _thawed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_thawed(v) for v in value]
    if type(value) is tuple:
        return tuple(_thawed(v) for v in value)
    if type(value) is set:
        return set(value)
    return value


class ReadOnlyEvent(Event):
    """A received `Event`: its attributes cannot be set (see `Event`); `seal` makes one."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        try:
            object.__getattribute__(self, name)
        except AttributeError:  # not set yet: a copy (`copy.copy`, pickle) being built
            object.__setattr__(self, name, value)
            return
        raise AttributeError(
            f"a received event is read-only (every handler sees the same one): "
            f"cannot set {name!r}; change a copy (`event.copy()`)"
        )

    __delattr__ = _read_only


def seal(event: Event, metadata: bool) -> None:
    """Make a received `event` read-only, its `data` frozen, and its `metadata` too
    unless not `metadata` (it stays changeable for the pre middleware: then
    `seal_metadata` once they ran)."""
    data = event.data
    if type(data) is not FrozenDict:
        event.data = freeze(data)
    if metadata:
        event.metadata = freeze(event.metadata) if event.metadata else FROZEN_EMPTY
    event.__class__ = ReadOnlyEvent


def seal_metadata(event: Event) -> None:
    """Freeze the `metadata` of a sealed event (once the pre middleware ran)."""
    metadata = event.metadata
    if type(metadata) is not FrozenDict:
        object.__setattr__(event, "metadata", freeze(metadata) if metadata else FROZEN_EMPTY)


def unseal_metadata(event: Event) -> None:
    """Make the `metadata` of a sealed event changeable again (for the pre middleware)."""
    if type(event.metadata) is FrozenDict:
        object.__setattr__(event, "metadata", thaw(event.metadata))


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
