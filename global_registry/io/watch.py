"""``watch_inventory(nc)``: the inventory as a snapshot, then every change after it.

For consumers that want the global inventory in their own process. It reads
the state stream with the registry's own reader (``StreamReader``: the same
validation, epoch fencing and ordering), so it works with no registry
replica running::

    async for event in watch_inventory(nc, namespace="payments"):
        match event:
            case InventorySnapshot(inventory): ...
            case ServiceUpdated(service): ...
            case ServiceRemoved(cluster, namespace, service): ...
            case ClusterUpdated(cluster): ...
            case ClusterRetired(cluster): ...
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from global_registry.config import StaleConfig
from global_registry.core.ingest import Ingest, IngestResult
from global_registry.core.records import Outcome
from global_registry.core.snapshot import inventory
from global_registry.core.view import RegistryView
from global_registry.io.stream_reader import StreamReader
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
    "ClusterRetired",
    "WatchEvent",
    "watch_inventory",
]

# A watcher this many events behind gets a fresh snapshot instead of the backlog,
# so a slow consumer costs bounded memory.
MAX_BACKLOG = 10_000


@dataclass(frozen=True, slots=True)
class InventorySnapshot:
    """Everything (filtered); first, and again whenever the watcher fell too far behind."""

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


@dataclass(frozen=True, slots=True)
class ClusterRetired:
    """The cluster was decommissioned: it and every service of it are gone."""

    cluster: str


WatchEvent = InventorySnapshot | ServiceUpdated | ServiceRemoved | ClusterUpdated | ClusterRetired


def _event(view: RegistryView, result: IngestResult) -> WatchEvent | None:
    message = result.message
    if result.outcome not in (Outcome.APPLIED, Outcome.SAME) or message is None:
        return None
    if isinstance(message, ClusterBeat):
        if message.retired:
            return ClusterRetired(message.cluster) if result.outcome is Outcome.APPLIED else None
        rec = view.clusters[message.cluster]
        return ClusterUpdated(
            InventoryCluster(cluster=message.cluster, stale=rec.stale, beat=rec.beat)
        )
    if not isinstance(message, ServiceState):
        return None  # an epoch claim: nothing a watcher sees changes
    if message.deleted:
        if result.outcome is not Outcome.APPLIED:
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
    if isinstance(event, ClusterRetired):
        return cluster is None or event.cluster == cluster
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
    """Yield an ``InventorySnapshot`` once caught up with the stream, then each change.

    Reads on ``nc`` with nats-py's ordered consumer (the fast reader would take
    over the connection's parser, which is not ours to change).
    """
    limits = limits or LimitsConfig()
    view = RegistryView(stale or StaleConfig(), limits, Locality(), probes_required=False)
    ingest = Ingest(view, limits)
    loop = asyncio.get_running_loop()
    backlog: deque[WatchEvent] = deque()
    arrived = asyncio.Event()

    def snapshot() -> InventorySnapshot:
        return InventorySnapshot(inventory(view, cluster, namespace))

    snapshotted = False

    def take_snapshot() -> None:
        nonlocal snapshotted
        snapshotted = True
        backlog.clear()
        backlog.append(snapshot())
        arrived.set()

    def on_result(result: IngestResult) -> None:
        # Runs right after each message is applied, so the snapshot and the events
        # after it describe the view at exactly those moments.
        if not snapshotted:
            if ingest.caught_up:
                take_snapshot()  # includes this message
            return
        event = _event(view, result)
        if event is None or not _wanted(event, cluster, namespace):
            return
        if len(backlog) >= MAX_BACKLOG:
            take_snapshot()
            return
        backlog.append(event)
        arrived.set()

    reader = StreamReader(nc, ingest, on_result, fast_path=False)
    try:
        await reader.start()
        await reader.caught_up.wait()
        if not snapshotted:
            # Caught up without a message to say so (an empty stream).
            take_snapshot()
        while True:
            while backlog:
                yield backlog.popleft()
            deadline = view.next_deadline()
            arrived.clear()
            if deadline is not None and deadline <= loop.time():
                for event in _tick(view, loop.time(), cluster):
                    yield event
                continue
            timeout = None if deadline is None else deadline - loop.time() + 0.01
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await arrived.wait()
    finally:
        await reader.stop()


def _tick(view: RegistryView, now: float, cluster: str | None) -> list[WatchEvent]:
    """Let time pass in the view; a ``ClusterUpdated`` for each agent that turned stale."""
    fresh = {name for name, rec in view.clusters.items() if not rec.stale}
    view.tick(now)
    events: list[WatchEvent] = []
    for name in sorted(fresh):
        rec = view.clusters[name]
        if rec.stale and (cluster is None or name == cluster):
            events.append(ClusterUpdated(InventoryCluster(cluster=name, stale=True, beat=rec.beat)))
    return events
