"""The public API is what `voicebus.__all__` says, and the names issues rely on are in it."""

import voicebus


def test_all_exports_exist_once() -> None:
    for name in voicebus.__all__:
        assert hasattr(voicebus, name), name
    assert len(set(voicebus.__all__)) == len(voicebus.__all__)


def test_names_other_parts_depend_on() -> None:
    for name in (
        "EventBus",
        "EventType",
        "Event",
        "VoicebusError",
        "topic_for",
        "emit_event",
        "subscribe_to_events",
        "register_route",
        "PayloadValidationError",
        "AuthenticationError",
        "TLSError",
        "NotAuthorizedError",
        "BackpressureError",
        "PayloadTooLargeError",
        "BusConfig",
        "BusSettings",
        "MqttSettings",
        "Message",
        "ConfigError",
        "run",
    ):
        assert name in voicebus.__all__, name
    assert issubclass(voicebus.PayloadValidationError, voicebus.VoicebusError)
    assert issubclass(voicebus.TransportError, voicebus.VoicebusError)


def test_bus_settings_match_bus_config() -> None:
    """`BusSettings` (the typed keyword arguments) names exactly the `BusConfig` fields."""
    from dataclasses import fields
    from typing import get_type_hints

    hints = get_type_hints(voicebus.BusSettings)
    config_hints = get_type_hints(voicebus.BusConfig)
    assert set(hints) == {f.name for f in fields(voicebus.BusConfig)}
    for name, hint in hints.items():
        assert hint == config_hints[name], name
