"""Home Assistant MQTT discovery configs: one device per site, one per service.

A site device (``voicebus <siteId>``) has an ``event`` entity for the wake word
(read from the wake-word route's own topic filter, filtered by ``siteId``) and
three ``sensor``s read from the site's state topic: last transcript, last
response, TTS state (``speaking``/``idle``). Their availability is the bridge's
own status topic. A service device (``voicebus <client_id>``) has one
``connectivity`` binary sensor read from ``voicebus/status/<client_id>``, with
no availability of its own: it is "off" when the service is gone, also when the
bridge is gone.

Entity ids come from ``object_id``: ``event.voicebus_<site>_wake_word``,
``sensor.voicebus_<site>_transcript``, ``sensor.voicebus_<site>_response``,
``sensor.voicebus_<site>_tts``, ``binary_sensor.voicebus_<client_id>_status``
(``<site>``/``<client_id>`` as `slug` makes them, then lower case with ``_`` for
``-``, as Home Assistant does).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from .. import __version__
from ..wire.events import EventType
from ..wire.routes import ROUTES
from ..wire.status import OFFLINE, ONLINE, status_topic
from .state import IDLE, SPEAKING, STATE_TOPIC

DEFAULT_PREFIX = "homeassistant"
"""Home Assistant's default discovery prefix (its birth topic is ``<prefix>/status``)."""
WAKE_EVENT_TYPE = "detected"
"""The ``event_type`` of a wake-word event (``wakewordId`` is an event attribute)."""

_NOT_SLUG = re.compile(r"[^A-Za-z0-9_-]+")
_ORIGIN = {"name": "voicebus", "sw_version": __version__}

Config = tuple[str, dict[str, Any]]
"""A discovery topic and its config (`payload` makes the bytes)."""


def slug(name: str) -> str:
    """`name` as a discovery topic level (``[A-Za-z0-9_-]``); a name that had to
    change gets a short hash of the original, so two never meet. (Home Assistant
    makes the entity id lower case, with ``_`` for ``-``.)"""
    made = _NOT_SLUG.sub("_", name) or "x"
    if made != name:
        made += "_" + hashlib.sha1(name.encode()).hexdigest()[:6]
    return made


def payload(config: dict[str, Any]) -> bytes:
    return json.dumps(config, ensure_ascii=False).encode()


def _text_sensor(key: str) -> str:
    """A state template for a text field: at most 255 characters (Home Assistant's
    limit for a state; the whole text is in the attributes), ``None`` when unset."""
    return f"{{% set v = value_json.get('{key}') %}}{{{{ v[:255] if v is string else 'None' }}}}"


def site_configs(site_id: str, bridge_id: str, prefix: str = DEFAULT_PREFIX) -> list[Config]:
    """The discovery configs of site `site_id` (bridge client id `bridge_id`)."""
    node = f"voicebus_{slug(site_id)}"
    state = STATE_TOPIC.format({"siteId": site_id})
    common: dict[str, Any] = {
        "availability_topic": status_topic(bridge_id),
        "payload_available": ONLINE.decode(),
        "payload_not_available": OFFLINE.decode(),
        "device": {
            "identifiers": [node],
            "name": f"voicebus {site_id}",
            "manufacturer": "voicebus",
            "model": "site",
        },
        "origin": _ORIGIN,
    }
    quoted = json.dumps(site_id)
    wake = {
        **common,
        "name": "Wake word",
        "unique_id": f"{node}_wake_word",
        "object_id": f"{node}_wake_word",
        "state_topic": ROUTES.get(EventType.WAKE_WORD_DETECTED).filter,
        "event_types": [WAKE_EVENT_TYPE],
        "value_template": (
            f"{{% if value_json.get('siteId', 'default') == {quoted} %}}"
            f"{{{{ {{'event_type': '{WAKE_EVENT_TYPE}', "
            "'wakewordId': value_json.get('wakewordId', value_json.get('modelId')), "
            "'sessionId': value_json.get('sessionId')} | tojson }}{% endif %}"
        ),
        "icon": "mdi:account-voice",
    }
    sensors = {
        "transcript": ("Last transcript", _text_sensor("transcript"), "mdi:text-recognition"),
        "response": ("Last response", _text_sensor("response"), "mdi:message-reply-text"),
    }
    configs: list[Config] = [(f"{prefix}/event/{node}/wake_word/config", wake)]
    for key, (name, template, icon) in sensors.items():
        configs.append(
            (
                f"{prefix}/sensor/{node}/{key}/config",
                {
                    **common,
                    "name": name,
                    "unique_id": f"{node}_{key}",
                    "object_id": f"{node}_{key}",
                    "state_topic": state,
                    "value_template": template,
                    "json_attributes_topic": state,
                    "icon": icon,
                },
            )
        )
    tts = {
        **common,
        "name": "TTS",
        "unique_id": f"{node}_tts",
        "object_id": f"{node}_tts",
        "state_topic": state,
        "value_template": f"{{{{ value_json.get('tts', '{IDLE}') }}}}",
        "device_class": "enum",
        "options": [SPEAKING, IDLE],
        "icon": "mdi:account-tie-voice",
    }
    configs.append((f"{prefix}/sensor/{node}/tts/config", tts))
    return configs


def service_config(client_id: str, prefix: str = DEFAULT_PREFIX) -> Config:
    """The discovery config of the connectivity sensor of service `client_id`."""
    node = f"voicebus_{slug(client_id)}"
    return (
        f"{prefix}/binary_sensor/{node}/status/config",
        {
            "name": "Connected",
            "unique_id": f"{node}_status",
            "object_id": f"{node}_status",
            "state_topic": status_topic(client_id),
            "payload_on": ONLINE.decode(),
            "payload_off": OFFLINE.decode(),
            "device_class": "connectivity",
            "device": {
                "identifiers": [node],
                "name": f"voicebus {client_id}",
                "manufacturer": "voicebus",
                "model": "service",
            },
            "origin": _ORIGIN,
        },
    )
