"""``watch_inventory(nc)``: the inventory as a snapshot, then every change after it.

For consumers that want the global inventory in their own process. It reads
the state stream itself (same validation and ordering rules as the registry),
so it works with no registry replica running::

    async for event in watch_inventory(nc, namespace="payments"):
        match event:
            case InventorySnapshot(inventory): ...
            case ServiceUpdated(service): ...
            case ServiceRemoved(cluster, namespace, service): ...
            case ClusterUpdated(cluster): ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from nats.errors import TimeoutError as NatsTimeout

from global_registry.config import StaleConfig
from global_registry.core.ingest import Ingest, IngestResult
from global_registry.core.jsmeta import parse_ack_reply
from global_registry.core.snapshot import inventory
from global_registry.core.view import RegistryView
from global_registry.io.stream_consumer import subscribe_ordered
from syncmesh import subjects
from syncmesh.limits import LimitsConfig
from syncmesh.schema import (
    ClusterBeat,
    Inventory,
    InventoryCluster,
    InventoryService,
    Locality,
    ServiceState,
)

__all__ = [
    "InventorySnapshot",
    "ServiceUpdated",
    "ServiceRemoved",
    "ClusterUpdated",
    "WatchEvent",
    "watch_inventory",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InventorySnapshot:
    inventory: Inventory


@dataclass(frozen=True, slots=True)
class ServiceUpdated:
    service: InventoryService


@dataclass(frozen=True, slots=True)
class ServiceRemoved:
    cluster: str
    namespace: str
    service: str


@dataclass(frozen=True, slots=True)
class ClusterUpdated:
    """A new beat, or the cluster's agent turning stale (``cluster.stale``)."""

    cluster: InventoryCluster


WatchEvent = InventorySnapshot | ServiceUpdated | ServiceRemoved | ClusterUpdated


def _event(view: RegistryView, result: IngestResult) -> WatchEvent | None:
    message = result.message
    if result.outcome not in ("applied", "same") or message is None:
        return None
    if isinstance(message, ClusterBeat):
        rec = view.clusters[message.cluster]
        return ClusterUpdated(
            InventoryCluster(cluster=message.cluster, stale=rec.stale, beat=rec.beat)
        )
    assert isinstance(message, ServiceState)
    if message.deleted:
        if result.outcome != "applied":
            return None
        return ServiceRemoved(message.cluster, message.namespace, message.service)
    return ServiceUpdated(
        InventoryService(
            cluster=message.cluster,
            namespace=message.namespace,
            service=message.service,
            source_name=message.source_name,
            instances=message.instances,
            epoch=message.epoch,
            revision=message.revision,
        )
    )


def _wanted(event: WatchEvent, cluster: str | None, namespace: str | None) -> bool:
    if isinstance(event, ClusterUpdated):
        return cluster is None or event.cluster.cluster == cluster
    if isinstance(event, ServiceUpdated):
        name, ns = event.service.cluster, event.service.namespace
    elif isinstance(event, ServiceRemoved):
        name, ns = event.cluster, event.namespace
    else:
        return True
    return (cluster is None or name == cluster) and (namespace is None or ns == namespace)


async def watch_inventory(
    nc: Any,
    cluster: str | None = None,
    namespace: str | None = None,
    stale: StaleConfig | None = None,
    limits: LimitsConfig | None = None,
) -> AsyncIterator[WatchEvent]:
    """Yield an ``InventorySnapshot`` once caught up with the stream, then each change."""
    limits = limits or LimitsConfig()
    view = RegistryView(stale or StaleConfig(), limits, Locality(), probes_required=False)
    ingest = Ingest(view, limits)
    loop = asyncio.get_running_loop()
    js = nc.jetstream()
    info = await js.stream_info(subjects.STREAM)
    ingest.begin(int(info.state.last_seq), loop.time())
    sub = await subscribe_ordered(js)
    try:
        while not ingest.caught_up:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except NatsTimeout:
                # Nothing delivered for a second: maybe nothing is left to read.
                consumer = await sub.consumer_info()
                if consumer.num_pending == 0 and sub.pending_msgs == 0:
                    ingest.mark_caught_up(loop.time())
                continue
            _handle(ingest, msg, loop.time())
        yield InventorySnapshot(inventory(view, cluster, namespace))
        while True:
            deadline = view.next_deadline()
            timeout = (
                1.0 if deadline is None else min(1.0, max(0.01, deadline - loop.time() + 0.01))
            )
            try:
                msg = await sub.next_msg(timeout=timeout)
            except NatsTimeout:
                fresh = {name for name, rec in view.clusters.items() if not rec.stale}
                view.tick(loop.time())
                for name in sorted(fresh):
                    rec = view.clusters[name]
                    if rec.stale and (cluster is None or name == cluster):
                        yield ClusterUpdated(
                            InventoryCluster(cluster=name, stale=True, beat=rec.beat)
                        )
                continue
            event = _event(view, _handle(ingest, msg, loop.time()))
            if event is not None and _wanted(event, cluster, namespace):
                yield event
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def _handle(ingest: Ingest, msg: Any, now: float) -> IngestResult:
    ack = parse_ack_reply(msg.reply) if msg.reply else None
    if ack is None:
        result = ingest.handle(msg.subject, msg.data, now)
    else:
        result = ingest.handle(
            msg.subject,
            msg.data,
            now,
            stream_seq=ack.stream_seq,
            pending=ack.pending,
            age_s=max(0.0, time.time() - ack.stored_at_ns / 1e9),
        )
    if result.rejected is not None and result.log:
        log.warning("watch: rejected message on %s: %s", msg.subject[:200], result.rejected)
    return result
