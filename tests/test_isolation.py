"""No handler can change what another sees: a received `Event` is read-only (see
`voicebus.wire.events.Event`), on memory:// (where the validated payload is handed
over in-process, `voicebus.wire.handover`) as on MQTT."""

from __future__ import annotations

from typing import Any

from tests.helpers import Collector, eventually, marker
from voicebus import Event, EventBus, EventType
from voicebus.wire.events import FrozenDict
from voicebus.wire.routes import ROUTES, RouteTable

DATA: dict[str, Any] = {
    "text": "lights on",
    "confidence": 0.5,
    "tags": ["a", {"b": [1, 2]}],
    "nested": {"x": {"y": None}, "n": 3},
    "pair": (1, 2),  # comes back as a JSON array: a list, on both transports
}
RECEIVED = {
    **DATA,
    "pair": [1, 2],
    "likelihood": 0.5,
    "seconds": 0.0,
    "siteId": "default",
    "sessionId": "s-1",
}


REFUSED: list[str] = []


def _vandal(event: Event) -> None:
    attempts = {
        "set a key": lambda: event.data.__setitem__("text", "changed"),
        "nested list": lambda: event.data["tags"][1]["b"].append(3),
        "nested dict": lambda: event.data["nested"]["x"].update(y="set"),
        "pop": lambda: event.data.pop("confidence"),
        "metadata": lambda: event.metadata.__setitem__("mine", True),
        "metadata list": lambda: event.metadata["k"].append(2),
        "attribute": lambda: setattr(event, "correlation_id", "stolen"),
        "data": lambda: setattr(event, "data", {}),
    }
    for what, attempt in attempts.items():
        try:
            attempt()  # type: ignore[no-untyped-call]
        except (TypeError, AttributeError):
            REFUSED.append(what)
    mine = event.copy()  # a copy is the handler's own to change
    mine.data["tags"][1]["b"].append(4)
    mine.metadata["mine"] = True


async def test_a_handler_cannot_change_what_other_handlers_see(
    bus: EventBus, peer: EventBus
) -> None:
    after = Collector("after")
    elsewhere = Collector("elsewhere")
    bus.subscribe(EventType.SPEECH_DETECTED, _vandal, priority=10)
    bus.subscribe(EventType.SPEECH_DETECTED, after)
    peer.subscribe(EventType.SPEECH_DETECTED, _vandal, priority=10)
    peer.subscribe(EventType.SPEECH_DETECTED, elsewhere)
    await peer.ready()
    waiting = bus.wait_for(EventType.SPEECH_DETECTED, timeout=5)
    sent = await bus.emit(
        EventType.SPEECH_DETECTED, DATA, correlation_id="s-1", metadata={"k": [1]}
    )
    sent.data["text"] = "changed by the sender"  # after emit: reaches nobody
    sent.metadata["k"].append(2)
    (got,) = await after.wait(1)
    (there,) = await elsewhere.wait(1)
    waited = await waiting
    await marker(bus)
    assert len(REFUSED) == 16, REFUSED  # 8 attempts on each bus, every one refused
    REFUSED.clear()
    for event in (got, there, waited, peer.get_event_history(EventType.SPEECH_DETECTED)[-1]):
        assert event is not None
        assert event.data == RECEIVED, event
        assert event.metadata == {"k": [1]}
        assert event.correlation_id == "s-1"
        assert event.id == sent.id and event.timestamp == sent.timestamp


async def test_received_events_have_the_same_shape_on_both_transports(
    bus: EventBus, peer: EventBus
) -> None:
    got = Collector()
    peer.subscribe(EventType.SPEECH_DETECTED, got)
    peer.subscribe(EventType.TTS_COMPLETED, got)
    await peer.ready()
    await bus.emit(EventType.SPEECH_DETECTED, {"text": "x", "n": float("inf"), "sessionId": "s"})
    await bus.emit(EventType.TTS_COMPLETED, {"id": "say-1", "when": {1, 2}})
    first, second = await got.wait(2)
    assert first.data["n"] == float("inf")  # pydantic-core's JSON keeps it
    assert first.correlation_id == "s"  # from the payload's sessionId
    assert second.data == {"siteId": "default", "id": "say-1", "when": [1, 2]}  # a set: JSON
    assert isinstance(first.data, dict) and isinstance(first.metadata, dict)
    assert type(first.data) is type(second.data) is FrozenDict  # the same on both transports


async def test_a_bus_with_another_route_table_decodes_the_bytes() -> None:
    """The hand-over carries the sender's event type: a bus whose route table does
    not know the topic gets no event of it (as over MQTT), only an unrouted count."""
    url = f"memory://routes-{id(object())}"
    got = Collector()
    table = RouteTable([ROUTES.get(EventType.CANCELLED)])  # every bus needs that one
    async with EventBus(url) as sender, EventBus(url, routes=table) as other:
        other.subscribe("hermes/#", got)
        await other.ready()
        await sender.emit(EventType.SPEECH_DETECTED, {"text": "hi"})
        await sender.emit(EventType.TTS_COMPLETED, {"id": "x"})
        await eventually(lambda: other.get_stats()["metrics"]["unrouted_messages"] == 2)
        assert got.events == []
