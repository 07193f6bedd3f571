"""Check Hermes payloads (e.g. produced by voicebus) against real rhasspy-hermes.

Run inside the same throwaway venv as ``scripts/gen_hermes_fixtures.py``
(rhasspy-hermes 0.6.2 pins paho-mqtt 1.5; never install it in the main env;
use Python <= 3.12 because the library imports ``audioop``)::

    python3 -m venv /tmp/hermes-venv
    /tmp/hermes-venv/bin/pip install rhasspy-hermes==0.6.2
    some_command | /tmp/hermes-venv/bin/python scripts/check_hermes_payloads.py
    /tmp/hermes-venv/bin/python scripts/check_hermes_payloads.py records.jsonl
    /tmp/hermes-venv/bin/python scripts/check_hermes_payloads.py tests/fixtures/hermes/

Input: JSON lines (stdin, or ``-``, or file arguments), one object per line::

    {"hermes_class": "HotwordDetected", "module": "rhasspyhermes.wake",
     "topic": "hermes/hotword/porcupine/detected", "payload": {...}}

A file whose whole content is one (pretty-printed) JSON object, or a
directory (all ``*.json`` in it, sorted), is also accepted, so the golden
fixtures can be checked directly.  Other keys in a record are ignored.
``module`` may be omitted/null: the class is then looked up in all
``rhasspyhermes`` submodules.

Output: one JSON line per record, ``{"ok": bool, "error": str|null}``.
Exit status 1 if any record failed (2 on bad usage), else 0.  ``-v`` prints
informational notes (e.g. ignored extra keys) to stderr.

Checks per record (all must pass):

1. ``topic`` is concrete (no MQTT wildcards ``+``/``#``) and
   ``cls.is_topic(topic)`` is True.  Note: for static topics ``is_topic`` is
   exact string equality with ``cls.topic()``; for parametrised ones it is a
   regex such as ``^hermes/hotword/([^/]+)/detected$`` - which would also
   accept the literal wildcard ``hermes/hotword/+/detected``, hence check 1a.
2. Every required field (no default) is present under its camelCase key.
3. No key is a snake_case spelling of a field whose wire name is camelCase
   (e.g. ``site_id``): from_dict would silently accept it (see below), but it
   is not the Hermes wire format.
4. ``cls.from_dict(payload)`` succeeds without a dataclasses_json
   RuntimeWarning (it only *warns* on null in a non-Optional field).
5. Values of Hermes-defined keys have the annotated types (from_dict does no
   type checking; float accepts int, bool is not int/float, nested
   dataclasses such as AsrToken checked recursively).
6. Re-serialising (``json.loads(msg.to_json())``) gives the same values for
   every payload key Hermes defines (recursively, ignoring extra nested keys).

Records with ``hermes_class`` null are checked against a small hand-written
table (Snips VAD ``hermes/voiceActivity/{siteId}/vadUp|vadDown``: ``siteId``
str required and equal to the topic's site, ``signalMs`` int optional),
because rhasspy-hermes 0.6.2 has no class for them.

Observed rhasspy-hermes 0.6.2 / dataclasses-json 0.5.6 ``from_dict``
behaviour (tested for HotwordDetected, AsrTextCaptured, AsrRecordingFinished,
AudioPlayFinished, TtsSayFinished, HotwordError, AsrError, NluError,
TtsError, DialogueError, AudioPlayError, AudioRecordError):

* Extra/unknown keys (e.g. ``"confidence"``) are TOLERATED and silently
  dropped by every one of these classes - also inside nested objects (e.g.
  an extra key inside an ``asrTokens`` entry).  None of the classes sets
  dataclasses_json ``Undefined.RAISE``.  In particular ``siteId`` in an
  AudioPlayFinished payload is an unknown key (site is only in the topic) and
  is ignored.
* Missing OPTIONAL keys (anything with a default) are TOLERATED: the default
  is used (``siteId`` -> "default", Optional fields -> None, HotwordDetected
  ``modelVersion`` -> "", ``modelType`` -> "personal",
  ``currentSensitivity`` -> 1.0).
* Missing REQUIRED keys raise ``KeyError`` with the snake_case field name
  (e.g. ``KeyError('model_id')``).
* ``null`` for a non-Optional field is accepted with only a RuntimeWarning.
* Wrong value types are accepted unchanged (no validation).
* snake_case keys (``site_id``) are accepted as well as camelCase.
"""

