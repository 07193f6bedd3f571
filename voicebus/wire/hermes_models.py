"""Payload models of the Hermes commands and dialogue messages (rhasspy-hermes 0.6.2).

Field names, defaults and optionality are those of rhasspy-hermes's classes
(``TtsSay``, ``AsrStartListening``, ``DialogueStartSession``, ``NluIntent``, ...);
as everywhere in voicebus, fields left as ``None`` stay off the wire and extra
keys are kept (also in nested objects). Enumerations are checked (rhasspy-hermes
raises on a value it does not know). Several of these topics are *commands*
(``hermes/tts/say``, ``hermes/asr/startListening``, ``hermes/hotword/toggleOn``):
emit them to ask for something, never to report that it happened.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, model_validator
from pydantic.alias_generators import to_camel

from .models import Payload


class Part(BaseModel):
    """A nested Hermes object (``intent``, ``init``, a slot): camelCase, extra keys kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)


# --- commands ------------------------------------------------------------------------


class TtsSay(Payload):
    """Say a text on a site: a command to the TTS (Hermes ``TtsSay``).

    Answered by TTS_COMPLETED (``hermes/tts/sayFinished``) with the same ``id`` and
    ``sessionId`` once the speech has finished playing.
    """

    text: str
    lang: str | None = None
    id: str | None = None
    volume: float | None = None


class AsrStartListening(Payload):
    """Start transcribing on a site: a command to the ASR (Hermes ``AsrStartListening``)."""

    lang: str | None = None
    stop_on_silence: bool = True
    send_audio_captured: bool = False
    wakeword_id: str | None = None
    intent_filter: list[str] | None = None


class AsrStopListening(Payload):
    """Stop transcribing on a site: a command to the ASR (Hermes ``AsrStopListening``)."""


class HotwordToggle(Payload):
    """Switch wake word detection on or off on a site: a command (Hermes
    ``HotwordToggleOn`` / ``HotwordToggleOff``)."""

    reason: Literal["", "dialogueSession", "playAudio", "ttsSay"] = ""


# --- dialogue manager ----------------------------------------------------------------


class DialogueAction(Part):
    """A session that expects an answer from the user."""

    can_be_enqueued: bool
    type: Literal["action"] = "action"
    text: str | None = None
    intent_filter: list[str] | None = None
    send_intent_not_recognized: bool = False


class DialogueNotification(Part):
    """A session that only says something."""

    text: str
    type: Literal["notification"] = "notification"


def _init_kind(value: Any) -> str:
    """``type`` when given; without it (Hermes always writes it), the shape decides."""
    if isinstance(value, BaseModel):
        return str(getattr(value, "type", "action"))
    if isinstance(value, dict):
        kind = value.get("type")
        if kind is None:
            kind = "action" if "canBeEnqueued" in value or "can_be_enqueued" in value else ""
            return kind or "notification"
        return str(kind)
    return "action"


SessionInit = Annotated[
    Annotated[DialogueAction, Tag("action")] | Annotated[DialogueNotification, Tag("notification")],
    Discriminator(_init_kind),
]


class DialogueStartSession(Payload):
    """Start a dialogue session on a site: a command to the dialogue manager (Hermes
    ``DialogueStartSession``); ``init`` is an action or a notification."""

    init: SessionInit
    custom_data: str | None = None
    lang: str | None = None


class DialogueSessionStarted(Payload):
    """A dialogue session started (Hermes ``DialogueSessionStarted``)."""

    session_id: str
    custom_data: str | None = None
    lang: str | None = None


class DialogueContinueSession(Payload):
    """Continue a session: say ``text`` and listen again (Hermes
    ``DialogueContinueSession``; no ``siteId``)."""

    # Hermes has no siteId here: none is written unless given.
    site_id: str | None = None  # type: ignore[assignment]
    session_id: str
    custom_data: str | None = None
    text: str | None = None
    intent_filter: list[str] | None = None
    send_intent_not_recognized: bool = False
    slot: str | None = None
    lang: str | None = None


class DialogueEndSession(Payload):
    """End a session, saying ``text`` (Hermes ``DialogueEndSession``; no ``siteId``)."""

    # Hermes has no siteId here: none is written unless given.
    site_id: str | None = None  # type: ignore[assignment]
    session_id: str
    text: str | None = None
    custom_data: str | None = None


class SessionTermination(Part):
    """Why a session ended."""

    reason: Literal["nominal", "abortedByUser", "intentNotRecognized", "timeout", "error"]


class DialogueSessionEnded(Payload):
    """A dialogue session ended (Hermes ``DialogueSessionEnded``, ``termination.reason``)."""

    termination: SessionTermination
    session_id: str
    custom_data: str | None = None


# --- natural language understanding --------------------------------------------------


class NluQuery(Payload):
    """Recognise the intent of a text: a command to the NLU (Hermes ``NluQuery``)."""

    input: str
    id: str | None = None
    intent_filter: list[str] | None = None
    wakeword_id: str | None = None
    lang: str | None = None
    custom_data: str | None = None
    asr_confidence: float | None = None
    custom_entities: dict[str, Any] | None = None


class Intent(Part):
    """The recognised intent: its name and confidence."""

    intent_name: str
    confidence_score: float


class SlotRange(Part):
    """Where a slot value is in the input."""

    start: int
    end: int
    raw_start: int | None = None
    raw_end: int | None = None


class Slot(Part):
    """A named value found in the input; ``slotName`` defaults to ``entity`` and
    ``rawValue`` to ``value["value"]``, as in Hermes."""

    entity: str
    value: dict[str, Any]
    slot_name: str | None = None
    raw_value: Any = None
    confidence: float = 0.0
    range: SlotRange | None = None

    @model_validator(mode="after")
    def _hermes_defaults(self) -> Slot:
        if self.slot_name is None:
            self.slot_name = self.entity
        if self.raw_value is None:
            self.raw_value = self.value.get("value")
        return self


class AsrTokenTime(Part):
    """Start and end of a token, in seconds."""

    start: float
    end: float


class AsrToken(Part):
    """One word of a transcript."""

    value: str
    confidence: float
    range_start: int
    range_end: int
    time: AsrTokenTime | None = None


class NluIntent(Payload):
    """An intent was recognised (Hermes ``NluIntent``).

    The topic ``hermes/intent/{intentName}`` takes its name from ``intent.intentName``;
    on receipt ``intentName`` (from the topic) is in the data as well. An
    ``intentName`` that differs from ``intent.intentName`` is refused.
    """

    topic_parameter_paths: ClassVar[dict[str, str]] = {"intentName": "intent/intentName"}
    """Topic parameters whose value is a nested payload key (a JSON pointer); the
    contract in ``topics/`` declares it as the parameter's location."""

    input: str
    intent: Intent
    intent_name: str | None = None
    id: str | None = None
    slots: list[Slot] | None = None
    custom_data: str | None = None
    asr_tokens: list[list[AsrToken]] | None = None
    asr_confidence: float | None = None
    raw_input: str | None = None
    wakeword_id: str | None = None
    lang: str | None = None

    @model_validator(mode="after")
    def _intent_name_from_intent(self) -> NluIntent:
        if self.intent_name is None:
            self.intent_name = self.intent.intent_name
        elif self.intent_name != self.intent.intent_name:
            raise ValueError(
                f"intentName {self.intent_name!r} (the topic's) differs from "
                f"intent.intentName {self.intent.intent_name!r}; give one name"
            )
        return self


class NluIntentNotRecognized(Payload):
    """No intent was recognised in the input (Hermes ``NluIntentNotRecognized``)."""

    input: str
    id: str | None = None
    custom_data: str | None = None
