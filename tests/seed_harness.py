"""Run the examples of ``tests/seed/SEED-GUIDE.md`` as they are written.

The guide's ```python blocks are read at test time; the only change made to
their text is the import (``from core.event_bus import`` -> ``from voicebus import``).
Fragments run in a namespace that supplies what the guide leaves to the reader
(``bus``, ``handler``, ``database``...), compiled with top-level ``await`` allowed,
with line numbers that match the guide so a traceback points at the guide's line.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import re
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import voicebus
from tests.helpers import eventually
from voicebus import Event, EventBus

GUIDE = Path(__file__).resolve().parent / "seed" / "SEED-GUIDE.md"
SEED_IMPORT = "from core.event_bus import"
OUR_IMPORT = "from voicebus import"

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[ \t]*$")
_FENCE_CLOSE = re.compile(r"^[ \t]*```[ \t]*$")
_HEADING = re.compile(r"^#{1,6}[ \t]+(?P<title>.+?)[ \t]*$")
_PYTHON = {"python", "py", "python3"}


@dataclass(frozen=True)
class Block:
    """One ```python block of the guide."""

    index: int  # 0-based, in guide order
    key: str  # heading, plus " #n" when a heading has several blocks
    line: int  # 1-based guide line of the first code line
    source: str  # the guide's text, dedented
    code: str  # the text actually run: `source` with only the import changed


def port(source: str) -> str:
    """The one allowed change: import from `voicebus` instead of `core.event_bus`."""
    return source.replace(SEED_IMPORT, OUR_IMPORT)


@functools.cache
def guide_blocks() -> tuple[Block, ...]:
    """Every ```python block of the guide, keyed by the heading above it."""
    lines = GUIDE.read_text(encoding="utf-8").splitlines()
    found: list[tuple[str, int, str]] = []
    heading = "(top)"
    i = 0
    while i < len(lines):
        opening = _FENCE_OPEN.match(lines[i])
        if opening is None:
            title = _HEADING.match(lines[i])
            if title:
                heading = title.group("title")
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and not _FENCE_CLOSE.match(lines[end]):
            end += 1
        if end == len(lines):
            raise ValueError(f"{GUIDE.name}:{i + 1}: unclosed code fence")
        if opening.group("lang").lower() in _PYTHON:
            body = textwrap.dedent("\n".join(lines[start:end])) + "\n"
            found.append((heading, start + 1, body))
        i = end + 1
    per_heading: dict[str, int] = {}
    for heading, _, _ in found:
        per_heading[heading] = per_heading.get(heading, 0) + 1
    seen: dict[str, int] = {}
    blocks = []
    for index, (heading, line, body) in enumerate(found):
        seen[heading] = seen.get(heading, 0) + 1
        key = heading if per_heading[heading] == 1 else f"{heading} #{seen[heading]}"
        blocks.append(Block(index, key, line, body, port(body)))
    return tuple(blocks)


def block(key: str) -> Block:
    """The guide block under heading `key` (see `Block.key`)."""
    for b in guide_blocks():
        if b.key == key:
            return b
    known = "\n  ".join(b.key for b in guide_blocks())
    raise KeyError(f"no python block {key!r} in {GUIDE.name}; blocks:\n  {known}")


def compile_block(b: Block) -> Any:
    """Compile a block with top-level ``await`` allowed, at its guide line numbers."""
    padded = "\n" * (b.line - 1) + b.code
    return compile(padded, str(GUIDE), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


async def run_block(b: Block, namespace: dict[str, Any], timeout: float = 10.0) -> None:
    """Execute `b` in `namespace` (awaiting its top-level awaits), bounded by `timeout`."""
    result = eval(compile_block(b), namespace)
    if result is not None:
        await asyncio.wait_for(result, timeout)


def namespace(**names: Any) -> dict[str, Any]:
    """A module namespace holding what the guide's imports and prose give a fragment.

    The guide's own import lines bring in `EventBus`, `EventType`, `Event`,
    `emit_event` and `subscribe_to_events`; fragments also use `asyncio`, `time`
    and `uuid` without importing them. `names` adds the fragment's collaborators.
    """
    ns: dict[str, Any] = {
        "__name__": "seed_guide_example",
        "asyncio": asyncio,
        "time": time,
        "uuid": uuid,
        "Event": Event,
        "EventBus": EventBus,
        "EventType": voicebus.EventType,
        "emit_event": voicebus.emit_event,
        "subscribe_to_events": voicebus.subscribe_to_events,
    }
    ns.update(names)
    return ns


class Output:
    """What the examples printed, read from pytest's ``capsys`` (and awaitable)."""

    def __init__(self, capsys: Any) -> None:
        self._capsys = capsys
        self._text = ""

    @property
    def text(self) -> str:
        self._text += self._capsys.readouterr().out
        return self._text

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def count(self, needle: str) -> int:
        return self.text.count(needle)

    async def wait_for(self, needle: str, count: int = 1, timeout: float = 5.0) -> str:
        """Wait until `needle` was printed `count` times; the output so far."""
        try:
            await eventually(lambda: self.count(needle) >= count, timeout)
        except AssertionError:
            raise AssertionError(
                f"{needle!r} printed {self.count(needle)} time(s), expected {count}; "
                f"output was:\n{self.text}"
            ) from None
        return self.text


async def when_waiting(bus: EventBus, then: Callable[[], Any], timeout: float = 5.0) -> None:
    """Run `then()` once `bus` has a pending `wait_for` (a responder for the guide's
    emit-then-wait examples: the answer comes after the question is listened for)."""
    try:
        await eventually(lambda: bus.get_stats()["pending_waits"] > 0, timeout)
    except AssertionError:
        raise AssertionError("the example never called wait_for") from None
    result = then()
    if asyncio.iscoroutine(result):
        await result
