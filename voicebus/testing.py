"""Turn a recorded interaction into a regression test of your pipeline.

```python
from voicebus import EventBus
from voicebus.testing import load_recording, record, replay, traces

recorded = load_recording("tests/weather.jsonl")        # made with `voicebus record`
async with my_pipeline(url), EventBus(url) as bus, record(url) as now:
    await replay(bus, recorded.roots(), speed=0)        # what started each utterance
    ...                                                 # wait for the last event
for before, after in zip(traces(recorded), traces(now), strict=True):
    assert after.hops() == before.hops()                # same services, same events
```

`replay` publishes recorded messages again through a bus (new ids,
``metadata["replayed_from"]`` naming the originals); ``recording.roots()`` is
the first message of each utterance, so the services under test produce the
rest. `record` collects every message on a broker (or a ``memory://`` bus of
this process) as `voicebus record` would. The file format is documented in
`voicebus.ops.recording`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .config import BusConfig
from .ops.recording import (
    RecordedMessage,
    Recording,
    load_recording,
    record_message,
    replay,
)
from .ops.trace import Trace, TraceRow, traces
from .transport import Message, open_transport, parse_url
from .wire.topics import check_filter

__all__ = [
    "RecordedMessage",
    "Recording",
    "Trace",
    "TraceRow",
    "load_recording",
    "record",
    "replay",
    "traces",
]


@asynccontextmanager
async def record(url: str, topic_filter: str = "#") -> AsyncIterator[Recording]:
    """Record the messages on `topic_filter` while the block runs (the subscription is
    acknowledged when the block starts); retained messages from before are left out."""
    recording = Recording()

    def on_message(message: Message) -> None:
        if not message.retain:
            recording.append(record_message(message, time.time()))

    transport = open_transport(
        parse_url(url),
        client_id=f"voicebus-recorder-{uuid.uuid4().hex[:8]}",
        settings=BusConfig(status=False),
    )
    await transport.connect(on_message)
    try:
        await transport.subscribe(check_filter(topic_filter), 1)
        yield recording
    finally:
        await transport.close()
