"""End to end on real peers: a Consul cluster and a Nacos cluster, each with its own
edge agent, feed one registry over a real nats-server; DNS follows gateway probes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.message
import msgspec
import nats
import pytest

from dns_server.config import DnsConfig
from edge_sync.app import EdgeAgent
from edge_sync.config import ConsulSourceConfig, EdgeConfig, NacosSourceConfig, SourceConfig
from global_registry.app import RegistryApp
from global_registry.config import ProbeConfig, RegistryConfig
from syncmesh import subjects
from syncmesh.natsconn import NatsConfig
from syncmesh.schema import Gateway, Inventory, InventoryRequest, Locality
from syncmesh.testing.consul_peer import consul_agent
from syncmesh.testing.nacos_peer import nacos_server
from syncmesh.testing.nats_peer import nats_server

pytestmark = pytest.mark.peers

PROBE = ProbeConfig(interval_s=0.3, timeout_s=0.3, rise=2, fall=2, jitter=0.0)


class Listener:
    """A real TCP listener standing in for a gateway; closable and re-openable on its port."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.port = 0
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        async def accept(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.close()

        self._server = await asyncio.start_server(accept, self.address, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None


async def _a(name: str, port: int) -> list[str]:
    reply = await dns.asyncquery.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port,
                                     timeout=1.0)
    return sorted(item.address for rrset in reply.answer for item in rrset)


async def _until(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < timeout, f"timed out: {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def _system(tmp_path: Path) -> AsyncIterator[dict]:  # type: ignore[type-arg]
    async with contextlib.AsyncExitStack() as stack:
        nats_peer = await stack.enter_async_context(nats_server(workdir=tmp_path / "nats"))
        consul = await stack.enter_async_context(consul_agent(workdir=tmp_path / "consul"))
        nacos = await stack.enter_async_context(nacos_server(workdir=tmp_path / "nacos"))
        east_gw, west_gw = Listener("127.0.0.2"), Listener("127.0.0.3")
        await east_gw.open()
        await west_gw.open()
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for i in (1, 2):
            body = {"ID": f"pay-{i}", "Name": "payments", "Address": f"10.1.0.{i}", "Port": 8080}
            async with http.put(f"{consul.http_url}/v1/agent/service/register", json=body) as r:
                assert r.status == 200
        params = {"serviceName": "payments", "ip": "10.2.0.1", "port": "8080", "ephemeral": "false"}
        async with http.post(f"http://{nacos.server_addr}/nacos/v1/ns/instance", params=params) as r:
            assert r.status == 200
        nats_cfg = NatsConfig(servers=[nats_peer.url])
        await stack.enter_async_context(EdgeAgent(EdgeConfig(
            cluster="east", nats=nats_cfg,
            source=SourceConfig(kind="consul", consul=ConsulSourceConfig(address=consul.http_addr)),
            gateways=[Gateway(address="127.0.0.2", port=east_gw.port)],
            locality=Locality(region="r1", zone="z1"), client_cidrs=["127.0.0.0/24"],
            beat_interval_s=1.0)))
        await stack.enter_async_context(EdgeAgent(EdgeConfig(
            cluster="west", nats=nats_cfg,
            source=SourceConfig(kind="nacos", nacos=NacosSourceConfig(
                server_addr=nacos.server_addr, list_interval_s=1.0, work_dir=str(tmp_path / "sdk"))),
            gateways=[Gateway(address="127.0.0.3", port=west_gw.port)],
            locality=Locality(region="r2", zone="z2"), client_cidrs=["10.20.0.0/16"],
            beat_interval_s=1.0)))
        app = await stack.enter_async_context(RegistryApp(RegistryConfig(
            nats=nats_cfg, dns=DnsConfig(port=0), admin_port=0, replica="e2e", probe=PROBE)))
        await app.wait_ready()
        yield {"nats": nats_peer, "app": app, "east_gw": east_gw, "west_gw": west_gw,
               "consul": consul, "nacos": nacos, "http": http}


async def test_consul_and_nacos_feed_one_registry_and_dns_follows_probes(tmp_path: Path) -> None:
    async with _system(tmp_path) as s:
        app: RegistryApp = s["app"]
        assert app.dns_port
        nc = await nats.connect(s["nats"].url)
        try:
            async def both_sources_seen() -> bool:
                reply = await nc.request(subjects.INVENTORY,
                                         msgspec.json.encode(InventoryRequest()), timeout=2)
                inv = msgspec.json.decode(reply.data, type=Inventory)
                got = {(svc.cluster, svc.service): sorted(i.address for i in svc.instances)
                       for svc in inv.services}
                return got == {("east", "payments"): ["10.1.0.1", "10.1.0.2"],
                               ("west", "payments"): ["10.2.0.1"]}

            await _until(both_sources_seen, 30, "inventory equals Consul + Nacos")
        finally:
            await nc.close()

        name = "payments.svc.syncmesh.internal"
        port = app.dns_port

        async def answer_is(addr: str) -> bool:
            return await _a(name, port) == [addr]

        await _until(lambda: answer_is("127.0.0.2"), 10, "east answers east's clients")
        await s["east_gw"].close()
        moved = await _until(lambda: answer_is("127.0.0.3"), 10, "failover to west")
        print(f"\nfailover after gateway close: {moved * 1000:.0f} ms "
              f"(fall x interval = {PROBE.fall * PROBE.interval_s * 1000:.0f} ms)")
        assert moved <= PROBE.fall * PROBE.interval_s + PROBE.timeout_s + 0.5
        await s["east_gw"].open()
        back = await _until(lambda: answer_is("127.0.0.2"), 10, "east back")
        print(f"back after gateway reopen: {back * 1000:.0f} ms")
        assert back <= PROBE.rise * PROBE.interval_s + 0.5


async def test_consul_health_flip_moves_dns(tmp_path: Path) -> None:
    async with _system(tmp_path) as s:
        consul, http, app = s["consul"], s["http"], s["app"]
        name = "payments.svc.syncmesh.internal"

        async def answer_is(addr: str) -> bool:
            return await _a(name, app.dns_port) == [addr]

        await _until(lambda: answer_is("127.0.0.2"), 30, "east answers")
        for i in (1, 2):  # maintenance mode = a critical check on both instances
            async with http.put(f"{consul.http_url}/v1/agent/service/maintenance/pay-{i}",
                                params={"enable": "true"}) as r:
                assert r.status == 200
        took = await _until(lambda: answer_is("127.0.0.3"), 5, "critical east -> west")
        print(f"\nConsul health flip visible in DNS after {took * 1000:.0f} ms")
        async with http.put(f"{consul.http_url}/v1/agent/service/maintenance/pay-1",
                            params={"enable": "false"}) as r:
            assert r.status == 200
        await _until(lambda: answer_is("127.0.0.2"), 5, "east healthy again")
