"""Issue 14 end to end on real peers: a nats-server, one registry replica with
DNS, two edge agents with service files, and real TCP listeners as the gateways.

- Load: east's gateway load comes from a file (a ``[[load.sources]]`` of kind
  ``file``). Raised past the threshold, answers for east's own clients move to
  west; lowered between the two thresholds they stay; lowered below the lower
  one they come back. The times are printed (docs/registry.md quotes them).
- Subsets: instances with versions and tags in the service files; DNS subset
  names, the NATS resolve API and the same subset asked two ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import msgspec
import nats
import pytest

from dns_server.config import DnsConfig
from edge_sync.config import EdgeConfig
from harness.nats_peer import NatsPeer
from harness.system import FAST_PROBES, Listener
from syncmesh import subjects
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import ResolveReply, ResolveRequest
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig

pytestmark = pytest.mark.peers

ZONE = "syncmesh.internal"
NAME = f"payments.default.svc.{ZONE}"
BEAT_S = 1.0
LOAD_INTERVAL_S = 1.0

EAST_FILE = """
[[services]]
name = "payments"
[[services.instances]]
address = "10.1.0.1"
port = 8080
version = "1.2.3"
tags = ["blue"]
[[services.instances]]
address = "10.1.0.2"
port = 8080
version = "1.2.3"
tags = ["blue", "canary"]
"""
WEST_FILE = """
[[services]]
name = "payments"
[[services.instances]]
address = "10.2.0.1"
port = 8080
version = "2.0.0"
tags = ["green"]
"""


@dataclass
class Mesh:
    app: RegistryApp
    east_load: Path
    nc: Any

    @property
    def dns_port(self) -> int:
        port = self.app.dns_port
        assert port
        return port

    async def query(self, name: str, rdtype: str = "A") -> list[str]:
        reply = await dns.asyncquery.udp(
            dns.message.make_query(name, rdtype), "127.0.0.1", port=self.dns_port, timeout=1.0
        )
        return sorted(item.to_text() for rrset in reply.answer for item in rrset)

    async def resolve(self, **fields: Any) -> ResolveReply:
        request = ResolveRequest(service="payments", **fields)
        msg = await self.nc.request(subjects.RESOLVE, msgspec.json.encode(request), timeout=2)
        return msgspec.json.decode(msg.data, type=ResolveReply)


def _agent(
    name: str, peer: NatsPeer, services: Path, gateway: Listener, cidr: str, **extra: Any
) -> EdgeConfig:
    return msgspec.convert(
        {
            "cluster": name,
            "nats": {"servers": [peer.url]},
            "source": {"kind": "file", "file": {"path": str(services)}},
            "gateways": [{"address": gateway.address, "port": gateway.port}],
            "client_cidrs": [cidr],
            "beat_interval_s": BEAT_S,
            "metrics_port": -1,
            **extra,
        },
        EdgeConfig,
    )


@contextlib.asynccontextmanager
async def mesh(peer: NatsPeer, tmp_path: Path) -> AsyncIterator[Mesh]:
    """east: the test client's cluster (127.0.0.0/24), gateway on 127.0.0.2 whose load
    is read from a file; west: 10.20.0.0/16, gateway on 127.0.0.3, load unknown."""
    async with contextlib.AsyncExitStack() as stack:
        gateways = {}
        for name, address in (("east", "127.0.0.2"), ("west", "127.0.0.3")):
            gateways[name] = Listener(address)
            await gateways[name].open()
            stack.push_async_callback(gateways[name].close)
        east_services, west_services = tmp_path / "east.toml", tmp_path / "west.toml"
        east_services.write_text(EAST_FILE)
        west_services.write_text(WEST_FILE)
        east_load = tmp_path / "east-load"
        east_load.write_text("10\n")
        east_gw = gateways["east"]
        load = {
            "interval_s": LOAD_INTERVAL_S,
            "sources": [
                {
                    "address": east_gw.address,
                    "port": east_gw.port,
                    "kind": "file",
                    "path": str(east_load),
                }
            ],
        }
        for config in (
            _agent("east", peer, east_services, east_gw, "127.0.0.0/24", load=load),
            _agent("west", peer, west_services, gateways["west"], "10.20.0.0/16"),
        ):
            agent = await stack.enter_async_context(EdgeAgent(config))
            await agent.wait_synced(30)
        app = await stack.enter_async_context(
            RegistryApp(
                RegistryConfig(
                    nats=NatsConfig(servers=[peer.url]),
                    dns=DnsConfig(port=0),
                    admin_port=0,
                    replica="issue14",
                    probe=FAST_PROBES,
                )
            )
        )
        async with asyncio.timeout(30):
            await app.wait_ready()
        nc = await nats.connect(peer.url)
        stack.push_async_callback(nc.close)
        yield Mesh(app, east_load, nc)


async def _until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < timeout, f"timed out: {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_load_moves_answers_away_and_back(nats_peer: NatsPeer, tmp_path: Path) -> None:
    async with mesh(nats_peer, tmp_path) as m:

        async def answer_is(address: str) -> bool:
            return await m.query(NAME) == [address]

        await _until(lambda: answer_is("127.0.0.2"), 15, "east answers east's clients")
        east = (await m.resolve(client="127.0.0.1")).clusters[0]
        assert (east.cluster, east.reason, east.load) == ("east", "client-cidr", 10)

        # Past the threshold (75): east is ranked after west.
        m.east_load.write_text("90\n")
        away = await _until(lambda: answer_is("127.0.0.3"), 10, "overloaded east -> west")
        txt = await m.query(NAME, "TXT")
        assert any("cluster=east reason=overloaded" in t and "load=90" in t for t in txt), txt
        srv = await m.query(NAME, "SRV")
        assert any(record.startswith("1 10 ") for record in srv), srv  # weight 100 x (100-90)%

        # Between the thresholds (65 < 70 < 75): still demoted once the registry has 70.
        m.east_load.write_text("70\n")

        async def registry_has(load: int) -> bool:
            ranked = {c.cluster: c for c in (await m.resolve(client="127.0.0.1")).clusters}
            return ranked["east"].load == load

        await _until(lambda: registry_has(70), 10, "the registry sees load 70")
        assert await m.query(NAME) == ["127.0.0.3"]
        ranked = (await m.resolve(client="127.0.0.1")).clusters
        assert [c.cluster for c in ranked] == ["west", "east"] and ranked[1].reason == "overloaded"

        # Below the lower threshold: east's clients get east again.
        m.east_load.write_text("50\n")
        back = await _until(lambda: answer_is("127.0.0.2"), 10, "east back")
        print(
            f"\nload 10 -> 90: answers moved to west after {away * 1000:.0f} ms; "
            f"90 -> 70: stayed; 70 -> 50: back to east after {back * 1000:.0f} ms "
            f"(load interval {LOAD_INTERVAL_S} s, beat interval {BEAT_S} s)"
        )
        # A read every interval, the next beat carries it, the registry applies it at once.
        assert away <= LOAD_INTERVAL_S + BEAT_S + 1.0
        assert back <= LOAD_INTERVAL_S + BEAT_S + 1.0

        # A source that fails makes the load unknown, never 0: not overloaded, no weight scaling.
        m.east_load.write_text("90\n")
        await _until(lambda: answer_is("127.0.0.3"), 10, "overloaded again")
        m.east_load.unlink()
        await _until(lambda: answer_is("127.0.0.2"), 10, "unknown load is not overloaded")
        east = (await m.resolve(client="127.0.0.1")).clusters[0]
        assert (east.cluster, east.load) == ("east", None)


async def test_version_and_tag_subsets_in_dns_and_the_resolve_api(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    async with mesh(nats_peer, tmp_path) as m:
        base = f"payments.default.svc.{ZONE}"

        async def east_answers() -> bool:
            return await m.query(base) == ["127.0.0.2"]

        await _until(east_answers, 15, "east answers")
        # East's clients asking for 2.0.0 (or green) go west, where it runs.
        assert await m.query(f"2-0-0.version.{base}") == ["127.0.0.3"]
        assert await m.query(f"green.tag.{base}") == ["127.0.0.3"]
        assert await m.query(f"1-2-3.version.{base}") == ["127.0.0.2"]
        assert await m.query(f"Canary.tag.{base}") == ["127.0.0.2"]
        (txt,) = await m.query(f"canary.tag.{base}", "TXT")
        assert "cluster=east" in txt and "healthy=1" in txt
        assert await m.query(f"9-9-9.version.{base}") == []
        assert await m.query(f"version.{base}") == []

        reply = await m.resolve(client="127.0.0.1", version="2.0.0")
        assert [c.cluster for c in reply.clusters] == ["west"]
        reply = await m.resolve(client="127.0.0.1", version="1.2.3", tags=["blue", "canary"])
        assert [(c.cluster, c.healthy_instances) for c in reply.clusters] == [("east", 1)]
        reply = await m.resolve(version="...")
        assert reply.error


async def test_a_load_move_is_beaten_at_once_not_at_the_next_interval(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    """With a 120 s beat interval, a load read that moved by the step must still
    reach NATS within the test: the agent beats at once (load.beat_on_change_pct)."""
    services = tmp_path / "east.toml"
    services.write_text(EAST_FILE)
    load_file = tmp_path / "east-load"
    load_file.write_text("10\n")
    gateway = Listener("127.0.0.2")
    await gateway.open()
    nc = await nats.connect(nats_peer.url)
    loads: list[int | None] = []

    async def on_beat(msg: Any) -> None:
        beat = msgspec.json.decode(msg.data)
        loads.append(beat["gateways"][0].get("load"))

    await nc.subscribe(subjects.cluster_subject("east"), cb=on_beat)
    load = {
        "interval_s": 0.2,
        "sources": [
            {
                "address": gateway.address,
                "port": gateway.port,
                "kind": "file",
                "path": str(load_file),
            }
        ],
    }
    config = _agent("east", nats_peer, services, gateway, "127.0.0.0/24", load=load)
    config = msgspec.structs.replace(config, beat_interval_s=120.0)
    try:
        async with EdgeAgent(config) as agent:
            await agent.wait_synced(30)
            await _until(lambda: _true(10 in loads), 30, "a beat with the first load read")
            load_file.write_text("90\n")
            took = await _until(lambda: _true(90 in loads), 30, "a beat right after the load moved")
            print(
                f"\nload 10 -> 90 on NATS after {took * 1000:.0f} ms (load interval 0.2 s, beat 120 s)"
            )
    finally:
        await nc.close()
        await gateway.close()


async def _true(value: bool) -> bool:
    return value
