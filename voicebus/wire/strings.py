"""MQTT 5 UTF-8 strings (MQTT 5 section 1.5.4): what may go on the wire as a string.

Topics, topic filters, user-property keys and values are MQTT strings. A string
with U+0000, a control character (U+0001-U+001F, U+007F-U+009F), a non-character
(U+FDD0-U+FDEF and the last two code points of every plane, U+xxFFFE/U+xxFFFF)
or a surrogate, or longer than 65,535 UTF-8 bytes, is refused here: Mosquitto
closes the link on such a packet, and an outbox that resends it after every
reconnect would never get past it. Nothing here raises; callers turn the problem
into the error that names their field (`TopicError`, `PayloadValidationError`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_STRING_BYTES = 65535
"""The longest MQTT string, in UTF-8 bytes (a two-byte length prefix)."""

_SHORT_ENOUGH = MAX_STRING_BYTES // 4
"""A string of at most this many code points fits whatever they are (4 bytes at most each)."""

NON_CHARACTERS = frozenset(
    [*range(0xFDD0, 0xFDF0)]
    + [plane << 16 | low for plane in range(17) for low in (0xFFFE, 0xFFFF)]
)
"""The 66 Unicode non-characters."""

_BAD_IN_BMP = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
_ASTRAL_SUSPECT = re.compile("[\U0001fffe-\U0010ffff]")
"""Code points from the first astral non-character on (a class of the 32 astral
non-characters themselves would make every search several times slower)."""


def mqtt_string_problem(value: str) -> str | None:
    """Why `value` cannot be sent as an MQTT 5 string, or ``None`` when it can.

    The answer reads after the field's name, e.g. ``contains control character
    U+0085 at index 3``. A printable string (the common case) costs one C-level
    scan: `str.isprintable` is false for every category C code point (control,
    surrogate, unassigned: each non-character is unassigned), so only strings with
    one of those, or a format character or a separator other than space, are
    searched code point by code point.
    """
    if not value.isprintable():
        found = _first_forbidden(value)
        if found is not None:
            index, code = found
            return f"contains {describe(code)} at index {index}"
    if len(value) > _SHORT_ENOUGH:
        size = len(value) if value.isascii() else len(value.encode())  # no surrogate here
        if size > MAX_STRING_BYTES:
            return (
                f"is {size} bytes long in UTF-8, more than the {MAX_STRING_BYTES} of an MQTT string"
            )
    return None


def _first_forbidden(value: str) -> tuple[int, int] | None:
    """Index and code point of the first code point no MQTT string may hold."""
    found = _BAD_IN_BMP.search(value)
    end = len(value) if found is None else found.start()
    for suspect in _ASTRAL_SUSPECT.finditer(value, 0, end):
        code = ord(suspect.group())
        if code & 0xFFFE == 0xFFFE:  # U+xxFFFE or U+xxFFFF
            return suspect.start(), code
    return None if found is None else (found.start(), ord(found.group()))


def describe(code: int) -> str:
    """A code point that no MQTT string may hold, named for an error message."""
    if code == 0:
        return "NUL (U+0000)"
    if 0xD800 <= code <= 0xDFFF:
        return f"lone surrogate U+{code:04X}"
    if code in NON_CHARACTERS:
        return f"non-character U+{code:04X}"
    return f"control character U+{code:04X}"


def shown(value: str, limit: int = 40) -> str:
    """`value` for an error message: escaped (never a raw control character), cut short."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def nested_string_problem(value: Any, path: str) -> tuple[str, str] | None:
    """The first string (a mapping key or value, a list item, at any depth) in `value`
    that cannot be sent as an MQTT string: ``(where, problem)``, `where` starting
    with `path`, e.g. ``metadata['room'][2]``."""
    found = _find(value)
    if found is None:
        return None
    steps, problem = found
    where = path
    for step in reversed(steps):
        if isinstance(step, _Key):
            where = f"{where} key {shown(step.key)}"
        elif isinstance(step, str):
            where = f"{where}[{shown(step)}]"
        else:
            where = f"{where}[{step!r}]"
    return where, problem


class _Key:
    """A step to a mapping key (not to its value)."""

    def __init__(self, key: str) -> None:
        self.key = key


def _find(value: Any) -> tuple[list[object], str] | None:
    """The steps (innermost first) to the first bad string in `value`, and its problem."""
    if isinstance(value, str):
        problem = mqtt_string_problem(value)
        return None if problem is None else ([], problem)
    if isinstance(value, int | float) or value is None:  # the common leaves, quickly
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _find(item)
            if found is not None:
                found[0].append(index)
                return found
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                problem = mqtt_string_problem(key)
                if problem is not None:
                    return [_Key(key)], problem
            found = _find(item)
            if found is not None:
                found[0].append(key)
                return found
    return None
