"""Generate golden Hermes wire fixtures with the real rhasspy-hermes library.

rhasspy-hermes 0.6.2 pins paho-mqtt 1.5, so it must NOT be installed in the
project's main environment.  Use a throwaway venv (Python <= 3.12, tested
with 3.11; the library imports ``audioop``, removed in Python 3.13):

    python3 -m venv /tmp/hermes-venv
    /tmp/hermes-venv/bin/pip install rhasspy-hermes==0.6.2
    /tmp/hermes-venv/bin/python scripts/gen_hermes_fixtures.py

Output goes to <repo>/tests/fixtures/hermes/ (found relative to this file,
whatever the cwd); ``--out DIR`` overrides it.  This script does not import
voicebus.

It writes ``tests/fixtures/hermes/<name>.json``, one file per case, each a JSON
object::

    {
      "hermes_class": "HotwordDetected",        # class name, or null (see VAD)
      "module": "rhasspyhermes.wake",           # module, or null
      "topic": "hermes/hotword/porcupine/detected",   # cls.topic(**topic_params)
      "payload": {...},                         # json.loads(msg.to_json())
      "is_topic": true,                         # cls.is_topic(topic)
      "topic_params": {"wakeword_id": "porcupine"}    # kwargs given to topic()
    }

For every class there is a ``*_minimal`` case (only required fields passed to
the constructor, so the payload shows the library defaults, e.g. siteId
"default" and nulls for unset optionals) and a ``*_full`` case (every optional
field set).  Note that ``to_json()`` always emits every field, using ``null``
for unset Optional fields.

Snips VAD messages (``hermes/voiceActivity/{siteId}/vadUp|vadDown``) have no
class in rhasspy-hermes 0.6.2, so those fixtures are written by hand below
(``hermes_class``/``module`` are null and a ``note`` key explains this).  The
shape follows the Snips hermes protocol (hermes-rust ``VadDownMessage``):
``siteId`` (string, required) and ``signalMs`` (integer, optional).
"""

import argparse
import copy
import importlib
import json
import re
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hermes"

# (fixture name, module, class name, constructor kwargs, topic() kwargs)
LIBRARY_CASES = [
    # --- wake ---------------------------------------------------------------
    (
        "hotword_detected_minimal",
        "rhasspyhermes.wake",
        "HotwordDetected",
        {"model_id": "porcupine"},
        {"wakeword_id": "porcupine"},
    ),
    (
        "hotword_detected_kitchen",
        "rhasspyhermes.wake",
        "HotwordDetected",
        {"model_id": "porcupine", "site_id": "kitchen"},
        {"wakeword_id": "porcupine"},
    ),
    (
        "hotword_detected_full",
        "rhasspyhermes.wake",
        "HotwordDetected",
        {
            "model_id": "porcupine",
            "model_version": "1.9.0",
            "model_type": "universal",
            "current_sensitivity": 0.5,
            "site_id": "kitchen",
            "session_id": "sess-1",
            "send_audio_captured": True,
            "lang": "en",
            "custom_entities": {"room": "kitchen"},
        },
        {"wakeword_id": "porcupine"},
    ),
    # --- asr ----------------------------------------------------------------
    (
        "asr_text_captured_minimal",
        "rhasspyhermes.asr",
        "AsrTextCaptured",
        {"text": "turn on the light", "likelihood": 0.92, "seconds": 1.25},
        {},
    ),
    (
        "asr_text_captured_full",
        "rhasspyhermes.asr",
        "AsrTextCaptured",
        {
            "text": "turn on the light",
            "likelihood": 0.92,
            "seconds": 1.25,
            "site_id": "kitchen",
            "session_id": "sess-1",
            "wakeword_id": "porcupine",
            "asr_tokens": "__ASR_TOKENS__",  # replaced with AsrToken objects
            "lang": "en",
        },
        {},
    ),
    (
        "asr_recording_finished_minimal",
        "rhasspyhermes.asr",
        "AsrRecordingFinished",
        {},
        {},
    ),
    (
        "asr_recording_finished_full",
        "rhasspyhermes.asr",
        "AsrRecordingFinished",
        {"site_id": "kitchen", "session_id": "sess-1"},
        {},
    ),
    # --- audio server -------------------------------------------------------
    # AudioPlayFinished has NO siteId field: the site is only in the topic.
    (
        "audio_play_finished_minimal",
        "rhasspyhermes.audioserver",
        "AudioPlayFinished",
        {},
        {"site_id": "kitchen"},
    ),
    (
        "audio_play_finished_full",
        "rhasspyhermes.audioserver",
        "AudioPlayFinished",
        {"id": "req-1", "session_id": "sess-1"},
        {"site_id": "kitchen"},
    ),
    # --- tts ----------------------------------------------------------------
    (
        "tts_say_finished_minimal",
        "rhasspyhermes.tts",
        "TtsSayFinished",
        {},
        {},
    ),
    (
        "tts_say_finished_full",
        "rhasspyhermes.tts",
        "TtsSayFinished",
        {"site_id": "kitchen", "id": "say-1", "session_id": "sess-1"},
        {},
    ),
]

