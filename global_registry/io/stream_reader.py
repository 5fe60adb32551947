"""asyncio/NATS adapter: the one reader of the state stream, into an ``Ingest`` core.

The registry and ``watch_inventory`` both read through it: the current epoch
claims first (``Ingest.prime``), then every subject's last message and live
changes after it, in stream order. The fast path is
``fast_reader.FastOrderedReader`` on a connection of its own; the fallback
(``fast_path = false``, a shared connection such as a ``watch_inventory``
caller's, or a nats-py without the internals it needs) is nats-py's own
ordered push consumer. Both recreate their consumer from the last sequence
seen after a gap or a reconnect, so the view never misses or reorders a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from global_registry.core.ingest import Delivery, Ingest, IngestResult, MessageKind, delivery
from global_registry.core.jsmeta import parse_ack_reply
from global_registry.core.records import Outcome
from global_registry.io.fast_reader import FastOrderedReader, install_parser, supported
from syncmesh import subjects

__all__ = ["subscribe_ordered", "read_claims", "StreamReader"]

log = logging.getLogger(__name__)

# How long reading the claims may wait for the next one before the start is retried.
_CLAIM_WAIT_S = 5.0


async def subscribe_ordered(
    js: Any,
    cb: Callable[[Any], Any] | None = None,
    filter_subjects: Sequence[str] = subjects.STREAM_SUBJECTS,
    heartbeat_s: float = 2.0,
) -> Any:
    """nats-py's ordered push consumer over the state stream, from its first message."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    filters = list(filter_subjects)
    return await js.subscribe(
        filters[0],
        stream=subjects.STREAM,
        cb=cb,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
        config=ConsumerConfig(filter_subjects=filters) if len(filters) > 1 else None,
        idle_heartbeat=heartbeat_s,
    )


async def read_claims(js: Any) -> list[tuple[str, bytes, int]]:
    """``(subject, data, stream sequence)`` of every cluster's stored ``EpochClaim``."""
    info = await js.stream_info(subjects.STREAM, subjects_filter=subjects.EPOCH_WILDCARD)
    if not info.state.subjects:
        return []
    sub = await subscribe_ordered(js, filter_subjects=[subjects.EPOCH_WILDCARD])
    claims = []
    try:
        while True:
            msg = await sub.next_msg(timeout=_CLAIM_WAIT_S)
            ack = parse_ack_reply(msg.reply) if msg.reply else None
            if ack is None:
                continue
            claims.append((msg.subject, msg.data, ack.stream_seq))
            if ack.pending == 0:
                return claims
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


class StreamReader:
    def __init__(
        self,
        nc: Any,
        ingest: Ingest,
        on_result: Callable[[IngestResult], None],
        fast_path: bool = True,
        heartbeat_s: float = 2.0,
    ) -> None:
        """``nc`` must be a connection of its own when ``fast_path`` is on (the fast
        reader takes over its protocol parser)."""
        self._nc = nc
        self._ingest = ingest
        self._on_result = on_result
        self._fast_path = fast_path
        self._heartbeat_s = heartbeat_s
        self._fast: FastOrderedReader | None = None
        self._sub: Any = None
        self._watchdog: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.caught_up = asyncio.Event()

    @property
    def mode(self) -> str:
        return "fast" if self._fast is not None else "nats-py-ordered"

    async def start(self) -> None:
        js = self._nc.jetstream()
        # Catching up starts here: reading the claims is part of it.
        started = self._loop.time()
        info = await js.stream_info(subjects.STREAM)
        for subject, data, seq in await read_claims(js):
            self._ingest.prime(subject, data, seq)
        if self._ingest.begin(int(info.state.last_seq), started):
            self._on_caught_up(self._loop.time())
        if self._fast_path and supported(self._nc):
            self._fast = FastOrderedReader(
                self._nc,
                install_parser(self._nc),
                subjects.STREAM,
                list(subjects.STREAM_SUBJECTS),
                self._process_batch,
                self._heartbeat_s,
            )
            await self._fast.start()
        else:
            if self._fast_path:
                log.warning("nats-py internals not as expected: reading the stream the slow way")
            self._sub = await subscribe_ordered(js, self._on_msg, heartbeat_s=self._heartbeat_s)
        if not self._ingest.caught_up:
            self._watchdog = asyncio.create_task(self._watch_pending(), name="stream-catchup")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        if self._fast is not None:
            await self._fast.stop()
            self._fast = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Any) -> None:
        ack = parse_ack_reply(msg.reply) if msg.reply else None
        if ack is None:
            # Not delivered by the stream: no sequence to fence or order it by.
            log.debug("message on %s without JetStream metadata ignored", msg.subject[:200])
            return
        self._process_batch([delivery(msg.subject.encode(), msg.data, ack)])

    def _process_batch(self, batch: list[Delivery]) -> None:
        """Messages in stream order into the core, each result reported as it is applied."""
        now = self._loop.time()
        wall_s = time.time()
        ingest = self._ingest
        while batch:
            try:
                ingest.handle_batch(batch, now, wall_s, self._report)
                return
            except Exception:
                # A bug must not lose the rest of the batch: the core had set
                # ``last_seq`` to the message it was on.
                failed = ingest.last_seq
                log.exception("stream reader: message at sequence %d not applied", failed)
                rest = [item for item in batch if item[2] > failed]
                batch = rest if len(rest) < len(batch) else batch[1:]

    def _report(self, result: IngestResult) -> None:
        rejected = result.rejected
        if rejected is not None and result.log:
            more = f" ({result.suppressed} more since last logged)" if result.suppressed else ""
            log.warning(
                "rejected message on %s (cluster %r): %s%s",
                result.subject[:200],
                rejected.cluster,
                rejected,
                more,
            )
        if result.caught_up_now:
            self._on_caught_up(self._ingest.caught_up_at or self._loop.time())
        self._on_result(result)

    def _on_caught_up(self, now: float) -> None:
        started = self._ingest.started_at or now
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
        if self._fast is not None:
            return await self._fast.pending()
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
            except Exception as exc:  # the consumer may be being recreated
                log.debug("consumer info during catch-up: %s", exc)
                continue
            if pending == 0 and not self._ingest.caught_up:
                now = self._loop.time()
                self._ingest.mark_caught_up(now)
                self._on_caught_up(now)
                self._on_result(IngestResult(Outcome.SAME, MessageKind.UNKNOWN, caught_up_now=True))
