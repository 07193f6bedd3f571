"""Home Assistant: per-site state topics and MQTT discovery for voicebus
(``voicebus homeassistant``; see the README, "Home Assistant").

- `state`: the retained ``voicebus/site/<siteId>/state`` JSON and how events change it;
- `discovery`: the discovery configs (one device per site, one per service);
- `bridge`: `HomeAssistantBridge` keeping both on a bus, `serve` running it.
"""

from __future__ import annotations

from .bridge import (
    CLIENT_ID,
    BridgeTopic,
    HomeAssistantBridge,
    bridge_routes,
    serve,
)
from .discovery import DEFAULT_PREFIX, service_config, site_configs, slug
from .state import IDLE, SPEAKING, STATE_TOPIC, SiteState, SiteStates

__all__ = [
    "CLIENT_ID",
    "DEFAULT_PREFIX",
    "IDLE",
    "SPEAKING",
    "STATE_TOPIC",
    "BridgeTopic",
    "HomeAssistantBridge",
    "SiteState",
    "SiteStates",
    "bridge_routes",
    "serve",
    "service_config",
    "site_configs",
    "slug",
]