import argparse
import copy
import dataclasses
import enum
import importlib
import json
import pkgutil
import re
import sys
import typing
import warnings
from pathlib import Path

# Hand-written specs for messages rhasspy-hermes has no class for.
# topic regex -> (required {key: type}, optional {key: type}, topic group that
# must equal payload["siteId"])
HAND_SPECS = [
    (
        "Snips VAD",
        re.compile(r"^hermes/voiceActivity/([^/]+)/(vadUp|vadDown)$"),
        {"siteId": str},
        {"signalMs": int},
    ),
]

_MISSING = object()


class CheckError(Exception):
    pass


def _camel(name):
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _find_class(module_name, class_name):
    if module_name:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise CheckError(f"cannot import module {module_name!r}: {e}")
        cls = getattr(module, class_name, None)
        if cls is None:
            raise CheckError(f"{module_name} has no class {class_name!r}")
        return cls
    import rhasspyhermes

    for info in pkgutil.iter_modules(rhasspyhermes.__path__):
        if info.name in ("__main__", "cli", "client"):
            continue
        module = importlib.import_module(f"rhasspyhermes.{info.name}")
        cls = getattr(module, class_name, None)
        if isinstance(cls, type):
            return cls
    raise CheckError(f"no class {class_name!r} in rhasspyhermes")


def _type_name(tp):
    return getattr(tp, "__name__", None) or str(tp)


def _check_type(value, tp, path):
    """Raise CheckError if JSON value does not fit the annotation tp."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is typing.Any:
        return
    if origin is typing.Union:
        if value is None and type(None) in args:
            return
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                _check_type(value, arg, path)
                return
            except CheckError as e:
                errors.append(str(e))
        raise CheckError("; ".join(errors) or f"{path}: null not allowed")
    if value is None:
        raise CheckError(f"{path}: null not allowed for {_type_name(tp)}")
    if origin is list:
        if not isinstance(value, list):
            raise CheckError(f"{path}: expected list, got {type(value).__name__}")
        for i, item in enumerate(value):
            _check_type(item, args[0] if args else typing.Any, f"{path}[{i}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise CheckError(f"{path}: expected object, got {type(value).__name__}")
        if args:
            for k, v in value.items():
                _check_type(v, args[1], f"{path}.{k}")
        return
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise CheckError(
                f"{path}: expected object ({tp.__name__}), got {type(value).__name__}"
            )
        _check_fields(tp, value, path)
        return
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if value not in [m.value for m in tp]:
            raise CheckError(f"{path}: {value!r} not one of {[m.value for m in tp]}")
        return
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp in (str, bool):
        ok = isinstance(value, tp)
    else:
        ok = True  # unknown annotation: don't judge
    if not ok:
        raise CheckError(
            f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )


def _check_fields(cls, payload, path):
    """Required keys present, no snake_case aliases, value types match."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key = _camel(field.name)
        required = (
            field.default is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING
        )
        if key != field.name and field.name in payload:
            raise CheckError(
                f"{path}: snake_case key {field.name!r}; Hermes wire name is {key!r}"
            )
        value = payload.get(key, _MISSING)
        if value is _MISSING:
            if required:
                raise CheckError(f"{path}: missing required key {key!r}")
            continue
        _check_type(value, hints[field.name], f"{path}.{key}")


