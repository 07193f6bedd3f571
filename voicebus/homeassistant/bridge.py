"""The Home Assistant bridge: per-site state topics and MQTT discovery, on one bus.

```python
async with EventBus(url, client_id="voicebus-homeassistant", routes=bridge_routes()) as bus:
    bridge = HomeAssistantBridge(bus, sites=["kitchen", "office"])
    await bridge.start()
    await bus.run_forever()
```

`serve` does just that (``voicebus homeassistant`` runs it). The bus needs the
route table of `bridge_routes`: the default routes plus two raw ones the bridge
listens to, ``voicebus/status/<client_id>`` (each service's retained status) and
``<prefix>/status`` (Home Assistant's birth message).

- Sites: those given, those of retained state topics found at start (a restart
  keeps them), and every site an event names later. Each gets its discovery
  configs once known and its state topic kept up to date (retained).
- Services: every status, except those of buses with a generated client id
  (`voicebus.wire.status.is_generated`: a throwaway process, not a service); an
  emptied status (``voicebus status --prune``) removes the service's sensor.
- Discovery is published at start, for each new site and service, and again
  whenever Home Assistant's birth message (``online``) arrives, as HA asks of a
  discovery publisher (the site states too: a broker restart may have lost them).
  It is not retained: nothing stays behind on the broker when the bridge is
  uninstalled; Home Assistant keeps the entities it saw.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from enum import Enum

from ..bus import EventBus
from ..errors import BusStateError, ConfigError
from ..ops.retained import read_retained
from ..receive.subscriptions import Subscription
from ..wire.binary import JSON, OCTETS
from ..wire.events import Event
from ..wire.message import Message
from ..wire.models import BinaryPayload
from ..wire.routes import ROUTES, Route, RouteTable
from ..wire.status import ONLINE, STATUS_PREFIX, is_generated
from ..wire.topics import TopicTemplate
from .discovery import DEFAULT_PREFIX, payload, service_config, site_configs
from .state import STATE_TOPIC, TRACKED, SiteState, SiteStates, valid_site

log = logging.getLogger("voicebus.homeassistant")

CLIENT_ID = "voicebus-homeassistant"
"""The bridge's default client id (its status topic is its entities' availability)."""


class BridgeTopic(str, Enum):
    """The raw topics the bridge listens to (routes of `bridge_routes` only)."""

    SERVICE_STATUS = "voicebus_service_status"
    HA_STATUS = "homeassistant_status"


class RawPayload(BinaryPayload):
    """A payload taken as it comes (``online``, ``offline``, empty: cleared)."""

    payload: bytes


class ServiceStatus(RawPayload):
    """A service's retained status; its client id is the topic's last level."""

    client_id: str


def bridge_routes(prefix: str = DEFAULT_PREFIX, routes: Iterable[Route] = ROUTES) -> RouteTable:
    """`routes` (default: every registered route) plus the bridge's raw topics."""
    status = TopicTemplate(STATUS_PREFIX + "{clientId}")
    birth = TopicTemplate(f"{prefix}/status")
    return RouteTable(
        [
            *routes,
            Route(
                BridgeTopic.SERVICE_STATUS,
                status,
                ServiceStatus,
                frozenset(status.parameters),
                body="payload",
                content_type=OCTETS,
            ),
            Route(BridgeTopic.HA_STATUS, birth, RawPayload, body="payload", content_type=OCTETS),
        ]
    )