# --- commands and dialogue messages (voicebus TTS_SAY ... INTENT_NOT_RECOGNIZED) ---
# Nested objects are given as "__NAME__" markers and built in build_library_case
# (they are dataclasses of the library: DialogueAction, Intent, Slot, ...).
LIBRARY_CASES += [
    ("tts_say_minimal", "rhasspyhermes.tts", "TtsSay", {"text": "hello"}, {}),
    (
        "tts_say_full",
        "rhasspyhermes.tts",
        "TtsSay",
        {
            "text": "hello",
            "site_id": "kitchen",
            "lang": "en",
            "id": "say-1",
            "session_id": "sess-1",
            "volume": 0.5,
        },
        {},
    ),
    ("asr_start_listening_minimal", "rhasspyhermes.asr", "AsrStartListening", {}, {}),
    (
        "asr_start_listening_full",
        "rhasspyhermes.asr",
        "AsrStartListening",
        {
            "site_id": "kitchen",
            "session_id": "sess-1",
            "lang": "en",
            "stop_on_silence": False,
            "send_audio_captured": True,
            "wakeword_id": "porcupine",
            "intent_filter": ["GetTime", "LightOn"],
        },
        {},
    ),
    ("asr_stop_listening_minimal", "rhasspyhermes.asr", "AsrStopListening", {}, {}),
    (
        "asr_stop_listening_full",
        "rhasspyhermes.asr",
        "AsrStopListening",
        {"site_id": "kitchen", "session_id": "sess-1"},
        {},
    ),
    ("hotword_toggle_on_minimal", "rhasspyhermes.wake", "HotwordToggleOn", {}, {}),
    (
        "hotword_toggle_on_full",
        "rhasspyhermes.wake",
        "HotwordToggleOn",
        {"site_id": "kitchen", "reason": "__REASON_dialogueSession__"},
        {},
    ),
    ("hotword_toggle_off_minimal", "rhasspyhermes.wake", "HotwordToggleOff", {}, {}),
    (
        "hotword_toggle_off_full",
        "rhasspyhermes.wake",
        "HotwordToggleOff",
        {"site_id": "kitchen", "reason": "__REASON_ttsSay__"},
        {},
    ),
    (
        "dialogue_start_session_minimal",
        "rhasspyhermes.dialogue",
        "DialogueStartSession",
        {"init": "__NOTIFICATION__"},
        {},
    ),
    (
        "dialogue_start_session_full",
        "rhasspyhermes.dialogue",
        "DialogueStartSession",
        {
            "init": "__ACTION__",
            "site_id": "kitchen",
            "custom_data": "my-data",
            "lang": "en",
        },
        {},
    ),
    (
        "dialogue_session_started_minimal",
        "rhasspyhermes.dialogue",
        "DialogueSessionStarted",
        {"session_id": "sess-1"},
        {},
    ),
    (
        "dialogue_session_started_full",
        "rhasspyhermes.dialogue",
        "DialogueSessionStarted",
        {"session_id": "sess-1", "site_id": "kitchen", "custom_data": "my-data", "lang": "en"},
        {},
    ),
    (
        "dialogue_continue_session_minimal",
        "rhasspyhermes.dialogue",
        "DialogueContinueSession",
        {"session_id": "sess-1"},
        {},
    ),
    (
        "dialogue_continue_session_full",
        "rhasspyhermes.dialogue",
        "DialogueContinueSession",
        {
            "session_id": "sess-1",
            "custom_data": "my-data",
            "text": "Which room?",
            "intent_filter": ["ChooseRoom"],
            "send_intent_not_recognized": True,
            "slot": "room",
            "lang": "en",
        },
        {},
    ),
    (
        "dialogue_end_session_minimal",
        "rhasspyhermes.dialogue",
        "DialogueEndSession",
        {"session_id": "sess-1"},
        {},
    ),
    (
        "dialogue_end_session_full",
        "rhasspyhermes.dialogue",
        "DialogueEndSession",
        {"session_id": "sess-1", "text": "OK, light on", "custom_data": "my-data"},
        {},
    ),
    (
        "dialogue_session_ended_minimal",
        "rhasspyhermes.dialogue",
        "DialogueSessionEnded",
        {"termination": "__TERMINATION_nominal__", "session_id": "sess-1"},
        {},
    ),
    (
        "dialogue_session_ended_full",
        "rhasspyhermes.dialogue",
        "DialogueSessionEnded",
        {
            "termination": "__TERMINATION_abortedByUser__",
            "session_id": "sess-1",
            "site_id": "kitchen",
            "custom_data": "my-data",
        },
        {},
    ),
    ("nlu_query_minimal", "rhasspyhermes.nlu", "NluQuery", {"input": "what time is it"}, {}),
    (
        "nlu_query_full",
        "rhasspyhermes.nlu",
        "NluQuery",
        {
            "input": "turn on the light",
            "site_id": "kitchen",
            "id": "query-1",
            "intent_filter": ["LightOn"],
            "session_id": "sess-1",
            "wakeword_id": "porcupine",
            "lang": "en",
            "custom_data": "my-data",
            "asr_confidence": 0.9,
            "custom_entities": {"room": "kitchen"},
        },
        {},
    ),
    (
        "nlu_intent_minimal",
        "rhasspyhermes.nlu",
        "NluIntent",
        {"input": "what time is it", "intent": "__INTENT_GetTime__"},
        {"intent_name": "GetTime"},
    ),
    (
        "nlu_intent_full",
        "rhasspyhermes.nlu",
        "NluIntent",
        {
            "input": "turn on the light",
            "intent": "__INTENT_LightOn__",
            "site_id": "kitchen",
            "id": "query-1",
            "slots": "__SLOTS__",
            "session_id": "sess-1",
            "custom_data": "my-data",
            "asr_tokens": "__ASR_TOKENS__",
            "asr_confidence": 0.9,
            "raw_input": "Turn on the light",
            "wakeword_id": "porcupine",
            "lang": "en",
        },
        {"intent_name": "LightOn"},
    ),
    (
        "nlu_intent_not_recognized_minimal",
        "rhasspyhermes.nlu",
        "NluIntentNotRecognized",
        {"input": "blah"},
        {},
    ),
    (
        "nlu_intent_not_recognized_full",
        "rhasspyhermes.nlu",
        "NluIntentNotRecognized",
        {
            "input": "blah",
            "site_id": "kitchen",
            "id": "query-1",
            "custom_data": "my-data",
            "session_id": "sess-1",
        },
        {},
    ),
]

