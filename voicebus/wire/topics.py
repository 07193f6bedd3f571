"""MQTT topic names, filters and templates.

A `TopicTemplate` such as ``hermes/hotword/{wakewordId}/detected`` yields the
concrete topic (parameters filled and checked), the subscription filter
(parameters as ``+``) and the parser (topic back to parameters) from one string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from ..errors import TopicError
from .strings import MAX_STRING_BYTES, mqtt_string_problem, shown

MAX_TOPIC_BYTES = MAX_STRING_BYTES
_SHORT_ENOUGH = MAX_TOPIC_BYTES // 4  # code points that fit however they encode


def check_parameter(name: str, value: object) -> str:
    """Return `value` as one topic level, or raise `TopicError` naming `name` and why not.

    A level is a non-empty MQTT string (see `strings.mqtt_string_problem`: no NUL,
    control character, non-character or surrogate, at most 65,535 bytes) without
    ``/``, ``+`` or ``#``.
    """
    if not isinstance(value, str):
        raise TopicError(f"topic parameter {name!r} must be a string, got {value!r}")
    if not value:
        raise TopicError(f"topic parameter {name!r} is empty")
    for char in "/+#":
        if char in value:
            raise TopicError(
                f"topic parameter {name!r}={shown(value)} contains {char!r}, "
                "which cannot appear in one topic level"
            )
    if not value.isprintable() or len(value) > _SHORT_ENOUGH:  # else surely valid
        problem = mqtt_string_problem(value)
        if problem is not None:
            raise TopicError(f"topic parameter {name!r}={shown(value)} {problem}")
    return value


def check_topic(topic: str) -> str:
    """Validate a concrete topic name (for publishing): a valid MQTT string, no wildcard."""
    if not topic:
        raise TopicError("topic is empty")
    if "+" in topic or "#" in topic:
        raise TopicError(
            f"topic {shown(topic)} contains a wildcard; publish needs a concrete topic"
        )
    problem = mqtt_string_problem(topic)
    if problem is not None:
        raise TopicError(f"topic {shown(topic)} {problem}")
    return topic


def check_filter(topic_filter: str) -> str:
    """Validate an MQTT subscription filter (``+`` one level, ``#`` last level), a
    valid MQTT string like a topic."""
    if not topic_filter:
        raise TopicError("topic filter is empty")
    problem = mqtt_string_problem(topic_filter)
    if problem is not None:
        raise TopicError(f"topic filter {shown(topic_filter)} {problem}")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise TopicError(f"topic filter {shown(topic_filter)}: '#' must be a whole last level")
        if "+" in level and level != "+":
            raise TopicError(f"topic filter {shown(topic_filter)}: '+' must be a whole level")
    return topic_filter


_last_long: tuple[str, tuple[str, ...]] = ("", ("",))


def _split(text: str) -> tuple[str, ...]:
    """The levels of a topic or filter. Short ones are cached (worst case ~5 MiB:
    512 texts of at most 256 characters, with their levels); of longer ones only
    the last (a message's topic is matched against several filters in a row)."""
    global _last_long
    if len(text) <= 256:
        return _split_short(text)
    last, levels = _last_long
    if text is not last and text != last:
        levels = tuple(text.split("/"))
        _last_long = (text, levels)
    return levels


@lru_cache(maxsize=512)
def _split_short(text: str) -> tuple[str, ...]:
    return tuple(text.split("/"))


def matches(topic_filter: str, topic: str) -> bool:
    """True when `topic` matches the MQTT `topic_filter` (``$`` topics need ``$``)."""
    if topic_filter == topic:
        return True
    flevels = _split(topic_filter)
    tlevels = _split(topic)
    if topic.startswith("$") and flevels[0] in ("+", "#"):
        return False
    for index, flevel in enumerate(flevels):
        if flevel == "#":
            return True
        if index >= len(tlevels):
            return False
        if flevel != "+" and flevel != tlevels[index]:
            return False
    return len(flevels) == len(tlevels)


def subsumes(general: str, specific: str) -> bool:
    """True when every topic the filter `specific` matches, `general` matches too
    (``a/#`` subsumes ``a``, ``a/+/c`` and ``a/#``; ``#`` does not subsume
    ``$SYS/#``: a wildcard first level matches no ``$`` topic)."""
    if general == specific:
        return True
    glevels = _split(general)
    slevels = _split(specific)
    if glevels[0] in ("+", "#") and slevels[0].startswith("$"):
        return False
    for index, glevel in enumerate(glevels):
        if glevel == "#":
            return True
        if index >= len(slevels):
            return False
        slevel = slevels[index]
        if slevel == "#":  # matches the parent level too: no topic has zero levels
            return index == 0 and glevel == "+" and glevels[1:] == ("#",)
        if glevel != "+" and (slevel == "+" or slevel != glevel):
            return False
    return len(glevels) == len(slevels)


def covers(general: str, specific: str) -> bool:
    """`general` makes a subscription to `specific` redundant: it subsumes it, and
    of two filters that match the same topics (``#`` and ``+/#``) the smaller string
    covers the other, so that exactly one of them is needed."""
    if general == specific or not subsumes(general, specific):
        return False
    return general < specific or not subsumes(specific, general)


def breadth(topic_filter: str) -> tuple[float, int]:
    """A sort key that puts a filter before every filter it `covers` (``a/#`` before
    ``a/+``, ``a/+`` before ``a/b``): subscribing in this order, a covering set never
    sends a filter it would then take back."""
    levels = topic_filter.split("/")
    depth = len(levels) - 1 if levels[-1] == "#" else len(levels) + 0.5
    return depth, -levels.count("+")


@dataclass(frozen=True)
class TopicTemplate:
    """A topic with ``{name}`` parameters, each a whole level."""

    template: str

    def __post_init__(self) -> None:
        levels = tuple(self.template.split("/"))
        for level in levels:
            if ("{" in level or "}" in level) and not (
                level.startswith("{") and level.endswith("}") and len(level) > 2
            ):
                raise TopicError(
                    f"topic template {self.template!r}: a parameter must be a whole level"
                )
        object.__setattr__(self, "levels", levels)
        object.__setattr__(
            self, "parameters", tuple(lv[1:-1] for lv in levels if lv.startswith("{"))
        )
        object.__setattr__(
            self, "filter", "/".join("+" if lv.startswith("{") else lv for lv in levels)
        )
        check_filter(self.filter)

    levels: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """The topic levels of the template."""
    parameters: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """Parameter names in order of appearance."""
    filter: str = field(init=False, repr=False, compare=False)
    """The subscription filter: every parameter replaced by ``+``."""

    def format(self, values: Mapping[str, object]) -> str:
        """The concrete topic; each parameter checked with `check_parameter`, the whole
        topic's length too (the template's own levels were checked when it was made)."""
        if not self.parameters:
            return self.template
        out = []
        for level in self.levels:
            if level.startswith("{"):
                name = level[1:-1]
                if name not in values or values[name] is None:
                    raise TopicError(f"topic {self.template!r} needs parameter {name!r}")
                out.append(check_parameter(name, values[name]))
            else:
                out.append(level)
        topic = "/".join(out)
        if len(topic) > _SHORT_ENOUGH:
            size = len(topic.encode())  # the levels hold no surrogate
            if size > MAX_TOPIC_BYTES:
                raise TopicError(
                    f"topic of {self.template!r} {shown(topic)} is {size} bytes long, "
                    f"more than the {MAX_TOPIC_BYTES} of an MQTT topic"
                )
        return topic

    def parse(self, topic: str) -> dict[str, str] | None:
        """The parameters of `topic`, or ``None`` when it does not fit the template."""
        tlevels = _split(topic)
        levels = self.levels
        if len(tlevels) != len(levels):
            return None
        params: dict[str, str] = {}
        for level, value in zip(levels, tlevels, strict=True):
            if level.startswith("{"):
                if not value:
                    return None
                params[level[1:-1]] = value
            elif level != value:
                return None
        return params
