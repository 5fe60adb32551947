"""End to end on real peers: a Consul cluster and a Nacos cluster, each with its own
edge agent, feed one registry over a real nats-server; DNS follows gateway probes
and source health."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.message
import msgspec
import nats
import pytest

from harness.system import FAST_PROBES as PROBE
from harness.system import full_system
from syncmesh import subjects
from syncmesh.schema import Inventory, InventoryRequest

pytestmark = pytest.mark.peers
NAME = "payments.svc.syncmesh.internal"


async def _a(name: str, port: int) -> list[str]:
    reply = await dns.asyncquery.udp(
        dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=1.0
    )
    return sorted(item.address for rrset in reply.answer for item in rrset)


async def _until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < timeout, f"timed out: {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def _register(
    http: aiohttp.ClientSession, consul_url: str, nacos_addr: str, nacos_port: int
) -> None:
    for i in (1, 2):
        body = {"ID": f"pay-{i}", "Name": "payments", "Address": f"10.1.0.{i}", "Port": 8080}
        async with http.put(f"{consul_url}/v1/agent/service/register", json=body) as r:
            assert r.status == 200
    # Nacos TCP-checks persistent instances: give it a real listener on loopback
    # (never an address outside 127.0.0.0/8).
    params = {
        "serviceName": "payments",
        "ip": "127.0.0.3",
        "port": str(nacos_port),
        "ephemeral": "false",
    }
    async with http.post(f"http://{nacos_addr}/nacos/v1/ns/instance", params=params) as r:
        assert r.status == 200


async def test_consul_and_nacos_feed_one_registry_and_dns_follows_probes(tmp_path: Path) -> None:
    async with full_system(tmp_path) as s, aiohttp.ClientSession() as http:
        await _register(http, s.consul.http_url, s.nacos.server_addr, s.west_gateway.port)
        nc = await nats.connect(s.nats.url)
        try:

            async def both_sources_seen() -> bool:
                reply = await nc.request(
                    subjects.INVENTORY, msgspec.json.encode(InventoryRequest()), timeout=2
                )
                inv = msgspec.json.decode(reply.data, type=Inventory)
                got = {
                    (svc.cluster, svc.service): sorted(i.address for i in svc.instances)
                    for svc in inv.services
                }
                return got == {
                    ("east", "payments"): ["10.1.0.1", "10.1.0.2"],
                    ("west", "payments"): ["127.0.0.3"],
                }

            await _until(both_sources_seen, 30, "inventory equals Consul + Nacos")
        finally:
            await nc.close()

        async def answer_is(addr: str) -> bool:
            return await _a(NAME, s.dns_port) == [addr]

        await _until(lambda: answer_is("127.0.0.2"), 10, "east answers east's clients")
        await s.east_gateway.close()
        moved = await _until(lambda: answer_is("127.0.0.3"), 10, "failover to west")
        print(
            f"\nfailover after gateway close: {moved * 1000:.0f} ms "
            f"(fall x interval = {PROBE.fall * PROBE.interval_s * 1000:.0f} ms)"
        )
        assert moved <= PROBE.fall * PROBE.interval_s + PROBE.timeout_s + 0.5
        await s.east_gateway.open()
        back = await _until(lambda: answer_is("127.0.0.2"), 10, "east back")
        print(f"back after gateway reopen: {back * 1000:.0f} ms")
        assert back <= PROBE.rise * PROBE.interval_s + 0.5


async def test_consul_health_flip_moves_dns(tmp_path: Path) -> None:
    async with full_system(tmp_path) as s, aiohttp.ClientSession() as http:
        await _register(http, s.consul.http_url, s.nacos.server_addr, s.west_gateway.port)

        async def answer_is(addr: str) -> bool:
            return await _a(NAME, s.dns_port) == [addr]

        await _until(lambda: answer_is("127.0.0.2"), 30, "east answers")
        for i in (1, 2):  # maintenance mode = a critical check on both instances
            async with http.put(
                f"{s.consul.http_url}/v1/agent/service/maintenance/pay-{i}",
                params={"enable": "true"},
            ) as r:
                assert r.status == 200
        took = await _until(lambda: answer_is("127.0.0.3"), 5, "critical east -> west")
        print(f"\nConsul health flip visible in DNS after {took * 1000:.0f} ms")
        async with http.put(
            f"{s.consul.http_url}/v1/agent/service/maintenance/pay-1", params={"enable": "false"}
        ) as r:
            assert r.status == 200
        await _until(lambda: answer_is("127.0.0.2"), 5, "east healthy again")
