"""The status topic: a retained ``voicebus/status/<clientId>`` of ``online`` / ``offline``.

The MQTT transport publishes ``online`` (retained) on every connect, ``offline`` on
a clean stop, and registers ``offline`` as its Last Will, so the broker publishes
it when the link dies. Home Assistant's MQTT ``availability`` reads it as is
(``payload_available: online``, ``payload_not_available: offline``).
"""

from __future__ import annotations

STATUS_PREFIX = "voicebus/status/"
ONLINE = b"online"
OFFLINE = b"offline"

_NOT_IN_A_LEVEL = str.maketrans({"/": "_", "+": "_", "#": "_", "\x00": "_"})


def status_topic(client_id: str) -> str:
    """The status topic of `client_id` (characters that split a topic level become ``_``)."""
    return STATUS_PREFIX + (client_id.translate(_NOT_IN_A_LEVEL) or "_")
