"""asyncio/NATS adapter: read the state stream into the ``Ingest`` core.

Every subject's last message, then live changes, in stream order. The fast
path is ``fast_reader.OrderedReader`` on a connection of its own; the
fallback (``fast_path = false``, or a nats-py without the internals it needs)
is nats-py's own ordered push consumer. Both recreate their consumer from the
last sequence seen after a gap or a reconnect, so the view never misses or
reorders a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from global_registry.core.ingest import Ingest, IngestResult
from global_registry.core.jsmeta import AckInfo, parse_ack_reply
from global_registry.io.fast_reader import OrderedReader, install_parser, supported
from global_registry.io.metrics import RegistryMetrics
from syncmesh import subjects

__all__ = ["subscribe_ordered", "StreamConsumer"]

log = logging.getLogger(__name__)


async def subscribe_ordered(js: Any, cb: Callable[[Any], Any] | None = None) -> Any:
    """nats-py's ordered push consumer over the whole state stream, from its first message."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    return await js.subscribe(
        subjects.STREAM_SUBJECTS[0],
        stream=subjects.STREAM,
        cb=cb,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
        config=ConsumerConfig(filter_subjects=list(subjects.STREAM_SUBJECTS)),
        idle_heartbeat=2.0,
    )


class StreamConsumer:
    def __init__(
        self,
        nc: Any,
        ingest: Ingest,
        on_result: Callable[[IngestResult], None],
        metrics: RegistryMetrics | None = None,
        fast_path: bool = True,
        heartbeat_s: float = 2.0,
    ) -> None:
        """``nc`` should be a connection of its own when ``fast_path`` is on."""
        self._nc = nc
        self._ingest = ingest
        self._on_result = on_result
        self._metrics = metrics
        self._fast_path = fast_path
        self._heartbeat_s = heartbeat_s
        self._reader: OrderedReader | None = None
        self._sub: Any = None
        self._watchdog: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.caught_up = asyncio.Event()

    @property
    def mode(self) -> str:
        return "fast" if self._reader is not None else "nats-py-ordered"

    async def start(self) -> None:
        info = await self._nc.jetstream().stream_info(subjects.STREAM)
        now = self._loop.time()
        if self._ingest.begin(int(info.state.last_seq), now):
            self._on_caught_up(now)
        if self._fast_path and supported(self._nc):
            self._reader = OrderedReader(
                self._nc,
                install_parser(self._nc),
                subjects.STREAM,
                list(subjects.STREAM_SUBJECTS),
                self._process,
                self._heartbeat_s,
            )
            await self._reader.start()
        else:
            if self._fast_path:
                log.warning("nats-py internals not as expected: reading the stream the slow way")
            self._sub = await subscribe_ordered(self._nc.jetstream(), self._on_msg)
        if not self._ingest.caught_up:
            self._watchdog = asyncio.create_task(self._watch_pending(), name="registry-catchup")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Any) -> None:
        self._process(msg.subject, msg.data, parse_ack_reply(msg.reply) if msg.reply else None)

    def _process(self, subject: str, data: bytes, ack: AckInfo | None) -> None:
        now = self._loop.time()
        if ack is None:
            result = self._ingest.handle(subject, data, now)
        else:
            result = self._ingest.handle(
                subject,
                data,
                now,
                stream_seq=ack.stream_seq,
                pending=ack.pending,
                age_s=max(0.0, time.time() - ack.stored_at_ns / 1e9),
            )
        rejected = result.rejected
        if rejected is not None:
            if result.log:
                more = f" ({result.suppressed} more since last logged)" if result.suppressed else ""
                log.warning(
                    "rejected message on %s (cluster %r): %s%s",
                    subject[:200],
                    rejected.cluster,
                    rejected,
                    more,
                )
        if result.caught_up_now:
            self._on_caught_up(now)
        self._on_result(result)

    def _on_caught_up(self, now: float) -> None:
        started = self._ingest.started_at or now
        if self._metrics is not None:
            self._metrics.catchup_seconds.set(now - started)
        log.info(
            "caught up with stream %s at sequence %d in %.3fs (%s reader)",
            subjects.STREAM,
            self._ingest.last_seq,
            now - started,
            self.mode,
        )
        self.caught_up.set()

    async def _pending(self) -> int | None:
        """What the server still has to deliver to us, if it can tell."""
        if self._reader is not None:
            return await self._reader.pending()
        info = await self._sub.consumer_info()
        return int(info.num_pending) + int(self._sub.pending_msgs)

    async def _watch_pending(self) -> None:
        """Catch-up without a message to prove it (the stream's tail was purged)."""
        while not self._ingest.caught_up:
            await asyncio.sleep(1.0)
            if self._ingest.caught_up:
                return
            try:
                pending = await self._pending()
            except Exception as exc:  # noqa: BLE001 - the consumer may be being recreated
                log.debug("consumer info during catch-up: %s", exc)
                continue
            if pending == 0 and not self._ingest.caught_up:
                now = self._loop.time()
                self._ingest.mark_caught_up(now)
                self._on_caught_up(now)
                self._on_result(IngestResult("same", "", caught_up_now=True))
