"""The route table: the single source of truth ``EventType -> topic template -> model``.

Publishing, subscription filters, parsing topics back into parameters and the
published contract in ``topics/`` are all derived from it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import TopicError, UnknownEventTypeError
from . import hermes_models as h
from . import models as m
from .binary import JSON, OCTETS, WAV, WAV_KEY
from .cache import TopicCache
from .events import EventType
from .topics import TopicTemplate

PREFIX = "voicebus/"
"""Every project topic lives under this prefix."""

SYSTEM_PREFIXES = ("voicebus/status/", "voicebus/deadLetter/", "voicebus/site/")
"""Project topics that carry bus bookkeeping, not events: a bus that hears one it has
no route for ignores it (no dead letter). ``voicebus/site/`` holds per-site topics not
every bus knows (``voicebus/site/<siteId>/state`` of the Home Assistant bridge, a
satellite's own routes)."""


@dataclass(frozen=True)
class Route:
    """How one event type travels: topic template, payload model, QoS, Hermes class.

    `topic_only` names wire keys that live only in the topic (Hermes has no such
    key in the payload); they are removed from the payload when publishing and
    restored into `Event.data` from the topic when receiving. `ttl` is the default
    lifetime in seconds of an event of this route (None: it never goes stale; see
    `DEFAULT_TTLS`), overridden by ``emit(..., ttl=)``.

    `body` makes the route binary: that `Event.data` key holds the raw payload
    bytes (of `content_type`), every other key is a topic parameter (see
    `voicebus.wire.binary`). `session` (derived: a JSON route whose model has a
    ``sessionId`` field) means `encode` writes the correlation id into the
    payload's ``sessionId`` unless the data sets one, so a peer that sees only
    topic and payload (Rhasspy, Home Assistant, MQTT 3.1.1) keeps the session.
    """

    event_type: Enum
    template: TopicTemplate
    model: type[m.Payload]
    topic_only: frozenset[str] = frozenset()
    qos: int = 1
    retain: bool = False
    hermes: str | None = None
    description: str = ""
    ttl: float | None = None
    body: str | None = None
    content_type: str = JSON
    session: bool = field(init=False, repr=False, compare=False)
    type_text: str = field(init=False, repr=False, compare=False)
    """The ``type`` user property: the event type's value as text."""
    fixed_topic: str = field(init=False, repr=False, compare=False)
    """The topic of every event, for a template without parameters (else "")."""

    def __post_init__(self) -> None:
        fields = self.model.model_fields
        has_session = "session_id" in fields or "sessionId" in fields or any(
            info.alias == "sessionId" for info in fields.values()
        )
        object.__setattr__(self, "session", self.body is None and has_session)
        object.__setattr__(self, "type_text", str(self.event_type.value))
        fixed = "" if self.template.parameters else self.template.template
        object.__setattr__(self, "fixed_topic", fixed)

    @property
    def binary(self) -> bool:
        """The payload is raw bytes (`body`), never JSON."""
        return self.body is not None

    @property
    def filter(self) -> str:
        """The MQTT subscription filter for every topic of this route."""
        return self.template.filter

    def topic(self, data: Mapping[str, Any]) -> str:
        """The concrete topic for a validated payload (wire keys)."""
        return self.template.format(data)


def _route(
    event_type: EventType,
    template: str,
    model: type[m.Payload],
    *,
    topic_only: tuple[str, ...] = (),
    hermes: str | None = None,
    body: str | None = None,
) -> Route:
    doc = (model.__doc__ or "").strip().splitlines()[0]
    topic = TopicTemplate(template)
    return Route(
        event_type,
        topic,
        model,
        frozenset(topic.parameters if body is not None else topic_only),
        hermes=hermes,
        description=doc,
        ttl=DEFAULT_TTLS.get(event_type),
        body=body,
        content_type=JSON if body is None else WAV,
    )


DEFAULT_TTLS: dict[Enum, float] = {
    # worthless seconds later: a late one would start a session nobody is speaking to
    EventType.WAKE_WORD_DETECTED: 5.0,
    EventType.SPEECH_ENDED: 5.0,  # end-of-speech steers a recording happening now
    EventType.SILENCE_DETECTED: 5.0,
    # live progress: only the latest matters, a stale one shows a wrong state
    EventType.AUDIO_PLAYBACK_PROGRESS: 5.0,
    EventType.PHONEME_EVENT: 2.0,  # lip sync for audio that is playing now
    EventType.MODEL_DOWNLOAD_PROGRESS: 30.0,
    EventType.HEALTH_CHECK: 30.0,  # a health report stands for the moment it was made
    EventType.CANCELLED: 30.0,  # as long as `cancel_window`: nothing to cancel later
    # live audio: a frame is for the recogniser listening now; played audio minutes late
    # (after a reconnect) would speak an answer to a question nobody remembers asking
    EventType.AUDIO_FRAME: 2.0,
    EventType.PLAY_BYTES: 30.0,
}
"""Default `Route.ttl` per event type, in seconds. Not listed, never stale: results
and notifications (a transcript, a response, ``model_loaded``, errors) stay true
and a late one is still worth having; state a peer keeps (start/stop) too."""


def _default_routes() -> list[Route]:
    e = EventType
    audio = "voicebus/audioServer/{siteId}/"
    dialogue = "voicebus/dialogueManager/"
    site = ("siteId",)
    return [
        _route(e.AUDIO_STARTED, audio + "captureStarted", m.AudioCapture, topic_only=site),
        _route(e.AUDIO_STOPPED, audio + "captureStopped", m.AudioCapture, topic_only=site),
        _route(
            e.WAKE_WORD_DETECTED,
            "hermes/hotword/{wakewordId}/detected",
            m.HotwordDetected,
            hermes="HotwordDetected",
        ),
        _route(
            e.SPEECH_DETECTED, "hermes/asr/textCaptured", m.TextCaptured, hermes="AsrTextCaptured"
        ),
        _route(e.SPEECH_ENDED, "hermes/voiceActivity/{siteId}/vadDown", m.VoiceActivity),
        _route(
            e.SILENCE_DETECTED,
            "rhasspy/asr/recordingFinished",
            m.RecordingFinished,
            hermes="AsrRecordingFinished",
        ),
        _route(e.AUDIO_PLAYBACK_STARTED, audio + "playStarted", m.Playback, topic_only=site),
        _route(e.AUDIO_PLAYBACK_PROGRESS, audio + "playProgress", m.Playback, topic_only=site),
        _route(
            e.AUDIO_PLAYBACK_ENDED,
            "hermes/audioServer/{siteId}/playFinished",
            m.PlayFinished,
            topic_only=site,
            hermes="AudioPlayFinished",
        ),
        _route(e.CONVERSATION_UPDATED, dialogue + "conversationUpdated", m.Dialogue),
        _route(e.DECISION_MADE, dialogue + "decisionMade", m.Dialogue),
        _route(e.RESPONSE_GENERATING, dialogue + "responseGenerating", m.ResponseGenerating),
        _route(e.RESPONSE_GENERATED, dialogue + "responseGenerated", m.ResponseGenerated),
        _route(e.EMOTION_CHANGED, "voicebus/emotion/changed", m.EmotionChanged),
        _route(e.MODEL_DOWNLOAD_STARTED, "voicebus/model/downloadStarted", m.ModelPayload),
        _route(e.MODEL_DOWNLOAD_PROGRESS, "voicebus/model/downloadProgress", m.ModelPayload),
        _route(e.MODEL_DOWNLOAD_COMPLETED, "voicebus/model/downloadCompleted", m.ModelPayload),
        _route(e.MODEL_DOWNLOAD_FAILED, "voicebus/model/downloadFailed", m.ModelDownloadFailed),
        _route(e.MODEL_LOADED, "voicebus/model/loaded", m.ModelPayload),
        _route(e.MODEL_UNLOADED, "voicebus/model/unloaded", m.ModelPayload),
        _route(e.PROVIDER_SWITCHED, "voicebus/provider/switched", m.ProviderSwitched),
        _route(e.TTS_STARTED, "voicebus/tts/sayStarted", m.TtsStarted),
        _route(e.PHONEME_EVENT, "voicebus/tts/phoneme", m.Phoneme),
        _route(e.TTS_COMPLETED, "hermes/tts/sayFinished", m.TtsFinished, hermes="TtsSayFinished"),
        _route(e.SYSTEM_STARTED, "voicebus/system/started", m.SystemPayload),
        _route(e.SYSTEM_STOPPED, "voicebus/system/stopped", m.SystemPayload),
        _route(
            e.ERROR_OCCURRED,
            "voicebus/error/{component}",
            m.ErrorPayload,
            topic_only=("component",),
        ),
        _route(e.HEALTH_CHECK, "voicebus/system/health", m.SystemPayload),
        *_hermes_routes(),
        # Hermes audio: binary payloads (raw WAV bytes in data["wav"], never JSON)
        _route(
            e.AUDIO_FRAME,
            "hermes/audioServer/{siteId}/audioFrame",
            m.AudioFrame,
            hermes="AudioFrame",
            body=WAV_KEY,
        ),
        _route(
            e.PLAY_BYTES,
            "hermes/audioServer/{siteId}/playBytes/{requestId}",
            m.PlayBytes,
            hermes="AudioPlayBytes",
            body=WAV_KEY,
        ),
        _route(e.CANCELLED, "voicebus/cancelled", m.Cancelled),
    ]


def _hermes_routes() -> list[Route]:
    """The Hermes commands and dialogue messages (rhasspy-hermes classes, same names)."""
    e = EventType
    dm = "hermes/dialogueManager/"
    return [
        _route(e.TTS_SAY, "hermes/tts/say", h.TtsSay, hermes="TtsSay"),
        _route(
            e.ASR_START_LISTENING,
            "hermes/asr/startListening",
            h.AsrStartListening,
            hermes="AsrStartListening",
        ),
        _route(
            e.ASR_STOP_LISTENING,
            "hermes/asr/stopListening",
            h.AsrStopListening,
            hermes="AsrStopListening",
        ),
        _route(
            e.HOTWORD_TOGGLE_ON,
            "hermes/hotword/toggleOn",
            h.HotwordToggle,
            hermes="HotwordToggleOn",
        ),
        _route(
            e.HOTWORD_TOGGLE_OFF,
            "hermes/hotword/toggleOff",
            h.HotwordToggle,
            hermes="HotwordToggleOff",
        ),
        _route(
            e.SESSION_START,
            dm + "startSession",
            h.DialogueStartSession,
            hermes="DialogueStartSession",
        ),
        _route(
            e.SESSION_STARTED,
            dm + "sessionStarted",
            h.DialogueSessionStarted,
            hermes="DialogueSessionStarted",
        ),
        _route(
            e.SESSION_CONTINUE,
            dm + "continueSession",
            h.DialogueContinueSession,
            hermes="DialogueContinueSession",
        ),
        _route(e.SESSION_END, dm + "endSession", h.DialogueEndSession, hermes="DialogueEndSession"),
        _route(
            e.SESSION_ENDED,
            dm + "sessionEnded",
            h.DialogueSessionEnded,
            hermes="DialogueSessionEnded",
        ),
        _route(e.NLU_QUERY, "hermes/nlu/query", h.NluQuery, hermes="NluQuery"),
        # intentName: from the payload's intent.intentName (see h.NluIntent), topic only
        _route(
            e.INTENT_RECOGNIZED,
            "hermes/intent/{intentName}",
            h.NluIntent,
            topic_only=("intentName",),
            hermes="NluIntent",
        ),
        _route(
            e.INTENT_NOT_RECOGNIZED,
            "hermes/nlu/intentNotRecognized",
            h.NluIntentNotRecognized,
            hermes="NluIntentNotRecognized",
        ),
    ]


class RouteTable:
    """Routes by event type and by topic; users may register their own."""

    def __init__(self, routes: list[Route] | None = None) -> None:
        self.by_type: dict[Enum, Route] = {}
        """Event type -> its route (read it with `get` for a clear error when absent)."""
        self._exact: dict[str, Route] = {}
        self._templated: list[Route] = []
        self._cache: TopicCache[tuple[Route, dict[str, str]] | None] = TopicCache()
        """Topic -> match. Worst case ~4 MiB: `TopicCache`'s bound, plus the topic
        parameters of each entry (substrings of its topic: at most as much again)."""
        for route in routes or []:
            self.register(route)

    def register(self, route: Route, *, replace: bool = False) -> Route:
        """Add `route`; an event type or topic already routed needs ``replace=True``."""
        if not isinstance(route.event_type.value, str):
            raise UnknownEventTypeError("event types must be enum members with string values")
        old = self.by_type.get(route.event_type)
        if old is not None and not replace:
            raise UnknownEventTypeError(
                f"{route.event_type.value} already has a route ({old.template.template}); "
                "pass replace=True to change it"
            )
        for other in self.by_type.values():
            if other.event_type != route.event_type and other.filter == route.filter:
                raise TopicError(
                    f"topic {route.template.template!r} is already used by {other.event_type.value}"
                )
        if old is not None:
            self._forget(old)
        self.by_type[route.event_type] = route
        if route.template.parameters:
            self._templated.append(route)
        else:
            self._exact[route.template.template] = route
        self._cache.clear()
        return route

    def unregister(self, event_type: Enum) -> Route:
        """Remove the route of `event_type` (e.g. when a plugin unloads) and return it."""
        route = self.by_type.pop(event_type, None)
        if route is None:
            raise UnknownEventTypeError(f"{event_type!r} has no route to remove")
        self._forget(route)
        self._cache.clear()
        return route

    def _forget(self, route: Route) -> None:
        self._exact.pop(route.template.template, None)
        if route in self._templated:
            self._templated.remove(route)

    def __iter__(self) -> Iterator[Route]:
        return iter(self.by_type.values())

    def __len__(self) -> int:
        return len(self.by_type)

    def __contains__(self, event_type: object) -> bool:
        return event_type in self.by_type

    def get(self, event_type: Enum) -> Route:
        """The route of `event_type`, or `UnknownEventTypeError`."""
        try:
            return self.by_type[event_type]
        except KeyError:
            name = getattr(event_type, "value", event_type)
            raise UnknownEventTypeError(
                f"no route for event type {name!r}; register one with register_route()"
            ) from None

    def match(self, topic: str) -> tuple[Route, dict[str, str]] | None:
        """The route a concrete topic belongs to, with its topic parameters."""
        try:
            return self._cache[topic]
        except KeyError:
            pass
        found: tuple[Route, dict[str, str]] | None = None
        route = self._exact.get(topic)
        if route is not None:
            found = (route, {})
        else:
            for candidate in self._templated:
                params = candidate.template.parse(topic)
                if params is not None:
                    found = (candidate, params)
                    break
        return self._cache.put(topic, found)


ROUTES = RouteTable(_default_routes())
"""The process-wide route table every bus uses."""


def register_route(
    event_type: Enum,
    topic: str,
    model: type[m.Payload],
    *,
    topic_only: tuple[str, ...] = (),
    qos: int = 1,
    retain: bool = False,
    replace: bool = False,
    body: str | None = None,
    content_type: str = OCTETS,
    ttl: float | None = None,
) -> Route:
    """Register a user event type: ``register_route(MyEvents.BEEP, "myapp/beep", Beep)``.

    With `body` the route is binary: that key of the data (a ``bytes`` field of
    `model`) is the whole payload, of `content_type` (``audio/wav`` payloads must be
    RIFF/WAVE files); every topic parameter then travels in the topic only. `ttl`:
    seconds after which its events go stale (None: never).
    """
    template = TopicTemplate(topic)
    route = Route(
        event_type,
        template,
        model,
        frozenset(template.parameters if body is not None else topic_only),
        qos=qos,
        retain=retain,
        ttl=ttl,
        description=((model.__doc__ or "").strip().splitlines() or [""])[0],
        body=body,
        content_type=JSON if body is None else content_type,
    )
    return ROUTES.register(route, replace=replace)

