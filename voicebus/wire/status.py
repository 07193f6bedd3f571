"""The status topic: a retained ``voicebus/status/<clientId>`` of ``online`` / ``offline``.

The MQTT transport publishes ``online`` (retained) on every connect. Who has a
status, and what stays behind when the client goes:

- **A named service** (a client id given by the user): ``offline``, retained, on a
  clean stop and as its Last Will (the broker publishes it when the link dies).
  Home Assistant's MQTT ``availability`` reads it as is (``payload_available:
  online``, ``payload_not_available: offline``).
- **A bus with a generated client id** (``voicebus-`` + 12 hex digits, new every
  run): no status by default (``BusConfig.status`` None): nobody can address it,
  and a retained ``offline`` per run would pile up with no one to clear it. With
  ``status=True`` it announces ``online``, and a clean stop and its Last Will
  publish an empty retained message, which clears the status (live subscribers
  see an empty payload: gone). Either way nothing of it stays retained.
"""

from __future__ import annotations

import re

STATUS_PREFIX = "voicebus/status/"
ONLINE = b"online"
OFFLINE = b"offline"
GONE = b""
"""The status a generated client id leaves: an empty retained message clears it."""

GENERATED_CLIENT_ID = re.compile(r"voicebus-[0-9a-f]{12}")
"""The client ids `EventBus` generates when given none (``voicebus-`` + 12 hex digits)."""

_NOT_IN_A_LEVEL = str.maketrans({"/": "_", "+": "_", "#": "_", "\x00": "_"})


def status_topic(client_id: str) -> str:
    """The status topic of `client_id` (characters that split a topic level become ``_``)."""
    return STATUS_PREFIX + (client_id.translate(_NOT_IN_A_LEVEL) or "_")


def is_generated(client_id: str) -> bool:
    """`client_id` is one `EventBus` generated (it changes every run)."""
    return GENERATED_CLIENT_ID.fullmatch(client_id) is not None


def offline_payload(client_id: str) -> bytes:
    """What `client_id`'s status becomes on a clean stop and in its Last Will:
    ``offline``, or `GONE` (cleared) for a generated client id."""
    return GONE if is_generated(client_id) else OFFLINE