# Rhasspy error messages: all share the shape
#   error: str (required), site_id: str = "default",
#   context: Optional[str] = None, session_id: Optional[str] = None
ERROR_CLASSES = [
    ("hotword_error", "rhasspyhermes.wake", "HotwordError", "porcupine"),
    ("asr_error", "rhasspyhermes.asr", "AsrError", "kaldi"),
    ("nlu_error", "rhasspyhermes.nlu", "NluError", "fsticuffs"),
    ("tts_error", "rhasspyhermes.tts", "TtsError", "espeak"),
    ("dialogue_error", "rhasspyhermes.dialogue", "DialogueError", "dialogue"),
    ("audio_play_error", "rhasspyhermes.audioserver", "AudioPlayError", "aplay"),
    ("audio_record_error", "rhasspyhermes.audioserver", "AudioRecordError", "arecord"),
]
for _name, _module, _cls, _context in ERROR_CLASSES:
    LIBRARY_CASES.append((f"{_name}_minimal", _module, _cls, {"error": "something went wrong"}, {}))
    LIBRARY_CASES.append(
        (
            f"{_name}_full",
            _module,
            _cls,
            {
                "error": "something went wrong",
                "site_id": "kitchen",
                "context": _context,
                "session_id": "sess-1",
            },
            {},
        )
    )

# Hand-written: rhasspy-hermes 0.6.2 has NO class for the Snips voiceActivity
# (VAD) messages, so these cannot be produced by the library.  Shape taken from
# the Snips hermes protocol: siteId (str, required), signalMs (int, optional).
VAD_TOPIC_PATTERN = re.compile(r"^hermes/voiceActivity/([^/]+)/(vadUp|vadDown)$")
VAD_NOTE = (
    "hand-written: rhasspy-hermes 0.6.2 has no class for Snips "
    "hermes/voiceActivity/{siteId}/vadUp|vadDown; payload per Snips protocol "
    "(siteId: str required, signalMs: int optional)"
)
HAND_CASES = [
    ("vad_down_kitchen", "vadDown", {"siteId": "kitchen", "signalMs": 4820}),
    ("vad_up_kitchen", "vadUp", {"siteId": "kitchen", "signalMs": 1250}),
]


