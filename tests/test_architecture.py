"""The layout keeps its promises: small modules, imports that follow the flow, and
private paho/aiomqtt internals in one place (DESIGN.md, "The rooms").

Imports are read with `ast` from the source (relative imports resolved; imports
inside functions and under ``if TYPE_CHECKING:`` count too), never by importing.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "voicebus"

MAX_LINES = 420
TOO_LONG_FOR_NOW: set[str] = set()  # none left: a module that grows past it gets split

PRIVATE_MQTT_NAMES = {
    "_handle_publish",
    "_in_packet",
    "_send_puback",
    "_sock",
    "_sock_close",
    "_disconnected",
    "_client",  # aiomqtt.Client._client, the paho client (not a module's own self._client)
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@functools.cache
def _imports(module: str) -> frozenset[str]:
    """The voicebus modules `module` imports, anywhere in its source."""
    path = _modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names}
            found.update(submodules & set(_modules()))
            if not submodules <= set(_modules()):  # names from `target` itself
                found.add(target)
    return frozenset(name for name in found if name.split(".")[0] == "voicebus")


def _in(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _reachable(module: str) -> set[str]:
    """The modules `module` imports, directly or through others."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for imported in _imports(todo.pop()):
            if imported in _modules() and imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


def test_the_import_reader_sees_what_the_package_imports() -> None:
    """The checks below are only as good as the graph: spot-check it."""
    assert "voicebus.deadletters" in _imports("voicebus.bus")  # module level
    assert "voicebus.service" in _imports("voicebus.bus")  # inside a function
    assert "voicebus.bus" in _imports("voicebus.ops.retained")  # under TYPE_CHECKING
    assert "voicebus.transport.mqtt.link" in _imports("voicebus.transport.mqtt.transport")
    assert "voicebus.cli.output" in _imports("voicebus.cli.app")  # from . import output
    assert "voicebus.wire.routes" in _reachable("voicebus.bus")


def test_no_module_is_too_long() -> None:
    """A module past ~400 lines is asking to be split by concept (STYLE.md)."""
    sizes = {
        path.relative_to(ROOT).as_posix(): len(path.read_text("utf-8").splitlines())
        for path in _modules().values()
    }
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert set(too_long) <= TOO_LONG_FOR_NOW, f"over {MAX_LINES} lines: {too_long}"


@pytest.mark.parametrize(
    ("room", "forbidden"),
    [
        # The transport is the bottom layer: it may use errors, config and wire only.
        (
            "voicebus.transport",
            (
                "voicebus.bus",
                "voicebus.connection",
                "voicebus.receive",
                "voicebus.deadletters",
                "voicebus.ops",
                "voicebus.cli",
                "voicebus.singleton",
            ),
        ),
        # The wire does no I/O: nothing that connects, receives or publishes.
        (
            "voicebus.wire",
            (
                "voicebus.transport",
                "voicebus.receive",
                "voicebus.ops",
                "voicebus.bus",
                "voicebus.connection",
                "voicebus.cli",
                "voicebus.deadletters",
                "voicebus.singleton",
            ),
        ),
    ],
)
def test_a_room_imports_nothing_above_it(room: str, forbidden: tuple[str, ...]) -> None:
    wrong = {
        f"{module} imports {imported}"
        for module in _modules()
        if _in(module, room)
        for imported in _imports(module)
        # `voicebus` itself re-exports the bus: importing it imports everything
        if (_in(imported, *forbidden) or imported == "voicebus")
    }
    assert not wrong, sorted(wrong)


def test_no_import_cycle_between_bus_deadletters_ops_and_transport() -> None:
    rooms = (
        "voicebus.bus",
        "voicebus.connection",
        "voicebus.deadletters",
        "voicebus.ops",
        "voicebus.transport",
    )
    reach: dict[str, set[str]] = {room: set() for room in rooms}
    for module in _modules():
        for room in rooms:
            if _in(module, room):
                reach[room].update(
                    other for other in rooms if any(_in(m, other) for m in _reachable(module))
                )
    cycles = {
        f"{a} <-> {b}"
        for a in rooms
        for b in rooms
        if a < b and b in reach[a] and a in reach[b]
    }
    assert not cycles, sorted(cycles)


def _private_mqtt_access(source: str) -> set[str]:
    """Where `source` touches a private paho/aiomqtt name: ``"<line>: <name>"``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_MQTT_NAMES:
            own = isinstance(node.value, ast.Name) and node.value.id == "self"
            if not (own and node.attr == "_client"):
                found.add(f"{node.lineno}: {node.attr}")
        elif isinstance(node, ast.Constant) and node.value in PRIVATE_MQTT_NAMES:
            found.add(f"{node.lineno}: {node.value}")  # getattr(client, "_sock")
    return found


def test_the_private_mqtt_reader_finds_them() -> None:
    source = "c._client._sock\nself._client = None\ngetattr(paho, '_in_packet')\n"
    assert _private_mqtt_access(source) == {"1: _sock", "1: _client", "3: _in_packet"}


def test_private_paho_and_aiomqtt_names_live_in_one_module() -> None:
    """aiomqtt 3 drops paho: these patches must be easy to find and replace."""
    users = {
        path.relative_to(ROOT).as_posix(): sorted(hits)
        for path in _modules().values()
        if (hits := _private_mqtt_access(path.read_text("utf-8")))
    }
    assert len(users) <= 1, users


def test_no_import_cycle_below_the_cli() -> None:
    """No module of the library reaches back to a module that imports it (type-only
    imports count: they are knots for a reader too). The CLI's own modules are left
    out: its commands and their output helpers know each other."""
    cycles = {
        " <-> ".join(sorted((module, imported)))
        for module in _modules()
        if not _in(module, "voicebus.cli")
        for imported in _imports(module)
        if imported != module and module in _reachable(imported)
    }
    assert not cycles, sorted(cycles)
