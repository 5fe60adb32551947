"""Anti-entropy, asyncio side: send the resync requests the pure core decides on.

Requests go out with core NATS on ``syncmesh.v2.resync.<cluster>`` (every agent
of the cluster listens; the leader acts, rate-limited on its side as well), are
counted in ``syncmesh_registry_resync_requests_total{cluster}``, and the first
request of a mismatch and its end are logged once each.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from global_registry.config import AntiEntropyConfig
from global_registry.core.anti_entropy import AntiEntropy, SyncEvent, SyncEventKind
from global_registry.core.records import ClusterRecord
from global_registry.io.metrics import RegistryMetrics
from syncmesh import subjects
from syncmesh.schema import SCHEMA_VERSION, ClusterBeat, ResyncRequest, encode

__all__ = ["ResyncSender"]

log = logging.getLogger("global_registry.anti_entropy")


class ResyncSender:
    def __init__(self, config: AntiEntropyConfig, replica: str, metrics: RegistryMetrics) -> None:
        self.core = AntiEntropy(config)
        self.replica = replica
        self.metrics = metrics
        self.nc: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    def on_beat(self, beat: ClusterBeat, rec: ClusterRecord, now: float) -> SyncEvent | None:
        event = self.core.on_beat(beat, rec, now)
        if event is None:
            return None
        if event.kind is SyncEventKind.HEALED:
            log.info(
                "cluster %s: %s (mismatch lasted %.1fs)",
                event.cluster,
                event.detail,
                event.mismatch_s,
            )
            return event
        self.metrics.resync_requests.labels(event.cluster).inc()
        if event.first:
            log.warning(
                "cluster %s: this replica's view differs from the agent's for %.1fs: %s; "
                "asking the agent to resync (repeated with backoff while it persists)",
                event.cluster,
                event.mismatch_s,
                event.detail,
            )
        task = asyncio.create_task(self._send(event), name=f"resync-{event.cluster}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return event

    async def _send(self, event: SyncEvent) -> None:
        if self.nc is None:
            return
        request = ResyncRequest(
            schema=SCHEMA_VERSION, reason=f"anti-entropy, replica {self.replica}: {event.detail}"
        )
        try:
            await self.nc.publish(subjects.resync_subject(event.cluster), encode(request))
        except Exception as exc:  # the next request, after the backoff, is the retry
            log.warning("cluster %s: resync request not sent: %s", event.cluster, exc)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