def _asr_tokens():
    from rhasspyhermes.nlu import AsrToken, AsrTokenTime

    words = ["turn", "on", "the", "light"]
    tokens = []
    pos = 0
    t = 0.0
    for word in words:
        tokens.append(
            AsrToken(
                value=word,
                confidence=0.9,
                range_start=pos,
                range_end=pos + len(word),
                time=AsrTokenTime(start=round(t, 2), end=round(t + 0.3, 2)),
            )
        )
        pos += len(word) + 1
        t += 0.3
    return [tokens]


def _nested(value):
    """The library object a ``"__NAME__"`` marker of LIBRARY_CASES stands for."""
    from rhasspyhermes.dialogue import (
        DialogueAction,
        DialogueNotification,
        DialogueSessionTermination,
        DialogueSessionTerminationReason,
    )
    from rhasspyhermes.intent import Intent, Slot, SlotRange
    from rhasspyhermes.wake import HotwordToggleReason

    if not (isinstance(value, str) and value.startswith("__") and value.endswith("__")):
        return value
    marker = value[2:-2]
    if marker == "ASR_TOKENS":
        return _asr_tokens()
    if marker == "NOTIFICATION":
        return DialogueNotification(text="Ready")
    if marker == "ACTION":
        return DialogueAction(
            can_be_enqueued=True,
            text="Which room?",
            intent_filter=["ChooseRoom"],
            send_intent_not_recognized=True,
        )
    if marker.startswith("REASON_"):
        return HotwordToggleReason(marker[len("REASON_") :])
    if marker.startswith("TERMINATION_"):
        reason = DialogueSessionTerminationReason(marker[len("TERMINATION_") :])
        return DialogueSessionTermination(reason=reason)
    if marker.startswith("INTENT_"):
        return Intent(intent_name=marker[len("INTENT_") :], confidence_score=0.87)
    if marker == "SLOTS":
        return [
            Slot(
                entity="room",
                value={"kind": "Unknown", "value": "kitchen"},
                slot_name="room",
                raw_value="Kitchen",
                confidence=0.8,
                range=SlotRange(start=12, end=19, raw_start=12, raw_end=19),
            ),
            # slotName and rawValue left to the library's defaults (entity, value)
            Slot(entity="color", value={"kind": "Unknown", "value": "red"}),
        ]
    raise ValueError(f"unknown marker {value!r}")


def build_library_case(name, module_name, class_name, kwargs, topic_params):
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    kwargs = {key: _nested(value) for key, value in kwargs.items()}
    msg = cls(**kwargs)
    topic = cls.topic(**topic_params)
    if "+" in topic or "#" in topic:
        raise RuntimeError(f"{name}: topic {topic!r} is a wildcard; missing topic_params")
    payload = json.loads(msg.to_json())

    # Sanity: the library must accept its own output.
    is_topic = bool(cls.is_topic(topic))
    if not is_topic:
        raise RuntimeError(f"{name}: {class_name}.is_topic({topic!r}) is False")
    # a deep copy: DialogueStartSession.from_dict replaces `init` in the dict it gets
    again = json.loads(cls.from_dict(copy.deepcopy(payload)).to_json())
    if again != payload:
        raise RuntimeError(f"{name}: round trip mismatch {again!r} != {payload!r}")

    return {
        "hermes_class": class_name,
        "module": module_name,
        "topic": topic,
        "payload": payload,
        "is_topic": is_topic,
        "topic_params": dict(topic_params),
    }


def build_hand_case(name, kind, payload):
    site_id = payload["siteId"]
    topic = f"hermes/voiceActivity/{site_id}/{kind}"
    return {
        "hermes_class": None,
        "module": None,
        "topic": topic,
        "payload": dict(payload),
        "is_topic": VAD_TOPIC_PATTERN.match(topic) is not None,
        "topic_params": {"site_id": site_id},
        "note": VAD_NOTE,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)

    from importlib.metadata import PackageNotFoundError, version

    import rhasspyhermes  # noqa: F401  (fail early with a clear ImportError)

    try:
        hermes_version = version("rhasspy-hermes")
    except PackageNotFoundError:  # pragma: no cover
        hermes_version = "unknown"
    if hermes_version != "0.6.2":
        print(
            f"warning: rhasspy-hermes {hermes_version} installed, expected 0.6.2",
            file=sys.stderr,
        )

    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    cases = [(c[0], build_library_case(*c)) for c in LIBRARY_CASES]
    cases += [(c[0], build_hand_case(*c)) for c in HAND_CASES]
    for name, fixture in cases:
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(fixture, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
