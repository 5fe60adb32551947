"""The Consul source's bulk initial read against a real Consul 1.14.11.

``/v1/catalog/nodes`` + ``/v1/catalog/node-services/<node>`` joined with the
``/v1/health/state/any`` snapshot must give exactly what
``/v1/health/service/<name>`` gives, service by service, through the same
mapping: several nodes, node and service maintenance, a critical node check,
warning checks, services with and without checks, tags, meta, weights,
namespaces and address overrides.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from edge_sync.config import ConsulSourceConfig
from edge_sync.core.model import ServiceRef, SourceService
from edge_sync.io.consul import ConsulSource
from harness.consul_peer import ConsulPeer, consul_agent
from syncmesh.schema import Instance
from syncmesh_app.embedded.process import wait_until

pytestmark = pytest.mark.peers

State = dict[tuple[str, str], tuple[Instance, ...]]


class RecordingSink:
    """The latest state per service, the requests by kind and the events a source reported."""

    def __init__(self) -> None:
        self.state: State = {}
        self.requests: dict[str, int] = {}
        self.events: list[str] = []
        self.rejected: list[tuple[str, str]] = []
        self.is_synced = False

    def apply(
        self, changed: Iterable[SourceService] = (), removed: Iterable[ServiceRef] = ()
    ) -> None:
        for service in changed:
            key = (service.namespace, service.name)
            self.state[key] = tuple(sorted(service.instances, key=lambda i: i.id))
        for ref in removed:
            self.state.pop((ref.namespace, ref.name), None)

    def replace_all(self, services: Iterable[SourceService]) -> None:
        self.state = {}
        self.apply(services)

    def synced(self) -> None:
        self.is_synced = True

    def failed(self, reason: str, detail: str) -> None:
        pass

    def recovered(self) -> None:
        pass

    def invalid(self, reason: str, detail: str) -> None:
        self.rejected.append((reason, detail))

    def request(self, kind: str) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1

    def event(self, kind: str) -> None:
        self.events.append(kind)


@pytest.fixture
async def consul(tmp_path: Path) -> AsyncIterator[ConsulPeer]:
    async with consul_agent(workdir=tmp_path / "consul") as peer:
        yield peer


def _service(node: str, sid: str, name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {
        "Service": {
            "Verb": "set",
            "Node": node,
            "Service": {"ID": sid, "Service": name, "Port": port, **extra},
        }
    }


def _check(node: str, cid: str, status: str, sid: str = "", name: str = "") -> dict[str, Any]:
    check: dict[str, Any] = {"Node": node, "CheckID": cid, "Name": cid, "Status": status}
    if sid:
        check |= {"ServiceID": sid, "ServiceName": name}
    return {"Check": {"Verb": "set", "Check": check}}


def _catalog() -> list[dict[str, Any]]:
    nodes = [
        {"Node": {"Verb": "set", "Node": {"Node": "n1", "Address": "10.1.0.1", "Meta": {"zone": "z1"}}}},  # noqa: E501
        {"Node": {"Verb": "set", "Node": {"Node": "n2", "Address": "10.1.0.2"}}},
        {"Node": {"Verb": "set", "Node": {"Node": "n3", "Address": "10.1.0.3", "Meta": {"zone": "z3"}}}},  # noqa: E501
    ]  # fmt: skip
    return nodes + [
        # n1: healthy node; a warning check with weights, a service without checks.
        _check("n1", "node-ok", "passing"),
        _service(
            "n1",
            "web-1",
            "web",
            8080,
            Tags=["v1.2.3", "blue"],
            Weights={"Passing": 7, "Warning": 3},
        ),  # noqa: E501
        _check("n1", "web-1-http", "warning", "web-1", "web"),
        _check("n1", "web-1-tcp", "passing", "web-1", "web"),
        _service("n1", "api-1", "api", 9000, Meta={"version": "2.0", "zone": "zz", "team": "a"}),
        _service("n1", "db-1", "db", 5432, Address="10.9.9.9"),
        _check("n1", "db-1-chk", "passing", "db-1", "db"),
        _service("n1", "ns-1", "multi", 7000, Meta={"syncmesh-namespace": "team1"}),
        _service("n1", "ns-2", "multi", 7001, Tags=["syncmesh-namespace=team2", "version=3"]),
        # n2: a critical node check makes every service on it critical.
        _check("n2", "node-down", "critical"),
        _service("n2", "web-2", "web", 8080),
        _check("n2", "web-2-http", "passing", "web-2", "web"),
        _service("n2", "api-2", "api", 9000),
        # n3: node maintenance (what `consul maint` writes), passing node check besides.
        _check("n3", "_node_maintenance", "critical"),
        _check("n3", "node-ok", "passing"),
        _service("n3", "web-3", "web", 8081),
        _service("n3", "queue-1", "queue", 5672, Weights={"Passing": 4, "Warning": 2}),
        _check("n3", "queue-1-chk", "warning", "queue-1", "queue"),
        # Two services with the same service ID on two nodes.
        _service("n1", "same", "dup", 1000),
        _service("n2", "same", "dup", 1001),
        _check("n2", "same-chk", "passing", "same", "dup"),
    ]


async def _register(consul: ConsulPeer) -> None:
    async with aiohttp.ClientSession(consul.http_url, headers=consul.headers()) as http:
        async with http.put("/v1/txn", json=_catalog()) as resp:
            assert resp.status == 200, await resp.text()
        # Agent services on the agent's own node, one in service maintenance.
        for sid, port in (("cache-1", 6379), ("cache-2", 6380)):
            body = {
                "ID": sid,
                "Name": "cache",
                "Port": port,
                "Check": {"CheckID": f"ttl-{sid}", "TTL": "600s", "Status": "passing"},
            }
            async with http.put("/v1/agent/service/register", json=body) as resp:
                assert resp.status == 200, await resp.text()
        async with http.put(
            "/v1/agent/service/maintenance/cache-1", params={"enable": "true", "reason": "test"}
        ) as resp:
            assert resp.status == 200, await resp.text()

        async def settled() -> bool:
            async with http.get("/v1/health/service/cache") as resp:
                entries = await resp.json()
            checks = [c["CheckID"] for e in entries for c in e["Checks"]]
            return len(entries) == 2 and "_service_maintenance:cache-1" in checks

        # Agent registrations reach the catalog through anti-entropy.
        await wait_until(settled, timeout=30, interval=0.1)


def _config(consul: ConsulPeer) -> ConsulSourceConfig:
    return msgspec.convert(
        {"address": consul.http_addr, "wait_s": 5, "fetch_concurrency": 4}, ConsulSourceConfig
    )


async def _per_service(consul: ConsulPeer) -> RecordingSink:
    sink = RecordingSink()
    await ConsulSource(_config(consul), sink, lambda _name: True).list_once()
    assert sink.is_synced and "node_services" not in sink.requests
    return sink


async def _bulk(consul: ConsulPeer) -> RecordingSink:
    sink = RecordingSink()
    source = ConsulSource(_config(consul), sink, lambda _name: True)
    task = asyncio.create_task(source.run())
    try:

        async def synced() -> bool:
            return sink.is_synced

        await wait_until(synced, timeout=60, interval=0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return sink


async def test_bulk_initial_read_equals_the_per_service_read(consul: ConsulPeer) -> None:
    await _register(consul)
    expected = await _per_service(consul)
    got = await _bulk(consul)

    # The bulk path was taken: one node list, one read per node, no per-service fetch.
    assert "consul_bulk_read" in got.events and "consul_bulk_fallback" not in got.events
    assert got.requests.get("nodes") == 1
    assert got.requests.get("node_services") == 4  # n1, n2, n3 and the agent's node
    assert got.requests.get("service", 0) == 0
    assert got.rejected == expected.rejected == []

    # Identical instance sets, field by field, for every service.
    assert got.state.keys() == expected.state.keys()
    for key, instances in expected.state.items():
        assert got.state[key] == instances, key

    # And they are what this catalog means (the comparison is not of two empty views).
    def inst(ns: str, name: str) -> dict[str, Instance]:
        return {i.id: i for i in got.state[(ns, name)]}

    assert set(got.state) == {
        ("default", "web"),
        ("default", "api"),
        ("default", "db"),
        ("team1", "multi"),
        ("team2", "multi"),
        ("default", "queue"),
        ("default", "dup"),
        ("default", "cache"),
    }
    web = inst("default", "web")
    assert (web["n1/web-1"].health, web["n1/web-1"].weight) == ("warning", 3)
    assert web["n1/web-1"].version == "v1.2.3" and web["n1/web-1"].zone == "z1"
    assert web["n2/web-2"].health == "critical"  # critical node check
    assert web["n3/web-3"].health == "critical"  # node maintenance
    api = inst("default", "api")
    assert (api["n1/api-1"].health, api["n1/api-1"].version, api["n1/api-1"].zone) == (
        "passing",
        "2.0",
        "zz",
    )
    assert api["n1/api-1"].meta["team"] == "a"
    assert api["n2/api-2"].health == "critical"
    assert inst("default", "db")["n1/db-1"].address == "10.9.9.9"
    assert inst("team2", "multi")["n1/ns-2"].version == "3"
    queue = inst("default", "queue")["n3/queue-1"]
    assert (queue.health, queue.weight) == ("critical", 4)
    assert set(inst("default", "dup")) == {"n1/same", "n2/same"}
    assert inst("default", "dup")["n2/same"].health == "critical"
    cache = {i.id.split("/", 1)[1]: i.health for i in got.state[("default", "cache")]}
    assert cache == {"cache-1": "critical", "cache-2": "passing"}  # service maintenance


async def test_bulk_read_then_changes_flow_per_service(consul: ConsulPeer) -> None:
    """After the bulk read, a check flip still reaches the sink (per-service fetch)."""
    await _register(consul)
    sink = RecordingSink()
    source = ConsulSource(_config(consul), sink, lambda _name: True)
    task = asyncio.create_task(source.run())
    try:

        async def synced() -> bool:
            return sink.is_synced

        await wait_until(synced, timeout=60, interval=0.05)
        assert "consul_bulk_read" in sink.events
        assert {i.id: i.health for i in sink.state[("default", "db")]} == {"n1/db-1": "passing"}
        async with aiohttp.ClientSession(consul.http_url, headers=consul.headers()) as http:
            flip = [_check("n1", "db-1-chk", "critical", "db-1", "db")]
            async with http.put("/v1/txn", json=flip) as resp:
                assert resp.status == 200, await resp.text()

        async def flipped() -> bool:
            return [i.health for i in sink.state[("default", "db")]] == ["critical"]

        await wait_until(flipped, timeout=60, interval=0.05)
        assert sink.requests.get("service", 0) >= 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_one_service_per_node_is_read_per_service(consul: ConsulPeer) -> None:
    """Bulk only when it takes fewer requests: one node with one service is read by name."""
    async with aiohttp.ClientSession(consul.http_url, headers=consul.headers()) as http:
        body = {"ID": "solo-1", "Name": "solo", "Port": 4000}
        async with http.put("/v1/agent/service/register", json=body) as resp:
            assert resp.status == 200, await resp.text()

        async def listed() -> bool:
            async with http.get("/v1/health/service/solo") as resp:
                return len(await resp.json()) == 1

        await wait_until(listed, timeout=30, interval=0.1)
    sink = await _bulk(consul)
    assert "consul_bulk_read" not in sink.events
    assert sink.requests.get("nodes") == 1 and "node_services" not in sink.requests
    assert sink.requests.get("service", 0) >= 1
    assert [i.id.split("/", 1)[1] for i in sink.state[("default", "solo")]] == ["solo-1"]
