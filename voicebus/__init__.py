"""voicebus: the event bus for voice assistants, over MQTT the way Rhasspy's Hermes does.

```python
from voicebus import EventBus, EventType, Event

bus = await EventBus.get_instance()      # memory:// unless VOICEBUS_URL is set
await bus.start()
bus.subscribe(EventType.SPEECH_DETECTED, handler)
await bus.emit(EventType.SPEECH_DETECTED, {"text": "Hello world"})
```
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .bus import EventBus
from .config import BusConfig, BusSettings, MqttSettings
from .errors import (
    AuthenticationError,
    BackpressureError,
    BrokerUnavailableError,
    BusStateError,
    ConfigError,
    DeadLetterNotFoundError,
    DecodeError,
    HandlerTimeout,
    NotAuthorizedError,
    PayloadTooLargeError,
    PayloadValidationError,
    PublishTimeoutError,
    RecordingError,
    RequestCancelled,
    TLSError,
    TopicError,
    TransportError,
    UnknownEventTypeError,
    VoicebusError,
)
from .receive.subscriptions import Subscription
from .service import run
from .singleton import emit_event, subscribe_to_events
from .transport import Message
from .wire import hermes_models, models
from .wire.codec import topic_for
from .wire.events import Event, EventType
from .wire.models import Payload
from .wire.routes import ROUTES, Route, RouteTable, register_route

try:
    __version__ = version("voicebus")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "ROUTES",
    "AuthenticationError",
    "BackpressureError",
    "BrokerUnavailableError",
    "BusConfig",
    "BusSettings",
    "BusStateError",
    "ConfigError",
    "DeadLetterNotFoundError",
    "DecodeError",
    "HandlerTimeout",
    "Event",
    "EventBus",
    "EventType",
    "Message",
    "MqttSettings",
    "NotAuthorizedError",
    "Payload",
    "PayloadTooLargeError",
    "PayloadValidationError",
    "PublishTimeoutError",
    "RecordingError",
    "RequestCancelled",
    "Route",
    "RouteTable",
    "Subscription",
    "TLSError",
    "TopicError",
    "TransportError",
    "UnknownEventTypeError",
    "VoicebusError",
    "__version__",
    "emit_event",
    "hermes_models",
    "models",
    "register_route",
    "run",
    "subscribe_to_events",
    "topic_for",
]
