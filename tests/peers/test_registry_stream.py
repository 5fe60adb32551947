"""Reading the stream: consumer loss, server restarts, a NATS cluster, and watch_inventory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import nats
import pytest

from dns_server.config import DnsConfig
from global_registry.config import IngestConfig, ProbeConfig
from global_registry.core.snapshot import inventory
from global_registry.io.watch import (
    ClusterRetired,
    ClusterUpdated,
    InventorySnapshot,
    ServiceRemoved,
    ServiceUpdated,
    WatchEvent,
    watch_inventory,
)
from harness.nats_peer import NatsPeer
from harness.samples import claim_epoch, cluster_beat, instance, publish, service_state
from syncmesh import subjects
from syncmesh.nats_config import NatsConfig
from syncmesh.view_api import ServiceKey
from syncmesh_app.embedded.process import wait_until
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig
from syncmesh_io.nats_connection import ensure_stream

pytestmark = pytest.mark.peers


def config(servers: list[str], **overrides: object) -> RegistryConfig:
    values: dict[str, object] = {
        "nats": NatsConfig(servers=servers),
        "admin_port": 0,
        "dns": DnsConfig(enabled=False),
        "probe": ProbeConfig(enabled=False),
        "ingest": IngestConfig(heartbeat_s=0.5),
    }
    values.update(overrides)
    return RegistryConfig(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(cfg: RegistryConfig) -> AsyncIterator[RegistryApp]:
    async with RegistryApp(cfg) as app:
        async with asyncio.timeout(20):
            await app.wait_ready()
        yield app


def knows(app: RegistryApp, service: str, cluster: str = "east") -> bool:
    rec = app.view.clusters.get(cluster)
    return rec is not None and ("default", service) in rec.services


async def test_reader_recovers_when_its_consumer_disappears(nats_peer: NatsPeer) -> None:
    nc = await nats.connect(nats_peer.url)
    js = nc.jetstream()
    await ensure_stream(js)
    east = await claim_epoch(js, "east")
    await publish(js, service_state("east", "before", epoch=east, revision=1))
    async with running(config([nats_peer.url])) as app:
        assert knows(app, "before")
        jsm = nc.jsm()
        for consumer in await jsm.consumers_info(subjects.STREAM):
            await jsm.delete_consumer(subjects.STREAM, consumer.name)
        await publish(js, service_state("east", "after", epoch=east, revision=2))

        async def recovered() -> bool:
            return knows(app, "after")

        # Silence for 3 heartbeats (0.5 s) recreates the consumer from the last sequence seen.
        await wait_until(recovered, 10, what="message published after the consumer was deleted")
        assert knows(app, "before")
    await nc.close()


@pytest.mark.reliability
async def test_registry_keeps_up_across_a_nats_restart(nats_peer: NatsPeer) -> None:
    nc = await nats.connect(nats_peer.url)
    js = nc.jetstream()
    await ensure_stream(js)
    east = await claim_epoch(js, "east")
    await publish(js, service_state("east", "one", epoch=east, revision=1))
    await nc.close()
    async with running(config([nats_peer.url])) as app:
        await nats_peer.stop_node(0)
        await nats_peer.start_node(0)
        nc = await nats.connect(nats_peer.url)
        js = nc.jetstream()
        await publish(js, service_state("east", "two", epoch=east, revision=2))

        async def caught() -> bool:
            return knows(app, "two")

        await wait_until(caught, 15, what="message published after the restart")
        assert knows(app, "one")
        await nc.close()


@pytest.mark.reliability
async def test_replicated_stream_survives_losing_the_node_the_registry_used(
    nats_cluster: NatsPeer,
) -> None:
    nc = await nats.connect(nats_cluster.urls[1])
    js = nc.jetstream()
    await ensure_stream(js, replicas=3)
    east = await claim_epoch(js, "east")
    await publish(js, service_state("east", "one", epoch=east, revision=1))
    # Only node 1 is configured: the client learns the others from the cluster and must fail over.
    cfg = config(nats_cluster.urls[:1], nats=NatsConfig(servers=nats_cluster.urls[:1], replicas=3))
    async with running(cfg) as app:
        assert knows(app, "one")
        await nats_cluster.stop_node(0, hard=True)

        async def published() -> bool:
            await publish(js, service_state("east", "two", epoch=east, revision=2))
            return True

        await wait_until(published, 20, interval=0.5, what="stream writable on the remaining nodes")

        async def caught() -> bool:
            return knows(app, "two")

        await wait_until(caught, 20, what="registry reconnected to another node")
    await nc.close()


async def next_event(events: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await asyncio.wait_for(anext(events), 10)


async def test_watch_inventory_gives_a_snapshot_then_changes_without_a_registry(
    nats_peer: NatsPeer,
) -> None:
    nc = await nats.connect(nats_peer.url)
    js = nc.jetstream()
    await ensure_stream(js)
    east, west = await claim_epoch(js, "east"), await claim_epoch(js, "west")
    await publish(js, cluster_beat("east", epoch=east))
    await publish(js, service_state("east", "web", epoch=east, revision=2))
    await publish(js, service_state("east", "api", epoch=east, revision=3))
    await publish(js, service_state("west", "web", epoch=west, revision=4, namespace="other"))
    events = watch_inventory(nc, namespace="default")
    try:
        first = await next_event(events)
        assert isinstance(first, InventorySnapshot)
        assert [(s.cluster, s.service) for s in first.inventory.services] == [
            ("east", "api"),
            ("east", "web"),
        ]
        assert not first.inventory.clusters[0].stale

        await publish(
            js, service_state("west", "ignored", epoch=west, revision=5, namespace="other")
        )
        # A spoof yields nothing either, nor does a forged epoch.
        await publish(
            js,
            service_state("west", "web", epoch=west, revision=6),
            subject=subjects.service_subject("east", "default", "db"),
        )
        await publish(js, service_state("east", "db", epoch=10**12, revision=6))
        await publish(
            js,
            service_state(
                "east", "web", epoch=east, revision=7, instances=[instance(address="10.0.0.7")]
            ),
        )
        updated = await next_event(events)
        assert isinstance(updated, ServiceUpdated)
        assert (updated.service.service, updated.service.revision) == ("web", 7)
        assert updated.service.instances[0].address == "10.0.0.7"

        await publish(
            js, service_state("east", "api", epoch=east, revision=8, instances=[], deleted=True)
        )
        removed = await next_event(events)
        assert removed == ServiceRemoved("east", "default", "api")

        await publish(js, cluster_beat("east", epoch=east, revision=9, interval_s=0.2))
        beat = await next_event(events)
        assert isinstance(beat, ClusterUpdated) and beat.cluster.beat is not None
        assert beat.cluster.beat.revision == 9
        # Then no beat for 3 intervals: the watcher reports the agent stale.
        stale = await next_event(events)
        assert isinstance(stale, ClusterUpdated) and stale.cluster.stale

        # Decommissioned: one event for the cluster and everything of it.
        retirer = await claim_epoch(js, "east")
        await publish(js, cluster_beat("east", epoch=retirer, revision=1, retired=True))
        assert await next_event(events) == ClusterRetired("east")
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        await nc.close()


async def test_watch_and_registry_agree(nats_peer: NatsPeer) -> None:
    nc = await nats.connect(nats_peer.url)
    js = nc.jetstream()
    await ensure_stream(js)
    epochs = {f"c{i}": await claim_epoch(js, f"c{i}") for i in range(3)}
    for i in range(30):
        cluster = f"c{i % 3}"
        await publish(js, service_state(cluster, f"s{i}", epoch=epochs[cluster], revision=i + 1))
    await publish(
        js, service_state("c0", "s0", epoch=epochs["c0"], revision=100, instances=[], deleted=True)
    )
    events = watch_inventory(nc)
    try:
        snapshot = await next_event(events)
        assert isinstance(snapshot, InventorySnapshot)
        async with running(config([nats_peer.url])) as app:
            assert inventory(app.view).services == snapshot.inventory.services
            assert not app.view.resolve(ServiceKey("default", "s0"), None).known
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        await nc.close()
