"""The embedded in-process broker behind ``memory://`` (the default transport).

It keeps MQTT semantics where the bus relies on them: topic-filter matching,
subscription identifiers, retained messages, shared subscriptions
(``$share/<group>/<filter>``: each message goes to one member of the group, in
turn), encoded bytes, and back-pressure (a publisher waits while a receiver is
paused, never a drop), and expiry (a retained or backlogged message past its
`Message.expires` is dropped, not delivered, and counted in the receiving
client's `expired`). All ``memory://`` buses of one process share one broker;
``memory://NAME`` gives a separate one.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable
from typing import cast

from ..errors import BusStateError
from ..wire.cache import TopicCache
from ..wire.topics import check_filter, check_topic, matches
from .base import CONSUMER, LocalCallback, LocalMessage, Message, MessageCallback

_BROKERS: dict[str, MemoryBroker] = {}

TURN_EVERY = 64
"""A publisher gives the event loop a turn after this many hand-overs in a row (its
emit yields once), so receiving dispatchers keep up with a publisher that never
waits: their queues stay ~64 events deep, not `max_queue_size` (1,000), which keeps
handler latency low and the events in flight within the CPU caches (measured: 1.1x
pyee's rate with it, 1.0x without; pausing at 100 gave ~1.2x, at the cost of the
user's `max_queue_size` meaning)."""


def get_broker(name: str = "") -> MemoryBroker:
    """The process-wide in-process broker called `name`."""
    broker = _BROKERS.get(name)
    if broker is None:
        broker = _BROKERS[name] = MemoryBroker(name)
    return broker


class MemoryBroker:
    """Routes messages between the `MemoryTransport` clients of one process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.clients: list[MemoryTransport] = []
        self.retained: dict[str, Message] = {}
        self.shared = 0
        """Shared subscriptions held by the clients (0: the plain fast path)."""
        self._turns: dict[str, int] = {}
        self.receivers: TopicCache[tuple[tuple[MemoryTransport, tuple[int, ...]], ...]]
        self.receivers = TopicCache()
        """Topic -> the connected clients subscribed to it, each with its subscription
        ids (`receivers_of`); emptied whenever a client connects, leaves or changes
        its subscriptions."""

    def receivers_of(self, topic: str) -> tuple[tuple[MemoryTransport, tuple[int, ...]], ...]:
        """The connected clients with plain subscriptions matching `topic`, each with
        its subscription ids (cached in `receivers`)."""
        found = []
        for client in self.clients:
            if client.connected:
                ids = client.subscription_ids(topic)
                if ids:
                    found.append((client, ids))
        return self.receivers.put(topic, tuple(found))

    async def publish(self, message: Message) -> None:
        for client in self.route(message):
            await client.wait_for_room()

    def route(self, message: Message) -> list[MemoryTransport]:
        """Deliver `message` to every client it is for; the ones now paused (the
        publisher waits for room in each)."""
        if message.retain:
            if message.payload:
                self.retained[message.topic] = message
            else:
                self.retained.pop(message.topic, None)
        if not self.shared:
            return [c for c in self.clients if c.deliver(message)]
        picked = self._pick_shared(message.topic)
        return [c for c in self.clients if c.deliver(message, picked.get(c, ()))]

    def _pick_shared(self, topic: str) -> dict[MemoryTransport, tuple[int, ...]]:
        """For each shared subscription matching `topic`, the member whose turn it is."""
        groups: dict[str, list[tuple[MemoryTransport, int]]] = {}
        for client in self.clients:
            if not client.connected:
                continue
            for topic_filter, sid in client.shared_matching(topic):
                groups.setdefault(topic_filter, []).append((client, sid))
        picked: dict[MemoryTransport, tuple[int, ...]] = {}
        for topic_filter, members in groups.items():
            turn = self._turns.get(topic_filter, 0)
            self._turns[topic_filter] = turn + 1
            client, sid = members[turn % len(members)]
            picked[client] = (*picked.get(client, ()), sid)
        return picked


class MemoryTransport:
    """A client of a `MemoryBroker`."""

    def __init__(self, name: str = "") -> None:
        self.url = f"memory://{name}"
        self._broker = get_broker(name)
        self._subscriptions: dict[str, int] = {}
        self._matched: TopicCache[tuple[int, ...]] = TopicCache()  # worst case ~2 MiB
        self._shared: dict[str, int] = {}
        self._on_message: MessageCallback | None = None
        self.on_local: LocalCallback | None = None
        """Set by a bus: takes an in-process hand-over (`publish_local`, or a
        message's `Message.local`) with this client's subscription ids, without a copy."""
        self.backlog: deque[Message] = deque()
        """Messages for this client kept while it is paused, delivered in turn."""
        self.paused = False
        """Its receiver asked for no more now (`pause_reading`)."""
        self._resumed = asyncio.Event()
        self._resumed.set()
        self.expired = 0
        """Messages not delivered to this client because they went stale first."""
        self._streak = 0
        """Hand-overs published since this client last gave the loop a turn."""

    @property
    def connected(self) -> bool:
        return self._on_message is not None

    async def connect(self, on_message: MessageCallback, *, defer_acks: bool = False) -> None:
        self._on_message = on_message
        if self not in self._broker.clients:
            self._broker.clients.append(self)
        self._changed()

    def _changed(self) -> None:
        """Its subscriptions or connection changed: the topic caches start again."""
        self._matched.clear()
        self._broker.receivers.clear()

    def ack(self, token: object) -> None:
        """Nothing to acknowledge in-process (messages carry no token)."""

    async def close(self) -> None:
        if self in self._broker.clients:
            self._broker.clients.remove(self)
        self._on_message = None
        self.on_local = None
        self._broker.shared -= len(self._shared)
        self._shared.clear()
        self._subscriptions.clear()
        self._changed()
        self.backlog.clear()
        self.paused = False  # a publisher waiting for room here goes on (else it spins)
        self._resumed.set()

    def _require_connected(self) -> None:
        if self._on_message is None:
            raise BusStateError(f"{self.url} transport is not connected")

    async def publish(self, message: Message) -> None:
        self._require_connected()
        if not message.validated:  # encode() built the topic from a checked template
            check_topic(message.topic)
        for client in self._broker.route(message):
            await client.wait_for_room()

    def publish_local(self, local: LocalMessage) -> Awaitable[None] | None:
        """Publish an event handed over in-process (`voicebus.wire.handover`) without
        making its MQTT message: a receiver that cannot take the hand-over now (paused,
        behind a backlog, no `on_local`) or a shared subscription gets
        `local.message()`, made then (once). None when no receiver is paused now,
        else an awaitable that waits for room like `publish` (`InProcessTransport`),
        or gives the loop a turn (`TURN_EVERY`)."""
        if self._on_message is None:
            self._require_connected()
        broker = self._broker
        if broker.shared:
            shared = broker.route(local.message())
            return _wait_for_room(shared) if shared else None
        receivers = broker.receivers.get(local.topic)
        if receivers is None:
            receivers = broker.receivers_of(local.topic)
        paused: list[MemoryTransport] | None = None
        for client, ids in receivers:
            on_local = client.on_local
            if on_local is not None and not (client.paused or client.backlog):
                on_local(local, ids)
            else:  # in turn, behind what waits, or for a receiver that takes messages
                client.push(_copy(local.message(), ids, retain=False))
            if client.paused:  # the receiver's queue may have filled up
                paused = [client] if paused is None else [*paused, client]
        if paused is not None:
            return _wait_for_room(paused)
        if not receivers:
            return None
        self._streak += 1
        if self._streak < TURN_EVERY:
            return None
        self._streak = 0
        return asyncio.sleep(0)  # the receivers' turn (see `TURN_EVERY`)

    async def subscribe(self, topic_filter: str, subscription_id: int, qos: int = 1) -> None:
        self._require_connected()
        check_filter(topic_filter)
        if topic_filter.startswith("$share/"):
            # MQTT 5 (4.8.2): no retained messages for a shared subscription.
            if topic_filter not in self._shared:
                self._broker.shared += 1
            self._shared[topic_filter] = subscription_id
            return
        self._subscriptions[topic_filter] = subscription_id
        self._changed()
        now = time.monotonic()
        for topic, message in list(self._broker.retained.items()):
            if matches(topic_filter, topic):
                if message.expires is not None and message.expires <= now:
                    del self._broker.retained[topic]  # as MQTT: a stale retained message goes
                    self.expired += 1
                    continue
                self.push(_copy(message, (subscription_id,), retain=True))

    async def unsubscribe(self, topic_filter: str) -> None:
        if self._shared.pop(topic_filter, None) is not None:
            self._broker.shared -= 1
        self._subscriptions.pop(topic_filter, None)
        self._changed()

    def subscription_ids(self, topic: str) -> tuple[int, ...]:
        """The ids of this client's plain subscriptions matching `topic`."""
        ids = self._matched.get(topic)
        if ids is None:
            ids = self._matched.put(
                topic, tuple(sid for flt, sid in self._subscriptions.items() if matches(flt, topic))
            )
        return ids

    def shared_matching(self, topic: str) -> list[tuple[str, int]]:
        """This client's shared subscriptions matching `topic`: ``(filter, id)``."""
        return [(f, sid) for f, sid in self._shared.items() if matches(_plain(f), topic)]

    def deliver(self, message: Message, shared_ids: tuple[int, ...] = ()) -> bool:
        """Hand `message` to this client if it subscribed (plus the shared subscriptions
        whose turn it is); True when it is paused."""
        if self._on_message is None:
            return False
        ids = self.subscription_ids(message.topic)
        if shared_ids:
            ids = ids + shared_ids
        if not ids:
            return False
        on_local = self.on_local
        # A hand-over goes straight in, unless paused or behind a backlog (then in turn).
        local = message.local
        if on_local is not None and local is not None and not message.retain and self._ready:
            on_local(cast(LocalMessage, local), ids)
            return self.paused  # the receiver's queue may have filled up
        self.push(_copy(message, ids, retain=False))
        return self.paused

    @property
    def _ready(self) -> bool:
        """Takes a hand-over at once: not paused, no backlog to go first."""
        return not (self.paused or self.backlog)

    def push(self, message: Message) -> None:
        """Deliver `message` now, or keep it in `backlog` while paused or behind it."""
        if self.paused or self.backlog:
            self.backlog.append(message)
        elif self._on_message is not None:
            self._on_message(message)

    def pause_reading(self) -> None:
        self.paused = True
        self._resumed.clear()

    def resume_reading(self) -> None:
        self.paused = False
        backlog = self.backlog
        now = time.monotonic()
        while backlog and not self.paused and self._on_message is not None:
            message = backlog.popleft()
            if message.expires is not None and message.expires <= now:
                self.expired += 1
                continue
            self._on_message(message)
        if not self.paused:
            self._resumed.set()

    async def wait_for_room(self) -> None:
        """Wait while this client is paused, unless called from its own dispatcher."""
        while self.paused and CONSUMER.get() is not self:
            await self._resumed.wait()


async def _wait_for_room(clients: list[MemoryTransport]) -> None:
    for client in clients:
        await client.wait_for_room()


def _plain(topic_filter: str) -> str:
    """A shared subscription ``$share/group/f`` matches like ``f``."""
    if topic_filter.startswith("$share/"):
        return topic_filter.split("/", 2)[2]
    return topic_filter


def _copy(message: Message, ids: tuple[int, ...], *, retain: bool) -> Message:
    return Message(
        message.topic,
        message.payload,
        message.qos,
        retain,
        message.correlation_data,
        message.user_properties,
        message.content_type,
        ids,
        message.validated,
        None,
        message.expires,
        None if retain or message.retain else message.local,  # a retained copy: decoded
    )