def _subset_equal(expected, actual, path, mismatches):
    """Values in `expected` must equal `actual`, ignoring keys absent from `actual` dicts."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for k, v in expected.items():
            if k in actual:
                _subset_equal(v, actual[k], f"{path}.{k}", mismatches)
    elif isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            mismatches.append(f"{path}: length {len(expected)} -> {len(actual)}")
        else:
            for i, (e, a) in enumerate(zip(expected, actual)):
                _subset_equal(e, a, f"{path}[{i}]", mismatches)
    elif expected != actual or (type(expected) is bool) != (type(actual) is bool):
        mismatches.append(f"{path}: {expected!r} -> {actual!r}")


def _unknown_keys(cls, payload):
    names = {_camel(f.name) for f in dataclasses.fields(cls)}
    return sorted(k for k in payload if k not in names)


def check_hand(topic, payload):
    for label, pattern, required, optional in HAND_SPECS:
        match = pattern.match(topic)
        if not match:
            continue
        for key, tp in required.items():
            if key not in payload:
                raise CheckError(f"{label}: missing required key {key!r}")
        for key, tp in {**required, **optional}.items():
            if key in payload:
                if key in optional and payload[key] is None:
                    continue
                _check_type(payload[key], tp, f"payload.{key}")
        if payload.get("siteId") != match.group(1):
            raise CheckError(
                f"{label}: payload siteId {payload.get('siteId')!r} != topic site {match.group(1)!r}"
            )
        return [k for k in payload if k not in required and k not in optional]
    raise CheckError(
        f"hermes_class is null and topic {topic!r} matches no hand-written spec"
    )


def check_record(record):
    """Return list of informational notes; raise CheckError on failure."""
    if not isinstance(record, dict):
        raise CheckError("record is not a JSON object")
    topic = record.get("topic")
    payload = record.get("payload")
    class_name = record.get("hermes_class")
    if not isinstance(topic, str):
        raise CheckError("record has no string 'topic'")
    if not isinstance(payload, dict):
        raise CheckError("record 'payload' is not a JSON object")
    if "+" in topic or "#" in topic:
        raise CheckError(f"topic {topic!r} contains an MQTT wildcard")

    if class_name is None:
        extra = check_hand(topic, payload)
        return [f"extra keys (not in spec): {extra}"] if extra else []

    cls = _find_class(record.get("module"), class_name)
    if cls.is_binary_payload():
        raise CheckError(f"{class_name} has a binary (non-JSON) payload")

    is_topic = getattr(cls, "is_topic", None)
    if is_topic is not None and not is_topic(topic):
        raise CheckError(
            f"{class_name}.is_topic({topic!r}) is False (expected e.g. {cls.topic()!r})"
        )

    _check_fields(cls, payload, "payload")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # a copy: DialogueStartSession.from_dict replaces `init` in the dict it gets
            msg = cls.from_dict(copy.deepcopy(payload))
        except Exception as e:
            raise CheckError(f"{class_name}.from_dict failed: {type(e).__name__}: {e}")
    runtime = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    if runtime:
        raise CheckError(f"{class_name}.from_dict warned: {'; '.join(runtime)}")

    try:
        again = json.loads(msg.to_json())
    except Exception as e:
        raise CheckError(f"{class_name}.to_json failed: {type(e).__name__}: {e}")
    mismatches = []
    _subset_equal(payload, again, "payload", mismatches)
    if mismatches:
        raise CheckError("re-serialised values differ: " + "; ".join(mismatches))

    extra = _unknown_keys(cls, payload)
    return [f"extra keys ignored by {class_name}.from_dict: {extra}"] if extra else []


def _iter_records(sources):
    """Yield (label, record-or-Exception)."""
    for source in sources:
        if source == "-":
            yield from _iter_text("<stdin>", sys.stdin.read())
            continue
        path = Path(source)
        if path.is_dir():
            for sub in sorted(path.glob("*.json")):
                yield from _iter_text(str(sub), sub.read_text(encoding="utf-8"))
        else:
            yield from _iter_text(str(path), path.read_text(encoding="utf-8"))


def _iter_text(label, text):
    stripped = text.strip()
    if not stripped:
        return
    # Whole-file single JSON object (pretty-printed fixture)?
    if "\n" in stripped and stripped.startswith("{"):
        try:
            yield label, json.loads(stripped)
            return
        except json.JSONDecodeError:
            pass
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{label}:{lineno}", json.loads(line)
        except json.JSONDecodeError as e:
            yield f"{label}:{lineno}", CheckError(f"invalid JSON: {e}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sources",
        nargs="*",
        default=["-"],
        help="JSON-lines files, fixture files or directories (default stdin)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print notes/labels to stderr"
    )
    args = parser.parse_args(argv)

    failed = 0
    for label, record in _iter_records(args.sources):
        try:
            if isinstance(record, Exception):
                raise record
            notes = check_record(record)
            result = {"ok": True, "error": None}
        except CheckError as e:
            notes = []
            result = {"ok": False, "error": str(e)}
        except Exception as e:
            notes = []
            result = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
        if not result["ok"]:
            failed += 1
        print(json.dumps(result), flush=True)
        if args.verbose:
            status = "ok" if result["ok"] else f"FAIL: {result['error']}"
            print(
                f"{label}: {status}" + "".join(f"\n  note: {n}" for n in notes),
                file=sys.stderr,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
