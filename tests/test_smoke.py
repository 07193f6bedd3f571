from tests.helpers import Collector
from voicebus import EventBus, EventType


async def test_roundtrip(bus: EventBus) -> None:
    got = Collector()
    bus.subscribe(EventType.SPEECH_DETECTED, got)
    await bus.emit(EventType.SPEECH_DETECTED, {"text": "hi"})
    events = await got.wait(1)
    assert events[0].data["text"] == "hi"
