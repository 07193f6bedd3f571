"""Poison strings: every string that goes on the wire is a valid MQTT 5 string before
anything is sent (MQTT 5 section 1.5.4).

Mosquitto closes the link on a topic or user property with a control character, a
non-character or a surrogate; an outbox that resends such a message after every
reconnect never gets past it. So `emit` refuses them (`TopicError` for topic
parameters, `PayloadValidationError` for source, metadata and correlation id, both
`VoicebusError`), names the field, publishes nothing, and the link stays up.
"""

from __future__ import annotations

import pytest

from voicebus import (
    TopicError,
)
from voicebus.wire.strings import NON_CHARACTERS, mqtt_string_problem
from voicebus.wire.topics import TopicTemplate, check_filter, check_topic

BIG = "x" * 70_000
"""70 KB: more than the 65,535 bytes of an MQTT string."""

# the 20 poison values: (label, value, applies to a topic level only)
POISON: list[tuple[str, str, bool]] = [
    *(
        (f"U+{ord(c):04X}", f"kit{c}chen", False)
        for c in (
            "\x01",
            "\x1f",
            "\x7f",
            "\x80",
            "\x85",
            "\x9f",
            "\ufdd0",
            "\ufdef",
            "\ufffe",
            "\uffff",
            "\U0001fffe",
            "\U0010ffff",
            "\ud800",
            "\udfff",
            "\x00",
        )
    ),
    ("plus", "kit+chen", True),
    ("hash", "kit#chen", True),
    ("slash", "kit/chen", True),
    ("empty", "", True),
    ("70KB", BIG, False),
]
assert len(POISON) == 20

FIELDS = ["siteId", "wakewordId", "source", "metadata"]


def _forbidden(code: int) -> bool:
    """The MQTT 5 rule, written out independently of `voicebus.wire.strings`."""
    return (
        code <= 0x1F
        or 0x7F <= code <= 0x9F
        or 0xD800 <= code <= 0xDFFF
        or 0xFDD0 <= code <= 0xFDEF
        or (code & 0xFFFF) in (0xFFFE, 0xFFFF)
    )


# --- the check itself ------------------------------------------------------------------


def test_exactly_the_forbidden_code_points_are_refused() -> None:
    refused = {code for code in range(0x110000) if mqtt_string_problem(chr(code)) is not None}
    assert refused == {code for code in range(0x110000) if _forbidden(code)}
    assert len(NON_CHARACTERS) == 66 and refused >= NON_CHARACTERS
    assert len(refused) == 1 + 31 + 33 + 2048 + 66


@pytest.mark.parametrize(
    ("char", "named"),
    [
        ("\x00", "NUL (U+0000)"),
        ("\x01", "control character U+0001"),
        ("\x85", "control character U+0085"),
        ("\ufdd0", "non-character U+FDD0"),
        ("\U0010ffff", "non-character U+10FFFF"),
        ("\udfff", "lone surrogate U+DFFF"),
    ],
)
def test_the_problem_names_the_code_point_and_its_index(char: str, named: str) -> None:
    assert mqtt_string_problem(f"kit{char}chen") == f"contains {named} at index 3"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "kitchen",
        " ",
        "~",
        "Küche 1",
        "\xa0",  # no-break space: not printable for Python, fine for MQTT
        "\u200d",  # zero width joiner (emoji sequences)
        "👩\u200d🍳",
        "\ufdcf\ufdf0\ufffd",  # around the non-characters
        "\U0010fffd",
        "x" * 65535,
        "é" * 32767,  # 65,534 bytes
        "\U0001f600" * 16383,  # 65,532 bytes
    ],
)
def test_valid_strings_pass(value: str) -> None:
    assert mqtt_string_problem(value) is None


@pytest.mark.parametrize("value", ["x" * 65536, "é" * 32768, "\U0001f600" * 16384])
def test_more_than_65535_utf8_bytes_is_refused(value: str) -> None:
    assert mqtt_string_problem(value) == (
        "is 65536 bytes long in UTF-8, more than the 65535 of an MQTT string"
    )


def test_topics_filters_and_templates_are_checked() -> None:
    for bad in ("a/kit\x85chen", "a/\ufffe", "a/\ud800", "a/" + "x" * 65535):
        with pytest.raises(TopicError):
            check_topic(bad)
        with pytest.raises(TopicError):
            check_filter(bad)
        with pytest.raises(TopicError):
            check_filter(bad + "/#")
    assert check_filter("a/Küche/+/#") == "a/Küche/+/#"
    with pytest.raises(TopicError, match=r"U\+0085"):
        TopicTemplate("voicebus/kit\x85chen/{siteId}")
    with pytest.raises(TopicError, match=r"topic of 'a/\{x\}/\{y\}'.* is 70003 bytes long"):
        TopicTemplate("a/{x}/{y}").format({"x": "x" * 35000, "y": "y" * 35000})
