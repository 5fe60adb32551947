"""The registry process against a real nats-server: spoofing, rebuilds, replicas, API, admin HTTP, DNS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import dns.asyncquery
import dns.message
import msgspec
import nats
import pytest

from dns_server.config import DnsConfig
from global_registry.config import IngestConfig, ProbeConfig, ReplicaLocality
from global_registry.core.snapshot import inventory
from harness.bound_ports import ADMIN_HTTP
from harness.nats_peer import NatsPeer
from harness.samples import claim_epoch, cluster_beat, instance, publish, service_state
from syncmesh import subjects
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import (
    Gateway,
    Inventory,
    InventoryRequest,
    ResolveReply,
    ResolveRequest,
    encode,
)
from syncmesh.view_api import ServiceKey
from syncmesh_app.embedded.process import wait_until
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig
from syncmesh_io.nats_connection import ensure_stream

pytestmark = pytest.mark.peers

WEB = ServiceKey("default", "web")


def config(peer: NatsPeer, replica: str = "r1", **overrides: object) -> RegistryConfig:
    values: dict[str, object] = {
        "nats": NatsConfig(servers=[peer.url]),
        "replica": replica,
        "admin_port": 0,
        "dns": DnsConfig(port=0),
        "locality": ReplicaLocality(region="us", zone="us-1"),
        "probe": ProbeConfig(interval_s=0.2, timeout_s=0.5, rise=2, fall=3, report_interval_s=0.5),
    }
    values.update(overrides)
    return RegistryConfig(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def gateway(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[asyncio.Server]:
    """A real TCP listener that accepts and closes: what the probes see of a gateway."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, host, port)
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


@contextlib.asynccontextmanager
async def running(cfg: RegistryConfig) -> AsyncIterator[RegistryApp]:
    async with RegistryApp(cfg) as app:
        async with asyncio.timeout(20):
            await app.wait_ready()
        yield app


async def client(peer: NatsPeer):  # type: ignore[no-untyped-def]
    nc = await nats.connect(peer.url)
    js = nc.jetstream()
    await ensure_stream(js)
    return nc, js


