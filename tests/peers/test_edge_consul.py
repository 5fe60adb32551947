"""The edge agent against a real Consul agent and a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from edge_sync.config import EdgeConfig
from edge_sync.io.consul import ConsulSource
from edge_sync.io.remote_state import read_last_states
from harness.consul_peer import ConsulPeer, consul_agent
from harness.nats_peer import NatsPeer
from syncmesh.schema import ServiceState
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.embedded.process import wait_until
from syncmesh_io import nats_connection as natsconn

pytestmark = pytest.mark.peers


def edge_config(
    nats: NatsPeer, consul: ConsulPeer, token: str | None = None, **consul_extra: Any
) -> EdgeConfig:
    source: dict[str, Any] = {"address": consul.http_addr, "wait_s": 5, **consul_extra}
    if token:
        source["token"] = token
    return msgspec.convert(
        {
            "cluster": "east",
            "nats": {"servers": [nats.url]},
            "source": {"kind": "consul", "consul": source},
        },
        EdgeConfig,
    )


@pytest.fixture
async def consul(tmp_path: Path) -> AsyncIterator[ConsulPeer]:
    async with consul_agent(workdir=tmp_path / "consul") as peer:
        yield peer


@pytest.fixture
async def reader(nats_peer: NatsPeer) -> AsyncIterator[Any]:
    nc = await natsconn.connect(natsconn.NatsConfig(servers=[nats_peer.url]))
    try:
        yield nc
    finally:
        await nc.close()


async def states(nc: Any) -> dict[tuple[str, str], ServiceState]:
    found = await read_last_states(nc.jetstream(), "east")
    return {k: v for k, v in found.items() if v is not None}


async def register(consul: ConsulPeer, name: str, sid: str, port: int, **extra: Any) -> None:
    body = {
        "Name": name,
        "ID": sid,
        "Address": "127.0.0.10",
        "Port": port,
        "Check": {"CheckID": f"ttl-{sid}", "TTL": "600s", "Status": "passing"},
        **extra,
    }
    async with (
        aiohttp.ClientSession(headers=consul.headers()) as http,
        http.put(f"{consul.http_url}/v1/agent/service/register", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()


async def consul_put(consul: ConsulPeer, path: str) -> None:
    async with (
        aiohttp.ClientSession(headers=consul.headers()) as http,
        http.put(f"{consul.http_url}{path}") as resp,
    ):
        assert resp.status == 200, await resp.text()


def instance_health(state: ServiceState) -> dict[str, str]:
    return {i.id.split("/", 1)[1]: i.health for i in state.instances}


async def test_register_health_flip_and_deregister(
    nats_peer: NatsPeer, consul: ConsulPeer, reader: Any
) -> None:
    await register(consul, "web", "web-1", 8001)
    await register(consul, "web", "web-2", 8002, Weights={"Passing": 7, "Warning": 1})
    await register(consul, "Billing.API", "bill-1", 9001, Meta={"syncmesh-namespace": "payments"})
    async with EdgeAgent(edge_config(nats_peer, consul)) as agent:
        await agent.wait_synced(30)
        got = await states(reader)
        assert set(got) == {
            ("default", "web"),
            ("payments", "billing-api-" + got_label_suffix(got)),
        }
        web = got[("default", "web")]
        assert instance_health(web) == {"web-1": "passing", "web-2": "passing"}
        assert {i.port: i.weight for i in web.instances} == {8001: 1, 8002: 7}
        assert all(
            i.id.startswith("syncmesh-consul-dev/") for i in web.instances
        )  # node + service ID

        # Health flip: warning, then critical.
        await consul_put(consul, "/v1/agent/check/warn/ttl-web-2")

        async def web2(expected: str) -> bool:
            return (
                instance_health((await states(reader))[("default", "web")]).get("web-2") == expected
            )

        await wait_until(lambda: web2("warning"), 10, what="warning published")
        await consul_put(consul, "/v1/agent/check/fail/ttl-web-2")
        await wait_until(lambda: web2("critical"), 10, what="critical published")
        # Maintenance mode is critical too.
        await consul_put(consul, "/v1/agent/service/maintenance/web-1?enable=true&reason=test")

        async def web1_maint() -> bool:
            return (
                instance_health((await states(reader))[("default", "web")]).get("web-1")
                == "critical"
            )

        await wait_until(web1_maint, 10, what="maintenance published")

        # A new service, then deregistration of every instance of web: tombstone.
        await register(consul, "api", "api-1", 7000)
        await wait_until(lambda: has(reader, ("default", "api")), 10, what="new service")
        await consul_put(consul, "/v1/agent/service/deregister/web-1")
        await consul_put(consul, "/v1/agent/service/deregister/web-2")

        async def web_tombstoned() -> bool:
            state = (await states(reader))[("default", "web")]
            return state.deleted and state.instances == []

        await wait_until(web_tombstoned, 10, what="tombstone")
        assert (
            agent.collector_registry.get_sample_value(
                "syncmesh_edge_published_total", {"kind": "tombstone"}
            )
            == 1
        )
        assert agent.collector_registry.get_sample_value("syncmesh_edge_services") == 2


def got_label_suffix(got: dict[tuple[str, str], ServiceState]) -> str:
    [label] = [k[1] for k in got if k[0] == "payments"]
    return label.rsplit("-", 1)[1]


async def has(nc: Any, key: tuple[str, str]) -> bool:
    state = (await states(nc)).get(key)
    return state is not None and not state.deleted


@pytest.mark.reliability
async def test_recovers_by_itself_after_consul_restart(
    nats_peer: NatsPeer, consul: ConsulPeer, reader: Any
) -> None:
    # Raise the raft index well above what a fresh dev agent reaches after a
    # restart, so the restarted catalog's index is certain to go backwards.
    async with aiohttp.ClientSession() as http:
        for n in range(150):
            async with http.put(f"{consul.http_url}/v1/kv/bump/{n}", data=b"x") as resp:
                assert resp.status == 200
    await register(consul, "web", "web-1", 8001)
    async with EdgeAgent(edge_config(nats_peer, consul)) as agent:
        await agent.wait_synced(30)
        assert isinstance(agent.source, ConsulSource)
        await consul.restart()
        # Registered after the restart: only seen if both watches recovered.
        await register(consul, "late", "late-1", 8100)
        await wait_until(lambda: has(reader, ("default", "late")), 30, what="service after restart")
        await consul_put(consul, "/v1/agent/check/fail/ttl-web-1")

        async def web_critical() -> bool:
            state = (await states(reader)).get(("default", "web"))
            return (
                state is not None and not state.deleted and state.instances[0].health == "critical"
            )

        await wait_until(web_critical, 30, what="health change after restart")
        # The restarted dev agent's raft index starts over: the loops noticed and reset.
        resets = agent.collector_registry.get_sample_value(
            "syncmesh_edge_source_events_total", {"kind": "consul_index_reset"}
        )
        assert resets is not None and resets >= 1
        # The outage was seen and counted. Its reason depends on where the restart
        # found the agent's next request: refused while Consul was down
        # (consul_connect), cut off mid-request (consul_io), or answered by a
        # Consul back up but without a leader yet (consul_http_500).
        errors = {
            sample.labels["reason"]: sample.value
            for metric in agent.collector_registry.collect()
            if metric.name == "syncmesh_edge_source_errors"
            for sample in metric.samples
            if sample.name.endswith("_total")
        }
        assert sum(errors.values()) >= 1, errors
        assert agent.core is not None and agent.core.source_health == "ok"


async def test_acl_token_and_forbidden_token(
    nats_peer: NatsPeer, reader: Any, tmp_path: Path
) -> None:
    async with consul_agent(acl=True, workdir=tmp_path / "consul-acl") as consul:
        assert consul.token
        await register(consul, "secure", "secure-1", 8443)
        async with EdgeAgent(edge_config(nats_peer, consul, token=consul.token)) as agent:
            await agent.wait_synced(30)
            assert await has(reader, ("default", "secure"))
        bad = edge_config(nats_peer, consul, token="00000000-0000-0000-0000-000000000000")
        async with EdgeAgent(bad) as agent:

            async def forbidden() -> bool:
                value = agent.collector_registry.get_sample_value(
                    "syncmesh_edge_source_errors_total", {"reason": "consul_forbidden"}
                )
                return (value or 0) >= 1

            await wait_until(forbidden, 15, what="forbidden counted")
            assert agent.core is not None and agent.core.source_health == "degraded"
            assert not agent.core.source_synced


async def test_port_change_without_check_change_is_found(
    nats_peer: NatsPeer, consul: ConsulPeer, reader: Any
) -> None:
    await register(consul, "web", "web-1", 8001)
    async with EdgeAgent(edge_config(nats_peer, consul)) as agent:
        await agent.wait_synced(30)
        # Same check, new port: only the services table changes (no check to attribute it
        # to), so the agent falls back to a bounded re-list.
        await register(consul, "web", "web-1", 8011)

        async def moved() -> bool:
            state = (await states(reader))[("default", "web")]
            return [i.port for i in state.instances] == [8011]

        await wait_until(moved, 15, what="port change published")
        assert isinstance(agent.source, ConsulSource) and agent.core is not None
        assert agent.core.source_health == "ok"
        relists = agent.collector_registry.get_sample_value(
            "syncmesh_edge_source_events_total", {"kind": "consul_relist_unexplained"}
        )
        assert relists == 1


@pytest.mark.reliability
async def test_a_restarted_consul_is_read_again_at_once_not_after_the_blocking_wait(
    nats_peer: NatsPeer, consul: ConsulPeer, reader: Any
) -> None:
    """Found by the nemesis: after a Consul restart the retried blocking query still
    carried the old, higher index, so the new server held it for the whole wait
    (55 s by default) before the agent saw anything."""
    async with aiohttp.ClientSession() as http:
        for n in range(50):  # an index well above what the restarted agent starts at
            async with http.put(f"{consul.http_url}/v1/kv/bump/{n}", data=b"x") as resp:
                assert resp.status == 200
    await register(consul, "before", "before-1", 8001)
    async with EdgeAgent(edge_config(nats_peer, consul, wait_s=60)) as agent:
        await agent.wait_synced(30)
        await consul.restart()
        await register(consul, "after", "after-1", 8002)
        started = asyncio.get_running_loop().time()
        await wait_until(lambda: has(reader, ("default", "after")), 30, what="after published")
        # Well inside the 60 s blocking wait the old code sat out.
        assert asyncio.get_running_loop().time() - started < 30


async def catalog_register(consul: ConsulPeer, address: str) -> None:
    """An external service (registered in the catalog, not with the agent): Consul's
    anti-entropy does not write it back, so the catalog holds what was last written."""
    body = {
        "Node": "ext-node",
        "Address": "10.9.0.100",
        "Service": {"ID": "pay-1", "Service": "pay", "Address": address, "Port": 8080},
        "Check": {"CheckID": "pay-alive", "ServiceID": "pay-1", "Name": "pay", "Status": "passing"},
    }
    async with (
        aiohttp.ClientSession(headers=consul.headers()) as http,
        http.put(f"{consul.http_url}/v1/catalog/register", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()


@pytest.mark.reliability
async def test_a_restored_snapshot_is_read_again_even_when_no_name_or_check_moved(
    nats_peer: NatsPeer, consul: ConsulPeer, reader: Any
) -> None:
    """Found by the nemesis (seed 8, a Consul restart): when Consul's state is rebuilt
    (restart, snapshot restore), the catalog's names and the checks can come back
    exactly as the agent last saw them while a service's instances did not: here a
    snapshot taken before an address change is restored. Nothing the agent compares
    moves, so only a re-read of every service after the index reset finds it (before
    the fix: only the full re-list, 10 minutes later)."""
    await catalog_register(consul, "10.9.0.1")
    async with EdgeAgent(edge_config(nats_peer, consul)) as agent:
        await agent.wait_synced(30)

        async def address_is(address: str) -> bool:
            state = (await states(reader)).get(("default", "pay"))
            return state is not None and [i.address for i in state.instances] == [address]

        await wait_until(lambda: address_is("10.9.0.1"), 15, what="first address published")
        async with (
            aiohttp.ClientSession(headers=consul.headers()) as http,
            http.get(f"{consul.http_url}/v1/snapshot") as resp,
        ):
            assert resp.status == 200, await resp.text()
            snapshot = await resp.read()
        await catalog_register(consul, "10.9.0.2")
        await wait_until(lambda: address_is("10.9.0.2"), 15, what="address change published")
        async with (
            aiohttp.ClientSession(headers=consul.headers()) as http,
            http.put(f"{consul.http_url}/v1/snapshot", data=snapshot) as resp,
        ):
            assert resp.status == 200, await resp.text()
        await wait_until(lambda: address_is("10.9.0.1"), 20, what="restored address published")
        rebuilt = agent.collector_registry.get_sample_value(
            "syncmesh_edge_source_events_total", {"kind": "consul_relist_rebuilt"}
        )
        assert rebuilt is not None and rebuilt >= 1