class HomeAssistantBridge:
    """Keeps per-site state topics and Home Assistant discovery on `bus`.

    Args:
        bus: a bus made with ``routes=bridge_routes(prefix)``; its client id's status
            topic is the availability of the site entities.
        sites: sites to announce before any event names them.
        prefix: Home Assistant's discovery prefix.
    """

    def __init__(
        self, bus: EventBus, *, sites: Iterable[str] = (), prefix: str = DEFAULT_PREFIX
    ) -> None:
        routes = bus.routes
        if BridgeTopic.HA_STATUS not in routes or BridgeTopic.SERVICE_STATUS not in routes:
            raise ConfigError("the bridge's bus needs routes=bridge_routes(prefix)")
        birth = routes.get(BridgeTopic.HA_STATUS).template.template
        if birth != f"{prefix}/status":
            raise ConfigError(
                f"the bridge's bus listens to {birth}, not {prefix}/status: make it with "
                f"routes=bridge_routes({prefix!r}) (the same discovery prefix)"
            )
        self.bus = bus
        self.prefix = prefix
        self.states = SiteStates()
        self.services: set[str] = set()
        """Client ids with a connectivity sensor."""
        self.discovery_rounds = 0
        """How often the whole discovery was published (start, birth messages)."""
        self._sites = list(sites)
        for site in self._sites:
            if not valid_site(site):
                raise ConfigError(f"site {site!r} cannot name a topic level")
        self._announced: set[str] = set()
        self._lock = asyncio.Lock()
        self._subscriptions: list[Subscription] = []

    async def start(self, timeout: float = 5.0) -> None:
        """Read the retained site states, subscribe, announce; then serve (the bus's
        handlers do the rest)."""
        if self._subscriptions:
            raise BusStateError("the bridge is already started")
        found = await read_retained(self.bus, STATE_TOPIC.filter, timeout=timeout)
        for topic, raw in found.items():
            params = STATE_TOPIC.parse(topic)
            if params is not None and valid_site(params["siteId"]):
                site = params["siteId"]
                self.states.sites.setdefault(site, SiteState.from_payload(site, raw))
        for site in self._sites:
            state, new = self.states.add(site)
            if new:
                await self._publish_state(state)
        subscribe = self.bus.subscribe
        self._subscriptions = [subscribe(event_type, self._on_event) for event_type in TRACKED]
        self._subscriptions.append(subscribe(BridgeTopic.SERVICE_STATUS, self._on_status))
        self._subscriptions.append(subscribe(BridgeTopic.HA_STATUS, self._on_birth))
        await self.bus.ready()
        await self.publish_discovery()

    def close(self) -> None:
        """Stop bridging (unsubscribe); the retained states stay on the broker."""
        for subscription in self._subscriptions:
            self.bus.unsubscribe(subscription)
        self._subscriptions = []

    async def publish_discovery(self) -> None:
        """Publish every discovery config (every site, every service)."""
        async with self._lock:
            self.discovery_rounds += 1
            for site in list(self.states.sites):
                await self._announce_site(site)
            for client_id in sorted(self.services):
                await self._publish_config(*service_config(client_id, self.prefix))

    async def _announce_site(self, site: str) -> None:
        self._announced.add(site)
        for topic, config in site_configs(site, self.bus.client_id, self.prefix):
            await self._publish_config(topic, config)

    async def _publish_config(self, topic: str, config: dict[str, object] | None) -> None:
        body = b"" if config is None else payload(config)
        await self.bus.publish_message(Message(topic, body, 1, False, content_type=JSON))

    async def _publish_state(self, state: SiteState) -> None:
        message = Message(state.topic, state.payload(), 1, True, content_type=JSON)
        await self.bus.publish_message(message)

    async def _on_event(self, event: Event) -> None:
        state = self.states.apply(event)
        if state is None:
            return
        if state.site_id not in self._announced:
            async with self._lock:
                await self._announce_site(state.site_id)
        await self._publish_state(state)

    async def _on_status(self, event: Event) -> None:
        client_id = event.data.get("clientId")
        if not isinstance(client_id, str) or is_generated(client_id):
            return
        body = event.data.get("payload") or b""
        async with self._lock:
            if not body and client_id in self.services:  # the status was cleared
                self.services.discard(client_id)
                topic, _ = service_config(client_id, self.prefix)
                await self._publish_config(topic, None)  # Home Assistant removes it
            elif body and client_id not in self.services:
                self.services.add(client_id)
                await self._publish_config(*service_config(client_id, self.prefix))

    async def _on_birth(self, event: Event) -> None:
        """Home Assistant (re)started, or reconnected after a broker restart that may
        have lost the retained states: discovery again, then every state as it is."""
        if event.data.get("payload") == ONLINE:
            log.info("Home Assistant is online: publishing discovery again")
            await self.publish_discovery()
            for state in list(self.states.sites.values()):
                await self._publish_state(state)


async def serve(
    url: str | None = None,
    *,
    client_id: str = CLIENT_ID,
    sites: Iterable[str] = (),
    prefix: str = DEFAULT_PREFIX,
    ready: Callable[[HomeAssistantBridge], None] | None = None,
) -> None:
    """Run the bridge on the broker at `url` until the process is told to stop
    (SIGINT/SIGTERM; under `voicebus.run` too); `ready(bridge)` once it serves."""
    bus = EventBus(url, client_id=client_id, routes=bridge_routes(prefix), enable_history=False)
    async with bus:
        bridge = HomeAssistantBridge(bus, sites=sites, prefix=prefix)
        await bridge.start()
        if ready is not None:
            ready(bridge)
        await bus.run_forever()
