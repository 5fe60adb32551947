"""Resync requests: a consumer asks the agent to republish every service of its cluster.

A request on ``syncmesh.v2.resync.<cluster>`` (from a registry whose digest
disagrees with the beats, or an operator) is checked (size, shape), then granted
through the core's token bucket (``EdgeCore.resync_requested``): a flood of
requests is a few republishes. Before a granted republish the stream is read, so
that revisions continue above any message of our epoch this run did not send
(``EdgeCore.outbid``); then the drain is woken. Split out of
``edge_sync.io.publisher``, which owns the NATS connection and the publish lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from edge_sync.core.agent import EdgeCore, RemoteService
from edge_sync.core.publish_state import Key
from edge_sync.io.metrics import EdgeMetrics, ResyncOutcome
from syncmesh.loggate import GatedLog
from syncmesh.schema import ResyncRequest

__all__ = ["MAX_RESYNC_BYTES", "Resyncer"]

log = logging.getLogger("edge_sync.nats")

MAX_RESYNC_BYTES = 64 * 1024
_resync_decoder = msgspec.json.Decoder(ResyncRequest)


class Resyncer:
    """Answers resync requests for the publisher.

    ``read_stream`` reads what the stream holds for the cluster (called under
    ``publish_lock``, so no revision is handed out before the counter moved);
    ``wake`` starts the drain.
    """

    def __init__(
        self,
        core: EdgeCore,
        metrics: EdgeMetrics,
        limited: GatedLog,
        clock: Callable[[], float],
        publish_lock: asyncio.Lock,
        wake: asyncio.Event,
        read_stream: Callable[[], Awaitable[dict[Key, RemoteService]]],
    ) -> None:
        self.core = core
        self.metrics = metrics
        self.limited = limited
        self.clock = clock
        self.publish_lock = publish_lock
        self.wake = wake
        self.read_stream = read_stream
        self._tasks: set[asyncio.Task[None]] = set()

    def if_due(self) -> None:
        """A request deferred by the token bucket whose turn has come (the beat loop asks)."""
        if self.core.resync_due(self.clock()):
            self.metrics.resync_requests.labels(ResyncOutcome.DONE).inc()
            self._start()

    def _start(self) -> None:
        """A resync was granted (everything is dirty): outbid the stream, then publish."""
        task = asyncio.create_task(self._outbid_then_wake(), name="edge-resync")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _outbid_then_wake(self) -> None:
        # Under the publish lock, so no revision is handed out before the counter moved.
        try:
            async with self.publish_lock:
                remote = await self.read_stream()
                self.core.outbid(remote)
        except Exception as exc:  # the republish goes ahead; ours win unless someone forged
            self.limited.warning("resync_read", self.clock(), "resync: stream not read: %s", exc)
        finally:
            self.wake.set()

    async def on_request(self, msg: Any) -> None:
        """The subscription callback of the cluster's resync subject."""
        data: bytes = msg.data or b""
        now = self.clock()
        if len(data) > MAX_RESYNC_BYTES:
            self.metrics.invalid_input.labels("resync_oversized").inc()
            self.metrics.resync_requests.labels(ResyncOutcome.INVALID).inc()
            self.limited.warning(
                "resync_oversized", now, "resync request of %d bytes ignored", len(data)
            )
            return
        if data.strip():
            try:
                _resync_decoder.decode(data)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                self.metrics.invalid_input.labels("resync_malformed").inc()
                self.metrics.resync_requests.labels(ResyncOutcome.INVALID).inc()
                self.limited.warning("resync_malformed", now, "resync request ignored: %s", exc)
                return
        if self.core.resync_requested(now):
            self.metrics.resync_requests.labels(ResyncOutcome.DONE).inc()
            log.info("resync requested: republishing every service")
            self._start()
        else:
            self.metrics.resync_requests.labels(ResyncOutcome.DEFERRED).inc()
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(b'{"ok":true}')
