"""Typed configuration: one documented place, refused where it cannot apply, no password shown."""

from __future__ import annotations

import itertools

import pytest

from voicebus import BusConfig, ConfigError, EventBus


def test_mqtt_only_setting_on_memory_is_refused() -> None:
    with pytest.raises(ConfigError, match="session_expiry only applies to mqtt://"):
        EventBus("memory://", session_expiry=60)
    with pytest.raises(ConfigError, match="keepalive, outbox_size only apply"):
        EventBus("memory://", config=BusConfig(keepalive=5, outbox_size=3))


def test_bus_settings_apply_on_memory() -> None:
    bus = EventBus("memory://", max_queue_size=7, enable_history=False)
    assert bus.max_queue_size == 7
    assert bus.config.enable_history is False


def test_keyword_overrides_config() -> None:
    bus = EventBus("mqtt://127.0.0.1:1", config=BusConfig(keepalive=5), keepalive=9)
    assert bus.config.keepalive == 9


def test_no_password_in_url_or_repr() -> None:
    bus = EventBus("mqtt://user:s3cret@127.0.0.1:1883", password="other-s3cret")
    shown = [bus.url, repr(bus.broker), repr(bus.config), str(bus.get_stats())]
    for text in shown:
        assert "s3cret" not in text, text
    assert bus.url == "mqtt://user:***@127.0.0.1:1883"
    assert bus.broker.password == "s3cret"


def test_every_setting_is_documented() -> None:
    import ast
    import inspect

    import voicebus.config as config

    tree = ast.parse(inspect.getsource(config))
    documented: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in ("MqttSettings", "BusConfig"):
            for stmt, after in itertools.pairwise(node.body):
                is_doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                if is_doc and isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    documented.add(stmt.target.id)
    from dataclasses import fields

    assert {f.name for f in fields(BusConfig)} == documented


def test_readme_lists_every_setting_with_its_default() -> None:
    """README "Settings" has one row per `BusConfig` field, with the current default."""
    from dataclasses import fields
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
    section = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    defaults = BusConfig()
    for f in fields(BusConfig):
        row = f"| `{f.name}` | `{getattr(defaults, f.name)!r}` |"
        assert row in section, f"README Settings: no row {row}"
