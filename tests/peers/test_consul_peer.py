"""The real Consul agent built by harness: version, blocking queries, ACLs.

These pin the Consul behaviour the sync engine relies on (blocking queries that
block until a change and wake promptly on one; default-deny ACLs that filter
the catalog) against the exact open-source version we ship tests with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import consul.aio
import pytest

from harness.consul_build import CONSUL_VERSION, ensure_consul
from harness.consul_peer import ConsulPeer, consul_agent

pytestmark = pytest.mark.peers

SERVICE = "syncmesh-probe"


def _client(peer: ConsulPeer) -> consul.aio.Consul:
    host, port = peer.http_addr.rsplit(":", 1)
    return consul.aio.Consul(host=host, port=int(port), token=peer.token)


@pytest.fixture
async def client_peer(tmp_path: Path) -> AsyncIterator[tuple[ConsulPeer, consul.aio.Consul]]:
    # Under tmp_path so the agent log survives a failed test for inspection.
    async with consul_agent(workdir=tmp_path / "consul") as peer:
        client = _client(peer)
        try:
            yield peer, client
        finally:
            await client.close()


async def test_binary_reports_pinned_version(tmp_path: Path) -> None:
    binary = await asyncio.to_thread(ensure_consul)
    async with consul_agent(workdir=tmp_path / "consul") as peer:
        # Printed so the exact agent version shows up in CI logs (pytest -s).
        print(f"\nconsul binary {binary}: {peer.version}")
        assert peer.version == f"Consul v{CONSUL_VERSION}"
        assert CONSUL_VERSION == "1.14.11"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{peer.http_url}/v1/agent/self") as resp:
                assert resp.status == 200
                info = await resp.json()
        assert info["Config"]["Version"] == CONSUL_VERSION


async def _instances(client: consul.aio.Consul, **kwargs: Any) -> tuple[str, list[dict[str, Any]]]:
    index, nodes = await client.health.service(SERVICE, **kwargs)
    return index, nodes


async def test_blocking_query_blocks_then_wakes_on_change(
    client_peer: tuple[ConsulPeer, consul.aio.Consul],
) -> None:
    peer, client = client_peer
    assert await client.agent.service.register(
        SERVICE, service_id=f"{SERVICE}-1", address="10.0.0.1", port=8001, tags=["a"]
    )
    # Agent registrations reach the catalog through anti-entropy; wait for it
    # so the blocking query starts from a settled index.
    deadline = time.monotonic() + 10
    while True:
        index, nodes = await _instances(client)
        if len(nodes) == 1:
            break
        assert time.monotonic() < deadline, "first instance never reached the catalog"
        await asyncio.sleep(0.1)
    assert nodes[0]["Service"]["ID"] == f"{SERVICE}-1"
    assert int(index) > 0

    # A long wait, so that only the change can wake the query within the test.
    blocked = asyncio.create_task(_instances(client, index=index, wait="120s"))
    # Nothing changes: the query must still be parked after ~1s.
    done, _ = await asyncio.wait({blocked}, timeout=1.0)
    assert not done, f"blocking query returned without a change: {blocked.result()}"

    started = time.monotonic()
    assert await client.agent.service.register(
        SERVICE, service_id=f"{SERVICE}-2", address="10.0.0.2", port=8002, tags=["b"]
    )
    new_index, nodes = await asyncio.wait_for(blocked, timeout=60)
    elapsed = time.monotonic() - started
    print(f"\nblocking query woke after {elapsed:.3f}s: index {index} -> {new_index}")
    # Returned at all before the 120 s wait ran out: the change woke it (how fast
    # is a figure for bench/propagation.py, not a bound for a loaded test machine).
    assert int(new_index) > int(index)
    by_id = {n["Service"]["ID"]: n["Service"] for n in nodes}
    assert set(by_id) == {f"{SERVICE}-1", f"{SERVICE}-2"}
    assert (by_id[f"{SERVICE}-2"]["Address"], by_id[f"{SERVICE}-2"]["Port"]) == ("10.0.0.2", 8002)
    assert by_id[f"{SERVICE}-2"]["Tags"] == ["b"]
    assert peer.process.alive()


async def test_raw_http_blocking_query_index_header(
    client_peer: tuple[ConsulPeer, consul.aio.Consul],
) -> None:
    # Same contract through plain aiohttp, pinning the X-Consul-Index header the
    # sync engine reads directly.
    peer, _ = client_peer
    url = f"{peer.http_url}/v1/health/service/{SERVICE}"
    async with aiohttp.ClientSession() as session:
        body = {"ID": "raw-1", "Name": SERVICE, "Address": "10.0.1.1", "Port": 9001}
        async with session.put(f"{peer.http_url}/v1/agent/service/register", json=body) as r:
            assert r.status == 200
        for _ in range(100):
            async with session.get(url) as r:
                index = r.headers["X-Consul-Index"]
                if len(await r.json()) == 1:
                    break
            await asyncio.sleep(0.1)

        async def blocking() -> tuple[str, list[dict[str, Any]]]:
            async with session.get(url, params={"index": index, "wait": "5s"}) as r:
                assert r.status == 200
                return r.headers["X-Consul-Index"], await r.json()

        task = asyncio.create_task(blocking())
        done, _ = await asyncio.wait({task}, timeout=1.0)
        assert not done
        started = time.monotonic()
        body = {"ID": "raw-2", "Name": SERVICE, "Address": "10.0.1.2", "Port": 9002}
        async with session.put(f"{peer.http_url}/v1/agent/service/register", json=body) as r:
            assert r.status == 200
        new_index, entries = await asyncio.wait_for(task, timeout=10)
        assert time.monotonic() - started < 2.5
        assert int(new_index) > int(index)
        assert sorted(e["Service"]["ID"] for e in entries) == ["raw-1", "raw-2"]


async def test_acl_default_deny_hides_catalog_without_token(tmp_path: Path) -> None:
    async with consul_agent(acl=True, workdir=tmp_path / "consul") as peer:
        assert peer.token
        client = _client(peer)
        try:
            assert await client.agent.service.register(
                SERVICE, service_id=f"{SERVICE}-acl", address="10.0.2.1", port=7001
            )
            deadline = time.monotonic() + 10
            while True:
                _, services = await client.catalog.services()
                if SERVICE in services:
                    break
                assert time.monotonic() < deadline, f"service not in catalog: {services}"
                await asyncio.sleep(0.1)
        finally:
            await client.close()

        url = f"{peer.http_url}/v1/catalog/services"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                anon_status = resp.status
                anon = await resp.json() if resp.status == 200 else None
                filtered = resp.headers.get("X-Consul-Results-Filtered-By-ACLs")
            async with session.get(url, headers={"X-Consul-Token": peer.token}) as resp:
                assert resp.status == 200
                authed = await resp.json()
            # Registering without a token must be refused outright.
            body = {"ID": "anon-1", "Name": "anon-svc", "Port": 1}
            async with session.put(f"{peer.http_url}/v1/agent/service/register", json=body) as r:
                anon_register = r.status
        print(f"\nanonymous catalog: HTTP {anon_status} {anon} filtered={filtered}")
        assert anon_status == 403 or (anon_status == 200 and SERVICE not in (anon or {}))
        assert SERVICE in authed
        assert anon_register == 403
