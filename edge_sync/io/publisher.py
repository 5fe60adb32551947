"""NATS adapter: connects, creates the stream, claims the epoch, drains the publish table,
beats, answers resyncs (``edge_sync.io.resync``), reads back keys whose stream content
is unknown (docs/digest.md); every message goes out through ``edge_sync.io.fenced``.

The drain loop publishes with JetStream (``Nats-Msg-Id`` = cluster:epoch:revision,
so a retried publish is de-duplicated by the server) and only while connected:
while NATS is away, changes just overwrite the table's latest state per key.
Every state and beat is fenced by the claim (``edge_sync.core.epoch_claim``): once
another agent claims the cluster the server refuses them, and the agent stops, or,
in a standby group (``ha.standby``), steps down and stands by (``edge_sync.io.standby``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from edge_sync.config import EdgeConfig
from edge_sync.core.agent import EdgeCore
from edge_sync.core.epoch_claim import EpochClaimer, Ownership
from edge_sync.core.lease import StandbyRoster, Verdict
from edge_sync.core.publish_state import Outgoing
from edge_sync.io.epoch import claim_epoch, read_last_claim
from edge_sync.io.errors import (
    Deposed,
    PublishError,
    PublishFailed,
    publish_error_reason,
)
from edge_sync.io.fenced import FencedSender, Outbound
from edge_sync.io.metrics import EdgeMetrics, PublishedKind
from edge_sync.io.remote_state import read_cluster_service, read_cluster_services
from edge_sync.io.resync import Resyncer
from edge_sync.io.standby import Standby, decode_presence, try_claim
from syncmesh import subjects
from syncmesh.loggate import GatedLog
from syncmesh.validate import Rejected
from syncmesh_io import nats_connection as natsconn
from syncmesh_io.retry import forever

__all__ = ["NatsPublisher", "PublishError", "PublishFailed", "Deposed"]

log = logging.getLogger("edge_sync.nats")


class NatsPublisher:
    def __init__(
        self,
        config: EdgeConfig,
        core: EdgeCore,
        metrics: EdgeMetrics,
        limited: GatedLog,
        clock: Callable[[], float],
        claimer: EpochClaimer,
    ) -> None:
        self.config = config
        self.core = core
        self.claimer = claimer
        self.metrics = metrics
        self.limited = limited
        self.clock = clock
        self.wake = asyncio.Event()
        self.beat_wake = asyncio.Event()
        self.connected = asyncio.Event()
        self.remote_loaded = asyncio.Event()
        # The beat loop and the drain may both be refused at once: one check at a time,
        # so a lost claim is claimed again once, not twice.
        self._fence_lock = asyncio.Lock()
        # A beat is never published while a batch is in flight: its service-set digest
        # then covers exactly the messages stored before it, which is what a consumer
        # holds when it reads the beat (anti-entropy compares the two).
        self._publish_lock = asyncio.Lock()
        # Every state and beat goes out through it; it knows when a failed one is settled.
        self.sender = FencedSender(metrics)
        self.standby: Standby | None = (
            Standby(config, core, claimer, limited, clock) if config.ha.standby else None
        )
        self.roster = StandbyRoster(config.ha.lease_beats)
        self.resyncer = Resyncer(
            core,
            metrics,
            limited,
            clock,
            self._publish_lock,
            self.wake,
            lambda: read_cluster_services(self._js, config.cluster, self._invalid),
        )
        self._nc: Any = None
        self._js: Any = None
        self._closing = False
        # Cleared when the stream refuses per-message TTLs and cannot be updated to allow
        # them: tombstones that never expire beat tombstones that never get out.
        self._tombstone_ttl = config.tombstone_ttl_s

    # -- connection callbacks ---------------------------------------------
    async def _on_error(self, exc: Exception) -> None:
        self.limited.warning("nats_error", self.clock(), "NATS: %s: %s", type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        self.connected.clear()
        self.metrics.nats_connected.set(0)
        if self._closing:
            return
        self.limited.warning(
            "nats_disconnected",
            self.clock(),
            "disconnected from NATS; keeping the latest state per service",
        )

    async def _on_reconnected(self) -> None:
        self.connected.set()
        self.metrics.nats_connected.set(1)
        log.info("reconnected to NATS; publishing what changed")
        self.wake.set()

    # -- main ------------------------------------------------------------
    async def run(self) -> None:
        """Until cancelled; raises ``Deposed`` when another agent took the cluster over
        (in a standby group it steps down and stands by instead)."""
        cfg = self.config
        requeued = self.core.state.requeue_inflight()
        if requeued:
            # A restart after a crash: what the last run had in flight is published again.
            log.info("%d publishes of the previous NATS task are queued again", requeued)
        self._nc = await natsconn.connect(
            cfg.nats,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        try:
            self.connected.set()
            self.metrics.nats_connected.set(1)
            self._js = self._nc.jetstream(timeout=cfg.publish_timeout_s)
            self.sender.js = self._js
            self.sender.nc = self._nc
            await self._ensure_stream()
            while True:
                if self.core.epoch == 0:
                    # Once per term: a restarted NATS task keeps the epoch it claimed.
                    await self._take_cluster()
                try:
                    await self._lead()
                except Deposed as exc:
                    if self.standby is None:
                        raise
                    self._step_down(exc)
        finally:
            self._closing = True
            self.connected.clear()
            self.metrics.nats_connected.set(0)
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._closing = False

    def _reporter(self, what: str) -> Callable[[BaseException, int], None]:
        def report(exc: BaseException, attempt: int) -> None:
            why = publish_error_reason(exc)
            self.metrics.publish_errors.labels(why).inc()
            self.limited.warning(
                why, self.clock(), "NATS %s failed (attempt %d): %s", what, attempt, exc
            )

        return report

    async def _ensure_stream(self) -> None:
        async for attempt in forever((Exception,), self._reporter("ensure_stream")):
            with attempt:
                await natsconn.join_stream(self._js, self.config.nats.replicas)

    async def _take_cluster(self) -> None:
        if self.standby is None:
            await self._claim()
            return
        self.metrics.leader.set(0)
        decision = await self.standby.until_leader(self._nc, self._js)
        self._claimed(self.claimer.epoch)
        if decision.verdict is Verdict.EXPIRED:
            self.metrics.takeovers.inc()
            log.warning(
                "took cluster %s over: the leader was silent for %.1fs (lease %.1fs); epoch %d",
                self.config.cluster,
                decision.silent_s or 0.0,
                decision.lease_s,
                self.claimer.epoch,
            )

    async def _claim(self) -> None:
        self._claimed(await claim_epoch(self._js, self.claimer, self._reporter("claim")))

    def _claimed(self, epoch: int) -> None:
        self.core.set_epoch(epoch)
        self.metrics.epoch.set(epoch)
        self.metrics.claims.inc()
        self.metrics.leader.set(1)
        log.info("claimed cluster %s: epoch %d", self.config.cluster, epoch)

    async def _lead(self) -> None:
        """Publish as the cluster's owner until cancelled or deposed (``Deposed``)."""
        cluster = self.config.cluster
        subs = [
            await self._nc.subscribe(subjects.resync_subject(cluster), cb=self.resyncer.on_request)
        ]
        try:
            if self.standby is not None:
                subs.append(
                    await self._nc.subscribe(
                        subjects.standby_subject(cluster), cb=self._on_presence
                    )
                )
            # The stream first: the first beat's digest then already covers what the
            # stream holds, and unchanged services are settled before the drain starts.
            await self._load_remote()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._beat_loop())
                group.create_task(self._drain_loop())
        except* Deposed as deposed:
            raise deposed.exceptions[0] from None
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    def _step_down(self, exc: Deposed) -> None:
        """Deposed in a standby group: stop publishing, keep the source warm, stand by."""
        assert self.standby is not None
        log.warning("deposed: %s; standing by (cluster %s)", exc, self.config.cluster)
        self.metrics.deposed.inc()
        self.metrics.stepdowns.inc()
        self.metrics.epoch.set(0)
        self.metrics.leader.set(0)
        self.metrics.standbys.set(0)
        self.core.step_down()
        self.roster.clear()
        self.remote_loaded.clear()
        self.standby.stepped_down()

    async def _on_presence(self, msg: Any) -> None:
        presence = decode_presence(msg.data or b"", self.config.cluster)
        if presence is None:
            self.metrics.invalid_input.labels("standby_malformed").inc()
            return
        if presence.agent != self.claimer.agent:
            self.roster.heard(presence.agent, presence.interval_s, self.clock())

    async def _fenced(self) -> None:
        """The server refused a fenced publish: were we deposed, or did the stream lose the claim?"""
        async with self._fence_lock:
            await self._fenced_locked()

    async def _fenced_locked(self) -> None:
        last = await read_last_claim(self._js, self.config.cluster)
        verdict = self.claimer.ownership(last.seq)
        if verdict is Ownership.DEPOSED:
            raise Deposed(self.claimer.epoch, last)
        if verdict is Ownership.LOST:
            log.warning(
                "the claim of epoch %d is gone from the stream (last claim: %d); claiming again "
                "and republishing",
                self.claimer.epoch,
                last.seq,
            )
            if self.standby is None:
                await self._claim()
            elif await try_claim(self._js, self.claimer, 0):
                self._claimed(self.claimer.epoch)
            else:
                # A standby saw the claim gone too and was faster: it owns the cluster now.
                newer = await read_last_claim(self._js, self.config.cluster)
                raise Deposed(self.claimer.epoch, newer)
            self.core.state.mark_all_dirty()
            self.wake.set()

    async def _fenced_quietly(self) -> None:
        try:
            await self._fenced()
        except Deposed:
            raise
        except Exception as exc:  # NATS trouble while checking: the next refusal asks again
            self.limited.warning("fence_check", self.clock(), "claim check failed: %s", exc)

    def _invalid(self, reason: str, detail: str) -> None:
        self.metrics.invalid_input.labels(reason).inc()
        self.limited.warning(reason, self.clock(), "%s", detail)

    async def _load_remote(self) -> None:
        async for attempt in forever((Exception,), self._reporter("read_stream")):
            with attempt:
                remote = await read_cluster_services(self._js, self.config.cluster, self._invalid)
        async with self._publish_lock:
            queued = self.core.remote_loaded(remote)
        pending = self.core.state.dirty_count
        log.info(
            "read the stream: %d services of cluster %s there, %d to publish",
            len(remote),
            self.config.cluster,
            pending,
        )
        if queued:
            self.metrics.start_tombstones.inc(queued)
            log.info(
                "start-up reconciliation: %d tombstones for services the source no longer has",
                queued,
            )
        self.remote_loaded.set()
        self.wake.set()

    # -- draining ----------------------------------------------------------
    async def _drain_loop(self) -> None:
        self.wake.set()
        while True:
            await self.wake.wait()
            self.wake.clear()
            async for attempt in forever(
                (PublishFailed,), self._reporter("publish"), initial_s=0.1, max_s=5.0
            ):
                with attempt:
                    await self.drain()

    async def drain(self) -> None:
        """Publish every dirty key; raises PublishFailed (after settling the batch) on any error."""
        state = self.core.state
        while state.dirty_count or self._read_due():
            if not self._nc.is_connected:
                # Nothing is sent while NATS is away; the table keeps the latest state per key.
                self.connected.clear()
                await self.connected.wait()
            async with self._publish_lock:
                try:
                    taken = self.core.take_batch(self.config.publish_batch)
                    for sent, rejected in taken.rejected:
                        self._unpublishable(sent.subject, rejected)
                    batch = taken.outgoing
                    failure: BaseException | None = None
                    if batch:
                        results = await self.sender.publish_many(
                            [self._outbound(o) for o in batch], self.config.publish_timeout_s
                        )
                        failure = self._settle(batch, results)
                    elif not taken.rejected and not self._read_due():
                        break
                    if failure is None and self._read_due():
                        # Still under the lock: no beat sees the digest before it is right.
                        failure = await self._read_back()
                finally:
                    # Cancelled or crashed before every message was settled: take them back,
                    # so they are published again instead of staying "in flight" forever.
                    state.requeue_inflight()
            self.metrics.pending.set(state.dirty_count + state.inflight_count)
            if failure is not None:
                reason = publish_error_reason(failure)
                if reason is PublishError.NO_STREAM:
                    await self._recover_stream()
                elif reason is PublishError.FENCED:
                    await self._fenced_quietly()  # raises Deposed, or claims again
                elif reason is PublishError.TTL_DISABLED:
                    await self._allow_ttl()
                raise PublishFailed(reason, f"{type(failure).__name__}: {failure}")

    def _read_due(self) -> bool:
        """Keys to read back, and a message sent after the last failed one was acknowledged
        (else the beat that acknowledges one reads them)."""
        return bool(self.core.state.unread_count) and self.sender.settled_since_failure

    async def _read_back(self) -> BaseException | None:
        """Read the last message of every key whose stream content is unknown and will not
        be published over (docs/digest.md); the error, if a read failed (retried)."""
        for key in self.core.state.unread():
            try:
                remote = await read_cluster_service(
                    self._js, self.config.cluster, key, self._invalid
                )
            except Exception as exc:  # NATS trouble: the drain's retry reads again
                return exc
            self.core.observed(key, remote)
        return None

    def _settle(
        self, batch: list[Outgoing], results: list[BaseException | None]
    ) -> BaseException | None:
        """Report every result to the table; the first failure, if any."""
        state = self.core.state
        failure: BaseException | None = None
        for sent, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                state.failed(sent)
                failure = failure or result
            else:
                state.acked(sent)
                kind = PublishedKind.TOMBSTONE if sent.message.deleted else PublishedKind.SERVICE
                self.metrics.published.labels(kind).inc()
        return failure

    def _unpublishable(self, subject: str, rejected: Rejected) -> None:
        self.metrics.unpublishable.labels(rejected.reason).inc()
        self.limited.warning(
            f"unpublishable_{rejected.reason}",
            self.clock(),
            "not published, the registry would reject it: %s: %s",
            subject,
            rejected,
        )

    async def _recover_stream(self) -> None:
        """No stream answered: JetStream still starting, or a NATS that lost its store."""
        import nats.js.errors

        try:
            await self._js.stream_info(subjects.STREAM)
        except nats.js.errors.NotFoundError:
            log.warning(
                "stream %s is gone; recreating it and republishing everything", subjects.STREAM
            )
            await self._ensure_stream()
            # The claim went with the stream: the fence check finds it lost, claims again
            # and marks everything for republishing.
            await self._fenced()
        except Exception:  # not ready yet; the drain retry comes back here
            return

    async def _allow_ttl(self) -> None:
        try:
            await natsconn.ensure_stream(self._js, self.config.nats.replicas)
        except Exception as exc:
            log.warning(
                "stream %s refuses per-message TTLs and cannot be updated (%s); "
                "tombstones are published without Nats-TTL and will not expire",
                subjects.STREAM,
                exc,
            )
            self._tombstone_ttl = 0

    def _headers(self, epoch: int, revision: int) -> dict[str, str]:
        headers = self.claimer.fence_headers(epoch)
        headers["Nats-Msg-Id"] = subjects.msg_id(self.config.cluster, epoch, revision)
        return headers

    def _outbound(self, sent: Outgoing) -> Outbound:
        message = sent.message
        headers = self._headers(message.epoch, message.revision)
        if message.deleted and self._tombstone_ttl:
            headers["Nats-TTL"] = str(self._tombstone_ttl)
        return sent.subject, sent.data, headers

    # -- beats and resync --------------------------------------------------
    async def _beat_loop(self) -> None:
        while True:
            self.resyncer.if_due()
            if self._nc.is_connected:
                await self._beat_once()
            # Every interval, or at once when a gateway's load moved (beat_wake).
            self.beat_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.beat_interval_s):
                    await self.beat_wake.wait()

    async def _beat_once(self) -> None:
        now = self.clock()
        self.core.standbys = self.roster.count(now)
        self.metrics.standbys.set(self.core.standbys)
        async with self._publish_lock:
            try:
                out = self.core.beat_message(sent_at=time.time())
            except Rejected as exc:
                self._unpublishable(subjects.cluster_subject(self.config.cluster), exc)
                return
            headers = self._headers(out.beat.epoch, out.beat.revision)
            try:
                await self.sender.publish(out.subject, out.data, headers)
            except Exception as exc:  # the next beat is the retry
                failure: Exception = exc
            else:
                self.metrics.published.labels(PublishedKind.BEAT).inc()
                if self._read_due():
                    # The beat is the first acknowledgement after a failed publish.
                    failed = await self._read_back()
                    if failed is not None:
                        self.limited.warning("read_back", now, "stream not read back: %s", failed)
                return
        reason = publish_error_reason(failure)
        self.metrics.publish_errors.labels(reason).inc()
        self.limited.warning(f"beat_{reason}", now, "beat not published: %s", failure)
        # An idle agent learns of its deposition, or of a lost stream, within one beat.
        if reason is PublishError.FENCED:
            await self._fenced_quietly()
        elif reason is PublishError.NO_STREAM:
            await self._recover_stream()
