"""Gateway load sources (``edge_sync.io.load.LoadPoller``) and instance versions and
tags, against a real Consul, a real Nacos (auth on) and a real HTTP server:
what each answers is read, and every failure leaves the load unknown (never 0)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from v2.nacos import (
    ClientConfigBuilder,
    ListInstanceParam,
    NacosNamingService,
    RegisterInstanceParam,
)

from edge_sync.config import EdgeConfig
from edge_sync.core.consul_mapping import map_health_entries
from edge_sync.core.load import GatewayLoads, gateway_key
from edge_sync.core.nacos import map_instances as map_nacos_instances
from edge_sync.io.load import LoadMetrics, LoadPoller
from harness.consul_peer import ConsulPeer, consul_agent
from harness.nacos_peer import NacosPeer, nacos_server
from syncmesh_app.embedded.process import wait_until

pytestmark = pytest.mark.peers

GW = {"address": "192.0.2.10", "port": 443}
KEY = gateway_key("192.0.2.10", 443)


def poller(sources: list[dict[str, Any]], **source: Any) -> LoadPoller:
    """A poller of ``sources`` for the gateway GW (and one at :8443 when listed)."""
    config = msgspec.convert(
        {
            "cluster": "east",
            "gateways": [GW, {"address": "192.0.2.10", "port": 8443}],
            "source": source,
            "load": {"timeout_s": 0.5, "sources": sources},
        },
        EdgeConfig,
    )
    return LoadPoller(config, GatewayLoads(config.load.sources), LoadMetrics(CollectorRegistry()))


async def read(p: LoadPoller, index: int = 0) -> int | None:
    async with aiohttp.ClientSession() as session:
        src = p.config.load.sources[index]
        await p.refresh(session, src)
        return p.loads.load(gateway_key(src.address, src.port))


def errors(p: LoadPoller) -> dict[str, float]:
    return {
        s.labels["reason"]: s.value
        for metric in p.metrics.errors.collect()
        for s in metric.samples
        if s.name.endswith("_total")
    }


# -- file and HTTP -----------------------------------------------------------------


@pytest.fixture
async def http_load() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """An HTTP endpoint answering whatever ``state`` says: body, status, delay."""
    state: dict[str, Any] = {"body": "55", "status": 200, "delay": 0.0}

    async def handler(_request: web.Request) -> web.Response:
        await asyncio.sleep(state["delay"])
        return web.Response(text=state["body"], status=state["status"])

    app = web.Application()
    app.router.add_get("/load", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/load", state
    finally:
        await runner.cleanup()


async def test_http_source_and_its_failures(http_load: tuple[str, dict[str, Any]]) -> None:
    url, state = http_load
    p = poller([{**GW, "kind": "http", "url": url}])
    assert await read(p) == 55
    state["status"] = 503
    assert await read(p) is None
    state.update(status=200, body="busy")
    assert await read(p) is None
    state.update(body="42", delay=2.0)
    assert await read(p) is None  # timeout_s 0.5
    state["delay"] = 0.0
    assert await read(p) == 42
    assert errors(p) == {"load_http_503": 1, "load_malformed": 1, "load_timeout": 1}


async def test_file_source_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "load"
    path.write_text("12%\n")
    p = poller([{**GW, "kind": "file", "path": str(path)}])
    assert await read(p) == 12
    path.unlink()
    assert await read(p) is None
    assert errors(p) == {"load_unreadable": 1}


async def test_poller_run_fills_every_gateway(
    tmp_path: Path, http_load: tuple[str, dict[str, Any]]
) -> None:
    url, _ = http_load
    (tmp_path / "load").write_text("7")
    p = poller(
        [
            {**GW, "kind": "file", "path": str(tmp_path / "load")},
            {"address": "192.0.2.10", "port": 8443, "kind": "http", "url": url},
        ]
    )
    task = asyncio.create_task(p.run())
    try:
        await wait_until(lambda: _rounds(p, 1), 5, 0.02, "one round")
    finally:
        task.cancel()
    assert (p.loads.load(KEY), p.loads.load(gateway_key("192.0.2.10", 8443))) == (7, 55)


async def _rounds(p: LoadPoller, n: int) -> bool:
    return p.rounds >= n


# -- Consul ----------------------------------------------------------------------------


@pytest.fixture
async def consul(tmp_path: Path) -> AsyncIterator[ConsulPeer]:
    async with consul_agent(workdir=tmp_path / "consul") as peer:
        yield peer


async def test_consul_meta_check_output_and_service_id(consul: ConsulPeer) -> None:
    async with aiohttp.ClientSession() as http:
        gateway = {
            "ID": "gw-east",
            "Name": "mesh-gateway",
            "Address": "10.0.0.7",  # the LAN address; the syncmesh gateway is the WAN one
            "Port": 443,
            "TaggedAddresses": {"wan": {"Address": "192.0.2.10", "Port": 443}},
            "Meta": {"load": "42"},
            "Check": {"CheckID": "gw-load", "Name": "load", "TTL": "60s"},
        }
        async with http.put(f"{consul.http_url}/v1/agent/service/register", json=gateway) as r:
            assert r.status == 200, await r.text()
        async with http.put(
            f"{consul.http_url}/v1/agent/check/update/gw-load",
            json={"Status": "passing", "Output": "73"},
        ) as r:
            assert r.status == 200, await r.text()
    consul_source = {"consul": {"address": consul.http_addr}}
    by_meta = poller([{**GW, "kind": "consul", "service": "mesh-gateway"}], **consul_source)
    assert await read(by_meta) == 42
    by_check = poller(
        [{**GW, "kind": "consul", "service": "mesh-gateway", "check_id": "gw-load"}],
        **consul_source,
    )
    assert await read(by_check) == 73
    by_id = poller(
        [
            {
                "address": "192.0.2.10",
                "port": 8443,
                "kind": "consul",
                "service": "mesh-gateway",
                "service_id": "gw-east",
            }
        ],
        **consul_source,
    )
    assert await read(by_id) == 42
    missing = poller([{**GW, "kind": "consul", "service": "nope"}], **consul_source)
    assert await read(missing) is None
    assert errors(missing) == {"load_no_instance": 1}


async def test_consul_versions_and_tags_from_a_real_catalog(consul: ConsulPeer) -> None:
    async with aiohttp.ClientSession() as http:
        for body in (
            {
                "ID": "p1",
                "Name": "payments",
                "Port": 80,
                "Meta": {"version": "1.2.3"},
                "Tags": ["canary"],
            },
            {"ID": "p2", "Name": "payments", "Port": 81, "Tags": ["eu", "version=2024.06"]},
            {"ID": "p3", "Name": "payments", "Port": 82, "Tags": ["v2.0.0"]},
        ):
            async with http.put(f"{consul.http_url}/v1/agent/service/register", json=body) as r:
                assert r.status == 200
        async with http.get(f"{consul.http_url}/v1/health/service/payments") as r:
            entries = await r.json()
    by_namespace, _, rejects = map_health_entries("payments", entries)
    got = {i.id.split("/", 1)[1]: (i.version, i.tags) for i in by_namespace["default"]}
    assert not rejects
    assert got == {
        "p1": ("1.2.3", ["canary"]),
        "p2": ("2024.06", ["eu", "version=2024.06"]),
        "p3": ("v2.0.0", ["v2.0.0"]),
    }


# -- Nacos -------------------------------------------------------------------------------


@pytest.fixture
async def nacos(tmp_path: Path) -> AsyncIterator[NacosPeer]:
    async with nacos_server(auth=True, workdir=tmp_path / "nacos") as peer:
        yield peer


async def test_nacos_metadata_load_and_versions(nacos: NacosPeer, tmp_path: Path) -> None:
    config = (
        ClientConfigBuilder()
        .server_address(nacos.server_addr)
        .username(nacos.username or "")
        .password(nacos.password or "")
        .cache_dir(str(tmp_path / "sdk" / "cache"))
        .log_dir(str(tmp_path / "sdk" / "logs"))
        .load_cache_at_start(False)
        .build()
    )
    naming = await NacosNamingService.create_naming_service(config)
    metadata = {"load": "66", "version": "2.0.0", "tags": "canary, eu"}
    await naming.register_instance(
        RegisterInstanceParam(
            service_name="gateway", group_name="infra", ip="192.0.2.10", port=443, metadata=metadata
        )
    )
    source = {
        "nacos": {
            "server_addr": nacos.server_addr,
            "username": nacos.username,
            "password": nacos.password,
        }
    }
    p = poller([{**GW, "kind": "nacos", "service": "gateway", "group": "infra"}], **source)
    # Registration reaches the HTTP API's view within a moment.
    await wait_until(lambda: _loaded(p, 66), 10, 0.2, "nacos load 66")
    wrong = poller([{**GW, "kind": "nacos", "service": "gateway"}], **source)  # DEFAULT_GROUP
    assert await read(wrong) is None
    assert errors(wrong) == {"load_no_instance": 1}
    denied = poller(
        [{**GW, "kind": "nacos", "service": "gateway", "group": "infra"}],
        nacos={"server_addr": nacos.server_addr, "username": "nacos", "password": "wrong"},
    )
    assert await read(denied) is None
    instances = await naming.list_instances(
        ListInstanceParam(service_name="gateway", group_name="infra", healthy_only=None)
    )
    (instance,), _ = map_nacos_instances("infra@@gateway", instances)
    assert (instance.version, instance.tags) == ("2.0.0", ["canary", "eu"])
    await naming.shutdown()


async def _loaded(p: LoadPoller, load: int) -> bool:
    return await read(p) == load
