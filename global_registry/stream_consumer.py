"""asyncio/NATS adapter: read the state stream into the ``Ingest`` core.

An ordered push consumer delivers every subject's last message, then live
changes; nats-py recreates it from the last sequence seen after a gap or a
reconnect, so the view never misses or reorders a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from global_registry.ingest import Ingest, IngestResult
from global_registry.metrics import RegistryMetrics
from syncmesh import subjects

__all__ = ["AckInfo", "parse_ack_reply", "subscribe_ordered", "StreamConsumer"]

log = logging.getLogger(__name__)


class AckInfo(tuple[int, float, int]):
    """(stream sequence, stored-at in Unix seconds, messages still pending)."""

    @property
    def stream_seq(self) -> int:
        return self[0]

    @property
    def stored_at(self) -> float:
        return self[1]

    @property
    def pending(self) -> int:
        return self[2]


def parse_ack_reply(reply: str) -> AckInfo | None:
    """The JetStream metadata carried in a delivered message's reply subject.

    v1: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>``;
    v2 adds ``<domain>.<account hash>`` after ``ACK`` and a token at the end.
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        base = 2
    elif len(tokens) >= 11:
        base = 4
    else:
        return None
    try:
        return AckInfo(
            (int(tokens[base + 3]), int(tokens[base + 5]) / 1e9, int(tokens[base + 6]))
        )
    except ValueError:
        return None


async def subscribe_ordered(js: Any, cb: Callable[[Any], Any] | None = None) -> Any:
    """An ordered push consumer over the whole state stream, from its first message."""
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
        js: Any,
        ingest: Ingest,
        on_result: Callable[[IngestResult], None],
        metrics: RegistryMetrics | None = None,
    ) -> None:
        self._js = js
        self._ingest = ingest
        self._on_result = on_result
        self._metrics = metrics
        self._sub: Any = None
        self._watchdog: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.caught_up = asyncio.Event()

    async def start(self) -> None:
        info = await self._js.stream_info(subjects.STREAM)
        now = self._loop.time()
        if self._ingest.begin(int(info.state.last_seq), now):
            self._on_caught_up(now)
        self._sub = await subscribe_ordered(self._js, self._on_message)
        if not self._ingest.caught_up:
            self._watchdog = asyncio.create_task(self._watch_pending(), name="registry-catchup")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_message(self, msg: Any) -> None:
        ack = parse_ack_reply(msg.reply) if msg.reply else None
        now = self._loop.time()
        if ack is None:
            result = self._ingest.handle(msg.subject, msg.data, now)
        else:
            result = self._ingest.handle(
                msg.subject,
                msg.data,
                now,
                stream_seq=ack[0],
                pending=ack[2],
                age_s=max(0.0, time.time() - ack[1]),
            )
        metrics = self._metrics
        if metrics is not None:
            metrics.messages.labels(result.kind, result.outcome).inc()
            if ack is not None:
                metrics.stream_seq.set(ack[0])
        if result.rejected is not None:
            if metrics is not None:
                metrics.rejected.labels(result.rejected.reason).inc()
            if result.log:
                more = f" ({result.suppressed} more since last logged)" if result.suppressed else ""
                log.warning(
                    "rejected message on %s (cluster %r): %s%s",
                    msg.subject[:200],
                    result.rejected.cluster,
                    result.rejected,
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
            "caught up with stream %s at sequence %d in %.3fs",
            subjects.STREAM,
            self._ingest.last_seq,
            now - started,
        )
        self.caught_up.set()

    async def _watch_pending(self) -> None:
        """Catch-up without a message to prove it (the tail was purged): ask the consumer."""
        while not self._ingest.caught_up:
            await asyncio.sleep(1.0)
            if self._ingest.caught_up or self._sub is None:
                return
            try:
                info = await self._sub.consumer_info()
            except Exception as exc:  # noqa: BLE001 - the consumer may be being recreated
                log.debug("consumer info during catch-up: %s", exc)
                continue
            if info.num_pending == 0 and self._sub.pending_msgs == 0 and not self._ingest.caught_up:
                now = self._loop.time()
                change = self._ingest.mark_caught_up(now)
                self._on_caught_up(now)
                self._on_result(IngestResult("same", "", change, caught_up_now=True))
