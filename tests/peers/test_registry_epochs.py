"""Epoch fencing and retired clusters on a real nats-server: forged and deposed writers
neither freeze nor poison a cluster, live or after a restart, and each is counted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import nats
import pytest

from dns_server.config import DnsConfig
from global_registry.config import IngestConfig, ProbeConfig
from global_registry.core.snapshot import inventory
from harness.nats_peer import NatsPeer
from harness.samples import claim_epoch, cluster_beat, instance, publish, service_state
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import encode
from syncmesh_app.embedded.process import wait_until
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig
from syncmesh_io.nats_connection import ensure_stream

pytestmark = [pytest.mark.peers, pytest.mark.security]


def config(peer: NatsPeer, replica: str, **overrides: object) -> RegistryConfig:
    values: dict[str, object] = {
        "nats": NatsConfig(servers=[peer.url]),
        "replica": replica,
        "admin_port": 0,
        "dns": DnsConfig(enabled=False),
        "probe": ProbeConfig(enabled=False),
    }
    values.update(overrides)
    return RegistryConfig(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(cfg: RegistryConfig) -> AsyncIterator[RegistryApp]:
    async with RegistryApp(cfg) as app:
        async with asyncio.timeout(20):
            await app.wait_ready()
        yield app


def rejected(app: RegistryApp, reason: str) -> float:
    value = app.collector_registry.get_sample_value(
        "syncmesh_registry_rejected_messages_total", {"reason": reason}
    )
    return value or 0.0


def services(app: RegistryApp, cluster: str = "east") -> dict[str, list[str]]:
    rec = app.view.clusters.get(cluster)
    if rec is None:
        return {}
    return {
        key[1]: [i.address for i in entry.state.instances] for key, entry in rec.services.items()
    }


async def test_a_forged_far_future_epoch_neither_freezes_nor_poisons_a_cluster(
    nats_peer: NatsPeer,
) -> None:
    nc = await nats.connect(nats_peer.url)
    js = nc.jetstream()
    await ensure_stream(js)
    east = await claim_epoch(js, "east")
    await publish(js, cluster_beat("east", epoch=east))
    await publish(js, service_state("east", "web", epoch=east, revision=2))
    try:
        async with running(config(nats_peer, "live")) as live:
            # What a wall-clock epoch from a VM a year ahead, or a forger, looks like.
            forged = service_state(
                "east", "api", epoch=10**12, revision=1, instances=[instance(address="10.6.6.6")]
            )
            await publish(js, forged)
            # The real agent goes on after it.
            await publish(js, service_state("east", "db", epoch=east, revision=3))
            moved = [instance(address="10.0.0.9")]
            await publish(js, service_state("east", "web", epoch=east, revision=4, instances=moved))

            async def applied() -> bool:
                return services(live) == {"web": ["10.0.0.9"], "db": ["10.0.0.1"]}

            await wait_until(applied, 5, what="real messages after the forged one")
            assert rejected(live, "future-epoch") == 1.0
        # A replica started afterwards reads the forged message in the stream: same view.
        async with running(config(nats_peer, "restarted")) as restarted:
            assert services(restarted) == {"web": ["10.0.0.9"], "db": ["10.0.0.1"]}
            assert rejected(restarted, "future-epoch") == 1.0
            await publish(js, service_state("east", "api", epoch=east, revision=5))

            async def not_frozen() -> bool:
                return "api" in services(restarted)

            await wait_until(not_frozen, 5, what="a live message after the replay")
    finally:
        await nc.close()


async def test_a_deposed_writer_is_rejected_and_its_earlier_messages_stay(
    nats_peer: NatsPeer,
) -> None:
    nc = await nats.connect(nats_peer.url)
    js = nc.jetstream()
    await ensure_stream(js)
    old = await claim_epoch(js, "east")
    await publish(js, cluster_beat("east", epoch=old))
    await publish(js, service_state("east", "web", epoch=old, revision=2))
    await publish(js, service_state("east", "api", epoch=old, revision=3))
    try:
        async with running(config(nats_peer, "live")) as live:
            new = await claim_epoch(js, "east")  # a second agent took the cluster over
            assert new > old
            # The first one was only frozen and writes again: new keys and old ones.
            zombie = [instance(address="10.6.6.6")]
            await publish(js, service_state("east", "db", epoch=old, revision=4))
            await publish(js, service_state("east", "web", epoch=old, revision=5, instances=zombie))
            await publish(js, service_state("east", "cache", epoch=new, revision=1))

            async def new_agent_applied() -> bool:
                return "cache" in services(live)

            await wait_until(new_agent_applied, 5, what="the new agent's message")
            assert rejected(live, "deposed") == 2.0
            expected = {"api": ["10.0.0.1"], "cache": ["10.0.0.1"]}
            # web's pre-takeover state was replaced in the stream by the zombie's write
            # (one message per subject); the live view still holds it.
            assert services(live) == {**expected, "web": ["10.0.0.1"]}
            assert live.view.epoch("east") == new
            live_status = live.status_report().clusters[0]
            assert live_status.epoch == new
        for fast_path in (True, False):
            cfg = config(
                nats_peer, f"restarted-{fast_path}", ingest=IngestConfig(fast_path=fast_path)
            )
            async with running(cfg) as restarted:
                # Only the new claim is stored now; read first, it keeps api (stored before
                # it) and still fences the zombie's writes after it.
                assert services(restarted) == expected
                assert rejected(restarted, "deposed") == 2.0
                assert rejected(restarted, "unclaimed-epoch") == 0.0
    finally:
        await nc.close()


async def test_every_fencing_reason_is_counted(nats_peer: NatsPeer) -> None:
    nc = await nats.connect(nats_peer.url)
    js = nc.jetstream()
    await ensure_stream(js)
    east = await claim_epoch(js, "east")
    await publish(js, service_state("east", "web", epoch=east, revision=1))
    try:
        async with running(config(nats_peer, "r1")) as app:
            await publish(js, service_state("east", "a", epoch=10**12))  # future-epoch
            await publish(js, service_state("east", "b", epoch=east + 1))  # unclaimed-epoch
            await publish(js, service_state("west", "c", epoch=1))  # unclaimed: west never claimed
            await claim_epoch(js, "east")
            await publish(js, service_state("east", "d", epoch=east, revision=9))  # deposed

            async def counted() -> bool:
                return rejected(app, "deposed") == 1.0

            await wait_until(counted, 5, what="all four rejections")
            assert rejected(app, "future-epoch") == 1.0
            assert rejected(app, "unclaimed-epoch") == 2.0
            assert sorted(services(app)) == ["web"]
            assert not app.view.cluster_known("west")
    finally:
        await nc.close()


async def test_a_retired_cluster_is_forgotten_live_and_after_a_restart(
    nats_peer: NatsPeer,
) -> None:
    nc = await nats.connect(nats_peer.url)
    js = nc.jetstream()
    await ensure_stream(js)
    epochs = {name: await claim_epoch(js, name) for name in ("east", "west")}
    for number, (name, epoch) in enumerate(epochs.items()):
        await publish(js, cluster_beat(name, epoch=epoch, client_cidrs=[f"10.{number}.0.0/16"]))
        await publish(js, service_state(name, "web", epoch=epoch, revision=2))
    try:
        async with running(config(nats_peer, "live")) as live:
            retirer = await claim_epoch(js, "east")  # the operator's tool takes over
            await publish(js, cluster_beat("east", epoch=retirer, revision=1, retired=True))

            async def forgotten() -> bool:
                return not live.view.cluster_known("east")

            await wait_until(forgotten, 5, what="east retired")
            # The old agent, not stopped after all, cannot bring it back.
            await publish(js, service_state("east", "api", epoch=epochs["east"], revision=9))
            await publish(js, service_state("west", "api", epoch=epochs["west"], revision=9))

            async def west_api() -> bool:
                return "api" in services(live, "west")

            await wait_until(west_api, 5, what="a later message of west")
            assert not live.view.cluster_known("east")
            snapshot = encode(inventory(live.view))
        async with running(config(nats_peer, "restarted")) as restarted:
            assert encode(inventory(restarted.view)) == snapshot
    finally:
        await nc.close()
