"""The subscribe path of the MQTT transport: the session's filters, kept across links.

`Subscriber` subscribes on the current link, or only records the filter while
there is none; on each new link `resubscribe` restores them all (and sends the
unsubscriptions a persistent session still owes the broker). The filters, with
their subscription identifiers, are `SessionFilters` (`session_filters.py`): the
broker gets only their covering set (over MQTT 5), so overlapping filters cost
one PUBLISH per message. Each change is sent subscriptions first, then
unsubscriptions: a filter that a cover leaves uncovered is subscribed before the
cover goes, so no message falls in between.

Retained messages come as before: a new filter that goes on the wire gets them
(retain handling 0); a new filter that is covered is subscribed and at once
unsubscribed again (`Change.fetch`) for its retained messages only; a filter
put back on the wire when its cover goes gets none (retain handling 2: the bus
had it all along), nor does a re-subscription on a resumed session (1).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiomqtt

from ...errors import ConfigError, TransportError, VoicebusError
from ...wire.topics import check_filter
from .errors import subscribe_error
from .link import LinkLost, subscribe_on, until_lost
from .options import MqttOptions
from .session_filters import Change, SessionFilters

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
        self.filters = SessionFilters(covering=options.v5)

    def reset(self) -> None:
        """Forget every filter (the transport closed)."""
        self.filters = SessionFilters(covering=self.options.v5)

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
        change = self.filters.add(topic_filter, subscription_id, qos)
        if client is None:
            self._owed(change)
            return
        try:
            await self._apply(client, change)
        except LinkLost:
            return

    async def unsubscribe(
        self, client: aiomqtt.Client | None, topic_filter: str, *, closing: bool = False
    ) -> None:
        """Unsubscribe on `client`; with a persistent session and no link, on the next
        (unless `closing`)."""
        change = self.filters.remove(topic_filter)
        if client is None:
            if not closing:
                self._owed(change)
            return
        try:
            await self._apply(client, change)
        except LinkLost:
            return

    def _owed(self, change: Change) -> None:
        """`change` could not be sent (no link): the next `resubscribe` sends the wire
        filters; a persistent session's broker still has those unsubscribed."""
        for topic_filter in change.unsubscribe:
            self.filters.gone(topic_filter)
            if self.options.session_expiry:
                self.filters.dropped.add(topic_filter)
        if change.fetch is not None:
            self.filters.fetches.add(change.fetch)

    async def _apply(self, client: aiomqtt.Client, change: Change) -> None:
        """Send `change` on `client`: subscriptions, the fetch, then unsubscriptions
        (`LinkLost` if the link drops; what was not sent is owed to the next link)."""
        filters = self.filters
        try:
            for topic_filter, qos in change.subscribe.items():
                sid = filters.ids.get(topic_filter)
                if sid is None or topic_filter not in filters.wire:
                    continue  # changed meanwhile
                retained = 0 if topic_filter == change.fresh else 2
                refusal = await self._subscribe_on(client, topic_filter, sid, qos, retained)
                if refusal is not None:
                    await self._refused(client, topic_filter)
                    raise refusal
            fetch = change.fetch
            if fetch is not None and (sid := filters.ids.get(fetch)) is not None:
                await self._fetch(client, fetch, sid, change)
        except LinkLost:
            self._owed(change)
            raise
        for position, topic_filter in enumerate(change.unsubscribe):
            try:
                await until_lost(client, client.unsubscribe(topic_filter))
            except LinkLost:
                self._owed(Change(unsubscribe=change.unsubscribe[position:]))
                raise
            except aiomqtt.MqttError as exc:
                log.debug("unsubscribe %s: %s", topic_filter, exc)
            filters.gone(topic_filter)

    async def _fetch(
        self, client: aiomqtt.Client, topic_filter: str, sid: int, change: Change | None = None
    ) -> None:
        """Subscribe the covered `topic_filter` for a moment: its retained messages."""
        filters = self.filters
        filters.transient(topic_filter, sid)
        try:
            refusal = await self._subscribe_on(client, topic_filter, sid, 1, 0)
        except BaseException:
            filters.gone(topic_filter)
            raise
        if refusal is not None:
            filters.gone(topic_filter)
            filters.remove(topic_filter)
            raise refusal
        if change is not None:
            change.fetch = None  # fetched: not owed to the next link
        try:
            if topic_filter not in filters.wire:  # on the wire meanwhile: keep it
                await until_lost(client, client.unsubscribe(topic_filter))
        except LinkLost:
            if self.options.session_expiry:  # the session keeps it: unsubscribe it then
                filters.dropped.add(topic_filter)
            raise
        except aiomqtt.MqttError as exc:
            log.debug("unsubscribe %s: %s", topic_filter, exc)
        finally:
            filters.gone(topic_filter)

    async def _refused(self, client: aiomqtt.Client, topic_filter: str) -> None:
        """The broker refused `topic_filter`: forget it, and put back on the wire what
        it covered (best effort: failures logged)."""
        change = self.filters.remove(topic_filter)
        self.filters.gone(topic_filter)
        change.unsubscribe.clear()
        try:
            await self._apply(client, change)
        except (VoicebusError, aiomqtt.MqttError) as exc:
            log.error("re-subscribing what %r covered failed: %s", topic_filter, exc)

    async def resubscribe(self, client: aiomqtt.Client, step: Step) -> None:
        """On a new link: every wire filter again, then the unsubscriptions still owed
        (subscribed first: what a dropped filter delivered, its cover delivers)."""
        filters = self.filters
        for topic_filter, qos in list(filters.wire.items()):
            sid = filters.ids.get(topic_filter)
            if sid is None:
                continue
            subscribing = self._retrying(client, topic_filter, sid, qos)
            await step(subscribing, f"re-subscribing {topic_filter!r}")
        for topic_filter in list(filters.dropped):
            unsubscribing = until_lost(client, client.unsubscribe(topic_filter))
            await step(unsubscribing, f"unsubscribing {topic_filter!r}")
        filters.dropped.clear()
        fetches, filters.fetches = filters.fetches, set()
        for topic_filter in fetches:  # covered, added while there was no link
            sid = filters.ids.get(topic_filter)
            if sid is None or topic_filter in filters.wire:
                continue
            try:
                await step(self._fetch(client, topic_filter, sid), f"fetching {topic_filter!r}")
            except VoicebusError as exc:  # refused (not a transport failure): no retained
                log.warning("retained messages of %r not fetched: %s", topic_filter, exc)

    async def _retrying(
        self, client: aiomqtt.Client, topic_filter: str, sid: int, qos: int
    ) -> None:
        """Re-subscribe, again with backoff (up to `RESUBSCRIBE_TRIES`) while the broker
        fails without saying no (a timeout, an unspecified refusal: a cluster still
        electing leaders after losing a node); a denied or invalid filter fails at once."""
        for attempt in range(RESUBSCRIBE_TRIES):
            last = attempt + 1 == RESUBSCRIBE_TRIES
            try:
                refusal = await self._subscribe_on(client, topic_filter, sid, qos, 1)
            except (TransportError, TimeoutError) as exc:  # no answer: kept for the next link
                if last:
                    raise
                log.info("re-subscribing %r failed (%s); trying again", topic_filter, exc)
            else:
                if refusal is None:
                    return
                if type(refusal) is not TransportError or last:  # denied, or invalid
                    await self._refused(client, topic_filter)
                    raise refusal
                log.info("re-subscribing %r failed (%s); trying again", topic_filter, refusal)
            await asyncio.sleep(self.options.backoff(attempt))

    async def _subscribe_on(
        self, client: aiomqtt.Client, topic_filter: str, sid: int, qos: int, retained: int
    ) -> VoicebusError | None:
        """SUBSCRIBE with `retained` as the retain handling option; the broker's refusal
        as an error (not raised); `TransportError` raised when it did not answer."""
        try:
            codes = await subscribe_on(client, topic_filter, sid, qos, retained, self.options.v5)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"cannot subscribe {topic_filter!r}: {exc}") from None
        for code in codes:
            error = subscribe_error(self.url, topic_filter, code)
            if error is not None:
                return error
        return None
