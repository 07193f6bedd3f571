"""The lifecycle of one bus's link: open the transport, wire it to the receiving
side, publish through it, drain and close it.

`EventBus` owns one `Connection`; it starts it on first use (`emit`, `wait_for`,
`ready`) and stops it in `EventBus.stop`. The failure reporter publishes its dead
letters through `publish_quietly`, so bookkeeping never raises into a handler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from .config import BusConfig
from .deadletters import FailureReporter
from .errors import BusStateError, VoicebusError
from .receive.monitor import Monitor
from .receive.side import ReceiveSide
from .transport import (
    BusURL,
    InProcessTransport,
    LocalMessage,
    Message,
    Transport,
    open_transport,
)

__all__ = ["Connection"]

log = logging.getLogger("voicebus")


class Connection:
    """Opens, feeds and closes the transport of one bus (``start`` is idempotent)."""

    def __init__(
        self,
        url: BusURL,
        client_id: str,
        config: BusConfig,
        side: ReceiveSide,
        failures: FailureReporter,
        monitor: Monitor,
    ) -> None:
        self.url = url
        self.client_id = client_id
        self.config = config
        self.side = side
        self.failures = failures
        self.monitor = monitor
        self.transport: Transport | None = None
        self.publish_local: Callable[[LocalMessage], Awaitable[None] | None] | None = None
        """The transport's `InProcessTransport.publish_local` (``memory://``), else None."""
        self.running = False
        self._stopping = False
        self._start_lock: asyncio.Lock | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        """The event loop it last started on."""

    async def start(self) -> None:
        """Connect, start dispatching and subscribe what was subscribed while stopped."""
        if self.running:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self.running:
                return
            transport = open_transport(self.url, client_id=self.client_id, settings=self.config)
            self.side.inbound.acker = transport  # messages may come while it connects
            # With a persistent session, acknowledge a QoS 1 message only after its
            # handlers ran, so a crash in between gets it redelivered. Without one the
            # broker forgets unacknowledged messages anyway, and acknowledging at once
            # keeps the broker's in-flight window (our Receive Maximum: see config.py)
            # from stalling a handler that awaits a reply behind a full queue.
            defer = bool(self.config.session_expiry)
            await transport.connect(self.side.inbound.on_message, defer_acks=defer)
            if hasattr(transport, "on_publish_failed"):
                transport.on_publish_failed = self.failures.publish_failed
            if hasattr(transport, "publish_local"):  # memory://: events handed over in-process
                local = cast(InProcessTransport, transport)
                local.on_local = self.side.inbound.on_local
                self.publish_local = local.publish_local
            self.transport = transport
            self.loop = asyncio.get_running_loop()
            self.side.dispatcher.start(transport)
            self.side.filters.transport = transport
            try:
                await self.side.filters.subscribe_all()
            except BaseException:
                await self._shutdown()
                raise
            self.running = True
            log.debug("bus %s started on %s", self.client_id, transport.url)

    async def stop(self, drain_timeout: float) -> None:
        """Dispatch what was received (up to `drain_timeout` seconds), then disconnect."""
        if not self.running or self._stopping:
            return
        # Still running while draining: handlers may emit (and a late emit must not
        # start a second transport); then stopped.
        self._stopping = True
        try:
            deadline = time.monotonic() + drain_timeout
            while (
                self.side.dispatcher.busy or self.failures.tasks
            ) and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            self.running = False
            await self._shutdown()
        finally:
            self._stopping = False

    async def _shutdown(self) -> None:
        for task in list(self.failures.tasks):
            task.cancel()
        await self.side.dispatcher.stop()
        self.side.filters.reset()
        transport, self.transport = self.transport, None
        self.publish_local = None
        if transport is not None:
            self.monitor.expired += getattr(transport, "expired", 0)  # its count goes with it
            await transport.close()

    async def settled(self) -> None:
        """Start if needed, then wait until pending (un)subscribes are acknowledged."""
        if not self.running:
            await self.start()
        if self.side.filters.pending:
            await self.side.filters.settle()

    async def publish(self, message: Message) -> None:
        """Publish once the broker knows every subscription made before (starts if needed)."""
        await self.settled()
        transport = self.transport
        if transport is None:
            raise BusStateError("the bus was stopped")
        await transport.publish(message)

    async def send(self, message: Message) -> None:
        """`publish` without its waits when running with no subscription pending."""
        transport = self.transport
        if transport is not None and self.running and not self.side.filters.pending:
            await transport.publish(message)
        else:
            await self.publish(message)

    def send_local(self, local: LocalMessage) -> Awaitable[None] | None:
        """Publish an in-process hand-over: through `InProcessTransport.publish_local`
        when running with no subscription pending, else as its message. None when
        done, else an awaitable to await (room in a paused receiver, or the publish)."""
        publish_local = self.publish_local
        if publish_local is not None and self.running and not self.side.filters.pending:
            return publish_local(local)
        return self.send(local.message())

    async def publish_quietly(self, message: Message) -> None:
        """Publish bookkeeping (a dead letter) in the background; failures only logged."""
        transport = self.transport
        if transport is None:
            log.warning("bus stopped: %s kept in memory only", message.topic)
            return
        try:
            await transport.publish(message)
        except VoicebusError as exc:
            log.warning("could not publish %s: %s", message.topic, exc)

    def stats(self) -> dict[str, Any]:
        """`EventBus.get_stats`: the monitor's metrics, the receive side's and the link's."""
        stats = self.monitor.snapshot()
        stats["handler_stats"] = [s.as_dict() for s in self.side.dispatcher.handler_stats]
        stats.update(
            {
                "url": self.url.redacted(),
                "client_id": self.client_id,
                "running": self.running,
                **self.side.stats(),
                "reconnects": getattr(self.transport, "reconnects", 0),
            }
        )
        metrics = stats["metrics"]
        metrics.update(self.side.cancels.stats())
        metrics["expired_messages"] = self.monitor.expired + getattr(self.transport, "expired", 0)
        return stats
