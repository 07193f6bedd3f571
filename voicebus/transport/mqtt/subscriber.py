"""The subscribe path of the MQTT transport: the session's filters, kept across links.

`Subscriber` subscribes on the current link, or only records the filter while
there is none; on each new link `resubscribe` restores them all (and sends the
unsubscriptions a persistent session still owes the broker). The filters, with
their subscription identifiers, are `SessionFilters` (`session_filters.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiomqtt

from ...errors import ConfigError, TransportError
from ...wire.topics import check_filter
from .errors import subscribe_error
from .link import LinkLost, subscribe_on, until_lost
from .options import MqttOptions
from .session_filters import SessionFilters

log = logging.getLogger("voicebus.mqtt")

RESUBSCRIBE_TRIES = 8
"""Attempts at one re-subscription the broker fails without refusing it."""

Step = Callable[[Coroutine[Any, Any, Any], str], Awaitable[None]]
"""Runs one step of resuming a session: ``step(operation, what)``."""


class Subscriber:
    """Subscribes and unsubscribes on the current link; remembers for the next."""

    def __init__(self, url: str, options: MqttOptions) -> None:
        self.url = url
        self.options = options
        self.filters = SessionFilters()

    def reset(self) -> None:
        """Forget every filter (the transport closed)."""
        self.filters = SessionFilters()

    async def subscribe(
        self, client: aiomqtt.Client | None, topic_filter: str, subscription_id: int, qos: int
    ) -> None:
        """Subscribe on `client`, or on the next link when there is none now."""
        check_filter(topic_filter)
        if topic_filter.startswith("$share/") and not self.options.v5:
            raise ConfigError(
                f"group subscriptions need MQTT 5 (subscription identifiers tell a "
                f"group's copy apart); {self.url} speaks 3.1.1: subscribe without group="
            )
        self.filters.add(topic_filter, subscription_id)
        if client is None:
            return
        try:
            await self._subscribe_on(client, topic_filter, subscription_id, qos)
        except LinkLost:
            return

    async def unsubscribe(
        self, client: aiomqtt.Client | None, topic_filter: str, *, closing: bool = False
    ) -> None:
        """Unsubscribe on `client`; with a persistent session and no link, on the next
        (unless `closing`)."""
        filters = self.filters
        filters.remove(topic_filter)
        persistent = bool(self.options.session_expiry)
        if client is None:
            if persistent and not closing:
                filters.dropped.add(topic_filter)
            return
        try:
            await until_lost(client, client.unsubscribe(topic_filter))
        except LinkLost:
            if persistent:
                filters.dropped.add(topic_filter)
        except aiomqtt.MqttError as exc:
            log.debug("unsubscribe %s: %s", topic_filter, exc)

    async def resubscribe(self, client: aiomqtt.Client, step: Step) -> None:
        """On a new link: the unsubscriptions still owed, then every filter again."""
        filters = self.filters
        for topic_filter in list(filters.dropped):
            unsubscribing = until_lost(client, client.unsubscribe(topic_filter))
            await step(unsubscribing, f"unsubscribing {topic_filter!r}")
        filters.dropped.clear()
        for topic_filter, sid in list(filters.ids.items()):
            subscribing = self._retrying(client, topic_filter, sid)
            await step(subscribing, f"re-subscribing {topic_filter!r}")

    async def _retrying(self, client: aiomqtt.Client, topic_filter: str, sid: int) -> None:
        """Re-subscribe, again with backoff (up to `RESUBSCRIBE_TRIES`) while the broker
        fails without saying no (a timeout, an unspecified refusal: a cluster still
        electing leaders after losing a node); a denied or invalid filter fails at once."""
        for attempt in range(RESUBSCRIBE_TRIES):
            try:
                await self._subscribe_on(client, topic_filter, sid, 1, resubscribe=True)
                return
            except (aiomqtt.MqttError, TransportError, TimeoutError) as exc:
                if type(exc) not in (TransportError, aiomqtt.MqttError, TimeoutError):
                    raise
                if attempt + 1 == RESUBSCRIBE_TRIES:
                    raise
                log.info("re-subscribing %r failed (%s); trying again", topic_filter, exc)
                self.filters.add(topic_filter, sid)  # a refusal took it out
                await asyncio.sleep(self.options.backoff(attempt))

    async def _subscribe_on(
        self,
        client: aiomqtt.Client,
        topic_filter: str,
        subscription_id: int,
        qos: int,
        *,
        resubscribe: bool = False,
    ) -> None:
        try:
            codes = await subscribe_on(
                client, topic_filter, subscription_id, qos, resubscribe, self.options.v5
            )
        except aiomqtt.MqttError as exc:
            raise TransportError(f"cannot subscribe {topic_filter!r}: {exc}") from None
        for code in codes:
            error = subscribe_error(self.url, topic_filter, code)
            if error is not None:
                self.filters.remove(topic_filter)
                raise error
