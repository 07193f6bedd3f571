"""Binary payloads: routes whose payload is raw bytes, never JSON (Hermes audio).

A binary route names the `Event.data` key that holds the bytes (its ``body``,
``"wav"`` for audio) and a content type; its other keys are topic parameters.
The bytes go on the topic exactly as given and come back exactly as received:
nothing is encoded, decoded or copied into JSON. The envelope still travels in
MQTT 5 properties, so a binary event has an id, a source and a correlation id
like any other (the payload has no room for a ``sessionId``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator

JSON = "application/json"
"""The content type of every JSON route."""
OCTETS = "application/octet-stream"
"""The default content type of a user's binary route (`register_route(..., body=)`)."""
WAV = "audio/wav"
"""The content type of the Hermes audio routes (AUDIO_FRAME, PLAY_BYTES)."""
WAV_KEY = "wav"
"""The `Event.data` key of the bytes of an audio route (rhasspy-hermes ``wav_bytes``)."""


def wav_problem(payload: bytes) -> str | None:
    """Why `payload` is not a RIFF/WAVE file (its 12-byte header), or None."""
    if len(payload) < 12:
        return f"{len(payload)} bytes: too short for a RIFF/WAVE header (12 bytes)"
    if payload[:4] != b"RIFF" or payload[8:12] != b"WAVE":
        return f"not a RIFF/WAVE file: header {payload[:12]!r}"
    return None


def _wav_bytes(value: Any) -> bytes:
    """Bytes (or a bytearray, memoryview) of a WAV file; anything else is refused."""
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise ValueError(f"must be the bytes of a WAV file, got {type(value).__name__}")
    problem = wav_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


WavBytes = Annotated[bytes, BeforeValidator(_wav_bytes)]
"""A model field holding a whole WAV file (RIFF/WAVE header checked)."""


def body_of(data: dict[str, Any]) -> bytes | None:
    """The raw bytes of a binary event's data (its one bytes value), else None."""
    for value in data.values():
        if isinstance(value, bytes):
            return value
    return None


def binary_schema(content_type: str) -> dict[str, Any]:
    """The JSON Schema of a binary payload (a string of raw bytes, not JSON)."""
    return {
        "type": "string",
        "format": "binary",
        "contentMediaType": content_type,
    }
