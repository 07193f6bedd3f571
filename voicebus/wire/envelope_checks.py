"""Refusing, before anything is sent, a string that is not a valid MQTT string:
the envelope values of an event (user properties, correlation id), its metadata
(keys and values at any depth), and the user properties of a hand-built message.

`codec.prepare` scans the envelope as one string in the common case (printable
and short enough that no value can be over the limit, see `strings`) and calls
`check_envelope` to name the culprit only when that scan fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import PydanticSerializationError, to_json

from ..errors import PayloadValidationError
from .message import Message
from .routes import Route
from .strings import MAX_STRING_BYTES, mqtt_string_problem, nested_string_problem, shown
from .topics import check_topic

SHORT_ENOUGH = MAX_STRING_BYTES // 4  # code points that fit an MQTT string however they encode
KNOWN_VALID: set[str] = set()
"""Event type texts and sources found to be valid MQTT strings (few, repeated)."""
KNOWN_MAX = 4096
"""Strings `KNOWN_VALID` keeps, at most."""
KNOWN_LONGEST = 256
"""Longest source `KNOWN_VALID` keeps (characters): ~4 MiB worst case in all."""


def check_envelope(
    route: Route,
    props: list[tuple[str, str]],
    correlation_id: str | None,
    metadata: Mapping[str, Any] | None,
) -> None:
    """Raise `PayloadValidationError` naming the first envelope value (user property
    or correlation id) that is not a valid MQTT string."""
    values = [*props, ("correlation_id", correlation_id)] if correlation_id is not None else props
    for field, value in values:
        problem = mqtt_string_problem(value)
        if problem is None:
            continue
        if field == "metadata" and metadata:  # name the key or value if one is to blame
            _check_metadata_strings(route, metadata)
        raise PayloadValidationError(
            str(route.event_type.value), [field], f"{shown(value)} {problem}"
        )


def check_message(message: Message) -> None:
    """Check the wire strings of a message built by hand (`EventBus.publish_message`):
    the topic (`TopicError`) and every user-property key and value
    (`PayloadValidationError`)."""
    check_topic(message.topic)
    for index, (key, value) in enumerate(message.user_properties):
        for part, text in (("key", key), ("value", value)):
            problem = mqtt_string_problem(text)
            if problem is not None:
                raise PayloadValidationError(
                    "message",
                    [f"user_properties[{index}].{part}"],
                    f"{shown(text)} (on topic {shown(message.topic)}) {problem}",
                )


def metadata_json(route: Route, metadata: Mapping[str, Any]) -> str:
    """`metadata` as the JSON text of one user property.

    Its strings (keys and values, at any depth) must be MQTT strings themselves,
    also those JSON would escape (a control character): peers decode them and may
    send them on (a topic level, a property). Printable JSON text without a
    backslash holds no such string, and a short one none too long (the common case:
    no walk through `metadata`).
    """
    try:
        text = to_json(metadata).decode()
    except PydanticSerializationError as exc:  # e.g. a lone surrogate: named below
        _check_metadata_strings(route, metadata)
        raise PayloadValidationError(
            str(route.event_type.value), ["metadata"], f"not JSON: {exc}"
        ) from None
    if "\\" in text or len(text) > SHORT_ENOUGH:  # what is not printable: by `encode`
        _check_metadata_strings(route, metadata)
    return text  # checked with the other user properties


def _check_metadata_strings(route: Route, metadata: Mapping[str, Any]) -> None:
    found = nested_string_problem(metadata, "metadata")
    if found is not None:
        where, problem = found
        raise PayloadValidationError(str(route.event_type.value), [where], problem)
