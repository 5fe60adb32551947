"""The edge agent against a real Nacos server (auth on) and a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from v2.nacos import (
    ClientConfigBuilder,
    DeregisterInstanceParam,
    NacosNamingService,
    RegisterInstanceParam,
)

from edge_sync.config import EdgeConfig
from edge_sync.io.remote_state import read_last_states
from harness.nacos_peer import NacosPeer, nacos_server
from harness.nats_peer import NatsPeer
from syncmesh.labels import to_label
from syncmesh.schema import ServiceState
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.embedded.process import wait_until
from syncmesh_io import nats_connection as natsconn

pytestmark = pytest.mark.peers

ORDERS = ("default", to_label("com.foo.Orders"))
PAY = ("default", "pay--checkout")
DEV = ("dev", "inventory")


async def naming(peer: NacosPeer, work: Path, namespace_id: str = "") -> NacosNamingService:
    config = (
        ClientConfigBuilder()
        .server_address(peer.server_addr)
        .namespace_id(namespace_id)
        .username(peer.username or "")
        .password(peer.password or "")
        .cache_dir(str(work / "cache"))
        .log_dir(str(work / "logs"))
        .load_cache_at_start(False)
        .build()
    )
    return await NacosNamingService.create_naming_service(config)


async def create_namespace(peer: NacosPeer, namespace_id: str) -> None:
    async with aiohttp.ClientSession() as http:
        token = await peer.login(http)
        async with http.post(
            f"{peer.base_url}/v1/console/namespaces",
            params={"accessToken": token},
            data={
                "customNamespaceId": namespace_id,
                "namespaceName": namespace_id,
                "namespaceDesc": "edge test",
            },
        ) as resp:
            assert resp.status == 200, await resp.text()


@pytest.fixture
async def nacos(tmp_path: Path) -> AsyncIterator[NacosPeer]:
    async with nacos_server(auth=True, workdir=tmp_path / "nacos") as peer:
        yield peer


async def states(nc: Any) -> dict[tuple[str, str], ServiceState]:
    found = await read_last_states(nc.jetstream(), "west")
    return {k: v for k, v in found.items() if v is not None}


async def test_register_deregister_weight_zero_disabled_groups_namespaces(
    nats_peer: NatsPeer, nacos: NacosPeer, tmp_path: Path
) -> None:
    await create_namespace(nacos, "dev")
    # A Nacos 2.x gRPC client holds one ephemeral instance per service: one client per instance.
    public = await naming(nacos, tmp_path / "reg-public")
    second = await naming(nacos, tmp_path / "reg-second")
    dev = await naming(nacos, tmp_path / "reg-dev", "dev")
    nc = await natsconn.connect(natsconn.NatsConfig(servers=[nats_peer.url]))
    try:
        await public.register_instance(
            RegisterInstanceParam(service_name="com.foo.Orders", ip="10.0.0.1", port=80)
        )
        await second.register_instance(
            RegisterInstanceParam(
                service_name="com.foo.Orders", ip="10.0.0.2", port=80, weight=2.5, cluster_name="c2"
            )
        )
        await public.register_instance(
            RegisterInstanceParam(service_name="checkout", group_name="pay", ip="10.0.1.1", port=81)
        )
        await dev.register_instance(
            RegisterInstanceParam(service_name="inventory", ip="10.0.2.1", port=82)
        )
        cfg = msgspec.convert(
            {
                "cluster": "west",
                "nats": {"servers": [nats_peer.url]},
                "source": {
                    "kind": "nacos",
                    "nacos": {
                        "server_addr": nacos.server_addr,
                        "username": nacos.username,
                        "password": nacos.password,
                        "namespaces": ["public", "dev"],
                        "groups": ["DEFAULT_GROUP", "pay"],
                        "list_interval_s": 1.0,
                        "work_dir": str(tmp_path / "edge-nacos"),
                    },
                },
            },
            EdgeConfig,
        )
        async with EdgeAgent(cfg) as agent:
            await agent.wait_synced(60)
            got = await states(nc)
            assert set(got) == {ORDERS, PAY, DEV}
            orders = got[ORDERS]
            assert orders.source == "nacos" and orders.source_name == "com.foo.Orders"
            assert {i.id: (i.health, i.weight) for i in orders.instances} == {
                "10.0.0.1#80#DEFAULT": ("passing", 100),
                "10.0.0.2#80#c2": ("passing", 250),
            }
            assert got[PAY].source_name == "pay@@checkout"
            assert got[DEV].instances[0].address == "10.0.2.1"

            async def orders_instances() -> dict[str, tuple[str, int]]:
                state = (await states(nc))[ORDERS]
                return {i.id: (i.health, i.weight) for i in state.instances}

            # Weight 0: still published, with weight 0 (the registry does not route to it).
            await public.update_instance(
                RegisterInstanceParam(
                    service_name="com.foo.Orders", ip="10.0.0.1", port=80, weight=0.0
                )
            )

            async def weight_zero() -> bool:
                return (await orders_instances()).get("10.0.0.1#80#DEFAULT") == ("passing", 0)

            await wait_until(weight_zero, 15, what="weight 0 published")

            # Disabled: Nacos 2.x does not push disabled instances to subscribers,
            # so it leaves the published set (it would be "critical" if pushed).
            await second.update_instance(
                RegisterInstanceParam(
                    service_name="com.foo.Orders",
                    ip="10.0.0.2",
                    port=80,
                    cluster_name="c2",
                    enabled=False,
                )
            )

            async def disabled_gone() -> bool:
                return set(await orders_instances()) == {"10.0.0.1#80#DEFAULT"}

            await wait_until(disabled_gone, 15, what="disabled instance not routable")

            # Deregistering the last instance: an empty state, never a stale one.
            await dev.deregister_instance(
                DeregisterInstanceParam(service_name="inventory", ip="10.0.2.1", port=82)
            )

            async def dev_empty() -> bool:
                state = (await states(nc))[DEV]
                return state.instances == [] or state.deleted

            await wait_until(dev_empty, 15, what="deregistration published")

            # A new service is found by the periodic list and followed by push.
            await public.register_instance(
                RegisterInstanceParam(service_name="late", ip="10.0.3.1", port=83)
            )

            async def late_seen() -> bool:
                state = (await states(nc)).get(("default", "late"))
                return state is not None and len(state.instances) == 1

            await wait_until(late_seen, 15, what="new service discovered")
            assert agent.core is not None and agent.core.source_health == "ok"
            # The SDK wrote its files where it was told, not into the home directory.
            assert (tmp_path / "edge-nacos" / "logs").is_dir()
    finally:
        await nc.close()
        for client in (public, second, dev):
            await client.shutdown()


async def test_wrong_password_is_a_degraded_source_not_a_crash(
    nats_peer: NatsPeer, nacos: NacosPeer, tmp_path: Path
) -> None:
    cfg = msgspec.convert(
        {
            "cluster": "west",
            "nats": {"servers": [nats_peer.url]},
            "source": {
                "kind": "nacos",
                "nacos": {
                    "server_addr": nacos.server_addr,
                    "username": nacos.username,
                    "password": "wrong",
                    "list_interval_s": 0.5,
                    "work_dir": str(tmp_path / "edge-nacos"),
                },
            },
        },
        EdgeConfig,
    )
    async with EdgeAgent(cfg) as agent:

        async def degraded() -> bool:
            value = agent.collector_registry.get_sample_value(
                "syncmesh_edge_source_errors_total", {"reason": "nacos_auth"}
            )
            return (value or 0) >= 1

        await wait_until(degraded, 30, what="source error counted")
        assert agent.core is not None and not agent.core.source_synced
        assert agent.core.source_health == "degraded"