async def seed_two_clusters(js, east_port: int, west_port: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Two serving clusters; returns their epochs."""
    epochs = {name: await claim_epoch(js, name) for name in ("east", "west")}
    await publish(
        js,
        cluster_beat(
            "east",
            epoch=epochs["east"],
            region="us",
            zone="us-1",
            client_cidrs=["10.1.0.0/16"],
            gateways=[Gateway(address="127.0.0.1", port=east_port)],
        ),
    )
    await publish(
        js,
        cluster_beat(
            "west",
            epoch=epochs["west"],
            region="us",
            zone="us-2",
            client_cidrs=["10.2.0.0/16"],
            gateways=[Gateway(address="127.0.0.2", port=west_port)],
        ),
    )
    await publish(js, service_state("east", "web", epoch=epochs["east"], revision=2))
    await publish(js, service_state("west", "web", epoch=epochs["west"], revision=2))
    return epochs


async def metric(app: RegistryApp, name: str) -> float:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{app.admin_port}/metrics") as resp,
    ):
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            if line.split(" ")[0] == name or line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_message_on_easts_subject_claiming_west_is_rejected(nats_peer: NatsPeer) -> None:
    nc, js = await client(nats_peer)
    async with gateway() as gw:
        east = await claim_epoch(js, "east")
        await publish(
            js,
            cluster_beat(
                "east", epoch=east, gateways=[Gateway(address="127.0.0.1", port=port_of(gw))]
            ),
        )
        await publish(js, service_state("east", "web", epoch=east, revision=2))
        # On east's subject for api (east's web stays: the stream keeps one message per subject).
        spoof = service_state("west", "api", epoch=east, revision=77)
        await publish(js, spoof, subject=subjects.service_subject("east", "default", "api"))
        async with running(config(nats_peer)) as app:
            assert not app.view.cluster_known("west")
            assert [c.cluster for c in app.view.resolve(WEB, None).clusters] == ["east"]
            name = 'syncmesh_registry_rejected_messages_total{reason="cluster-mismatch"}'
            assert await metric(app, name) == 1.0
            # Live, too, and the process keeps serving: a beat claiming west on east's subject.
            await publish(
                js,
                cluster_beat("west", epoch=east, revision=78),
                subject=subjects.cluster_subject("east"),
            )
            await publish(js, service_state("east", "db", epoch=east, revision=79))

            async def applied() -> bool:
                return app.view.resolve(ServiceKey("default", "db"), None).known

            await wait_until(applied, 5, what="legit message after the spoofs")
            assert await metric(app, name) == 2.0
            assert not app.view.cluster_known("west")
    await nc.close()


async def test_a_restarted_registry_rebuilds_the_same_view_from_nats(nats_peer: NatsPeer) -> None:
    nc, js = await client(nats_peer)
    async with gateway() as gw:
        port = port_of(gw)
        epochs = {}
        for name in ("east", "west", "north"):
            epochs[name] = epoch = await claim_epoch(js, name)
            await publish(
                js,
                cluster_beat(name, epoch=epoch, gateways=[Gateway(address="127.0.0.1", port=port)]),
            )
            for i in range(20):
                await publish(
                    js,
                    service_state(
                        name,
                        f"svc-{i}",
                        epoch=epoch,
                        revision=i + 2,
                        instances=[instance(id=f"{name}-{i}", address=f"10.0.{i}.1")],
                    ),
                )
        await publish(
            js,
            service_state(
                "east", "svc-3", epoch=epochs["east"], revision=100, instances=[], deleted=True
            ),
        )
        await publish(
            js,
            service_state(
                "west",
                "svc-4",
                epoch=epochs["west"],
                revision=101,
                instances=[instance(id="new", address="10.9.9.9")],
            ),
        )
        # Older: dropped on every rebuild.
        await publish(js, service_state("west", "svc-4", epoch=epochs["west"], revision=50))
        async with running(config(nats_peer, "first")) as app:
            first = encode(inventory(app.view))
            assert len(inventory(app.view).services) == 59
        async with running(config(nats_peer, "second")) as app:
            assert encode(inventory(app.view)) == first
        async with running(config(nats_peer, "slow", ingest=IngestConfig(fast_path=False))) as app:
            assert app._reader is not None and app._reader.mode == "nats-py-ordered"
            assert encode(inventory(app.view)) == first
    await nc.close()


async def test_two_replicas_hold_the_same_view(nats_peer: NatsPeer) -> None:
    nc, js = await client(nats_peer)
    async with gateway() as east_gw, gateway("127.0.0.2") as west_gw:
        epochs = await seed_two_clusters(js, port_of(east_gw), port_of(west_gw))
        async with running(config(nats_peer, "a")) as a, running(config(nats_peer, "b")) as b:
            assert encode(inventory(a.view)) == encode(inventory(b.view))
            await publish(
                js,
                service_state(
                    "west",
                    "web",
                    epoch=epochs["west"],
                    revision=30,
                    instances=[instance(address="10.2.0.30")],
                ),
            )
            await publish(
                js,
                service_state(
                    "east", "web", epoch=epochs["east"], revision=31, instances=[], deleted=True
                ),
            )

            async def converged() -> bool:
                one, two = encode(inventory(a.view)), encode(inventory(b.view))
                applied = all(
                    ("default", "web") not in app.view.clusters["east"].services for app in (a, b)
                )
                return applied and one == two and b"10.2.0.30" in one

            await wait_until(converged, 5, what="both replicas apply the live changes")
            assert [c.cluster for c in a.view.resolve(WEB, None).clusters] == ["west"]

            # Same ranking; only the RTT each replica measured itself differs.
            def ranking(app: RegistryApp) -> list[tuple[str, int, str, list[Gateway]]]:
                return [
                    (c.cluster, c.rank, c.reason, c.gateways)
                    for c in app.view.resolve(WEB, None).clusters
                ]

            assert ranking(a) == ranking(b)
    await nc.close()


async def test_nats_api_admin_http_and_dns_answer_from_the_view(nats_peer: NatsPeer) -> None:
    nc, js = await client(nats_peer)
    async with gateway() as east_gw, gateway("127.0.0.2") as west_gw:
        epochs = await seed_two_clusters(js, port_of(east_gw), port_of(west_gw))
        async with running(config(nats_peer)) as app:
            # NATS request/reply.
            reply = msgspec.json.decode(
                (
                    await nc.request(
                        subjects.RESOLVE,
                        encode(ResolveRequest(service="web", client="10.2.3.4")),
                        timeout=2,
                    )
                ).data,
                type=ResolveReply,
            )
            assert [(c.cluster, c.reason) for c in reply.clusters] == [
                ("west", "client-cidr"),
                ("east", "same-region"),
            ]
            inv = msgspec.json.decode(
                (
                    await nc.request(
                        subjects.INVENTORY, encode(InventoryRequest(cluster="west")), timeout=2
                    )
                ).data,
                type=Inventory,
            )
            assert [(s.cluster, s.service) for s in inv.services] == [("west", "web")]
            bad = msgspec.json.decode(
                (await nc.request(subjects.RESOLVE, b"{oops", timeout=2)).data, type=ResolveReply
            )
            assert bad.error.startswith("bad request")

            # Admin HTTP.
            base = f"http://127.0.0.1:{app.admin_port}"
            async with aiohttp.ClientSession() as http:
                async with http.get(base + "/healthz") as r:
                    assert r.status == 200
                async with http.get(base + "/readyz") as r:
                    assert r.status == 200 and (await r.text()).startswith("ready")
                async with http.get(base + "/v1/status") as r:
                    status = await r.json()
                    assert [c["cluster"] for c in status["clusters"]] == ["east", "west"]
                    assert status["clusters"][0]["gateways"][0]["state"] == "up"
                async with http.get(base + "/v1/inventory?namespace=default") as r:
                    assert len((await r.json())["services"]) == 2
                async with http.get(base + "/v1/resolve?service=web&client=10.1.0.1") as r:
                    assert (await r.json())["clusters"][0]["cluster"] == "east"
                async with http.get(base + "/metrics") as r:
                    text = await r.text()
                    assert 'syncmesh_registry_clusters{state="fresh"} 2.0' in text
                    assert "syncmesh_registry_ready 1.0" in text

            # DNS: the replica (us-1) is in east's zone, so east's gateway answers...
            dns_port = app.dns_port
            assert dns_port is not None
            query = dns.message.make_query("web.default.svc.syncmesh.internal.", "A")
            answer = await dns.asyncquery.udp(query, "127.0.0.1", port=dns_port, timeout=2)
            assert [r.address for rrset in answer.answer for r in rrset] == ["127.0.0.1"]
            # ...until east's only instance goes critical: the cached answer is invalidated.
            await publish(
                js,
                service_state(
                    "east",
                    "web",
                    epoch=epochs["east"],
                    revision=40,
                    instances=[instance(health="critical")],
                ),
            )

            async def moved() -> bool:
                again = await dns.asyncquery.udp(query, "127.0.0.1", port=dns_port, timeout=2)
                return [r.address for rrset in again.answer for r in rrset] == ["127.0.0.2"]

            await wait_until(moved, 5, what="DNS answer moves to west")
    await nc.close()


async def test_stale_agent_is_flagged_and_fresh_again_on_its_next_beat(nats_peer: NatsPeer) -> None:
    nc, js = await client(nats_peer)
    async with gateway() as gw:
        east = await claim_epoch(js, "east")
        beat = cluster_beat(
            "east",
            epoch=east,
            interval_s=0.3,
            gateways=[Gateway(address="127.0.0.1", port=port_of(gw))],
        )
        async with running(config(nats_peer)) as app:
            await publish(js, beat)
            await publish(js, service_state("east", "web", epoch=east, revision=2))

            async def serving() -> bool:
                return bool(app.view.resolve(WEB, None).clusters)

            await wait_until(serving, 5, what="east serving")
            assert not app.view.resolve(WEB, None).clusters[0].stale

            async def stale() -> bool:
                return app.view.clusters["east"].stale

            await wait_until(stale, 3, interval=0.05, what="east stale after 3 missed beats")
            (ranked,) = app.view.resolve(WEB, None).clusters
            assert ranked.stale, "served under the default 'serve' policy, flagged"
            assert await metric(app, 'syncmesh_registry_clusters{state="served_stale"}') == 1.0
            await publish(
                js,
                cluster_beat(
                    "east",
                    epoch=east,
                    revision=3,
                    interval_s=0.3,
                    gateways=[Gateway(address="127.0.0.1", port=port_of(gw))],
                ),
            )

            async def fresh() -> bool:
                return not app.view.clusters["east"].stale

            await wait_until(fresh, 2, interval=0.02, what="fresh again at once")
    await nc.close()


async def test_run_registry_serves_until_cancelled_and_cleans_up(
    nats_peer: NatsPeer, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    from syncmesh_app.registry import run_registry

    ready = asyncio.Event()
    caplog.set_level(logging.INFO, logger="syncmesh.registry")
    task = asyncio.create_task(run_registry(config(nats_peer, admin_port=0), ready))
    async with asyncio.timeout(20):
        await ready.wait()
    # Bound by the registry itself (port 0); its log line names the port.
    logged = [ADMIN_HTTP.search(r.getMessage()) for r in caplog.records]
    admin_port = int([m for m in logged if m][-1].group(1))
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{admin_port}/readyz") as r,
    ):
        assert r.status == 200
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with socket.socket() as probe, pytest.raises(OSError):
        probe.connect(("127.0.0.1", admin_port))


async def test_a_dns_port_in_use_fails_the_start_instead_of_hanging(nats_peer: NatsPeer) -> None:
    import socket

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        cfg = config(nats_peer, dns=DnsConfig(port=taken.getsockname()[1]))
        async with RegistryApp(cfg) as app:
            with pytest.raises(OSError):
                async with asyncio.timeout(20):
                    await app.wait_ready()
            assert not app.ready
    finally:
        taken.close()
