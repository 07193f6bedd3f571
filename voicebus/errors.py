"""The voicebus error tree: every error voicebus raises is a `VoicebusError`."""

from __future__ import annotations


class VoicebusError(Exception):
    """Base class of every error raised by voicebus."""


class PayloadValidationError(VoicebusError, ValueError):
    """A payload does not match the model of its event type."""

    def __init__(self, event_type: str, fields: list[str], detail: str) -> None:
        self.event_type = event_type
        self.fields = fields
        names = ", ".join(fields) or "payload"
        super().__init__(f"invalid {event_type} payload, field(s) {names}: {detail}")


class TopicError(VoicebusError, ValueError):
    """A topic, topic filter or topic parameter is not acceptable."""


class UnknownEventTypeError(VoicebusError, LookupError):
    """No route is registered for an event type or topic.

    `suggestions` holds close event type names (a "did you mean"), when there are any.
    """

    def __init__(self, message: str, suggestions: list[str] | None = None) -> None:
        super().__init__(message)
        self.suggestions = suggestions or []


class DecodeError(VoicebusError):
    """An inbound message could not be turned into an `Event`.

    `reason` is a short machine-readable code (``invalid_utf8``, ``invalid_json``,
    ``not_an_object``, ``validation``, ``unknown_topic``).
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class BusStateError(VoicebusError, RuntimeError):
    """The bus is not in a state that allows the operation (e.g. not started)."""


class TransportError(VoicebusError, ConnectionError):
    """The transport failed (broker unreachable, connection lost, ...)."""


class BrokerUnavailableError(TransportError):
    """The broker could not be reached."""


class AuthenticationError(TransportError):
    """The broker refused the credentials."""


class TLSError(TransportError):
    """The TLS handshake or certificate verification failed."""


class NotAuthorizedError(TransportError):
    """The broker refused a publish or subscribe (ACL)."""


class BrokerTimeoutError(TransportError):
    """The broker did not answer in time (connected, but slow or stuck)."""


class PublishTimeoutError(TransportError):
    """The broker did not acknowledge a publish in time."""


class RequestCancelled(VoicebusError):
    """A `wait_for` / `request` was waiting on a correlation id that was cancelled
    (`EventBus.cancel`, from any process): the utterance was abandoned."""

    def __init__(self, correlation_id: str, reason: str) -> None:
        self.correlation_id = correlation_id
        self.reason = reason
        super().__init__(
            f"correlation id {correlation_id!r} was cancelled ({reason}): its utterance "
            "was abandoned; start a new request with a new correlation id if still needed"
        )


class HandlerTimeout(VoicebusError, TimeoutError):
    """A handler ran past its ``subscribe(..., timeout=)`` deadline and was cancelled
    (dead letter reason ``handler_timeout``)."""

    reason = "handler_timeout"
    """The dead-letter reason of such a handler."""


class PayloadTooLargeError(VoicebusError, ValueError):
    """An encoded payload exceeds the configured maximum size."""


class BackpressureError(VoicebusError):
    """The outbox is full: the event was not accepted (nothing was dropped silently)."""


class ConfigError(VoicebusError, TypeError):
    """A setting that is unknown, or does not apply to this bus's URL."""


class DeadLetterNotFoundError(VoicebusError, LookupError):
    """No retained dead letter with that id on the broker."""


class DemoError(VoicebusError):
    """The simulated pipeline stalled (a service did not answer in time)."""


class RecordingError(VoicebusError, ValueError):
    """A recording (``voicebus record``'s JSON Lines) that cannot be read or replayed."""


class UnsupportedDependencyError(VoicebusError, RuntimeError):
    """An installed dependency (paho-mqtt, aiomqtt) is outside the versions voicebus supports."""
