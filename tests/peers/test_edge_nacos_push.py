"""The Nacos agent follows instance changes by push, not by re-reading every service.

A real Nacos 2.3.2 and a real nats-server. The safety-net re-read is set far
out (``reread_interval_s = 3600``), so within the test every instance change the
agent publishes came through a gRPC push, while the periodic listing (every
0.5 s) keeps finding new services and removed ones; a service deleted in Nacos
is published as an explicit tombstone. The agent reads a service's instances
only when it is new (``syncmesh_edge_source_requests_total{kind="read"}``).
"""

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
from syncmesh.schema import ServiceState
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.embedded.process import wait_until
from syncmesh_io import nats_connection as natsconn

pytestmark = pytest.mark.peers

SERVICES = ("alpha", "beta", "gamma")


@pytest.fixture
async def nacos(tmp_path: Path) -> AsyncIterator[NacosPeer]:
    async with nacos_server(workdir=tmp_path / "nacos") as peer:
        yield peer


async def naming(peer: NacosPeer, work: Path) -> NacosNamingService:
    config = (
        ClientConfigBuilder()
        .server_address(peer.server_addr)
        .cache_dir(str(work / "cache"))
        .log_dir(str(work / "logs"))
        .load_cache_at_start(False)
        .build()
    )
    return await NacosNamingService.create_naming_service(config)


async def states(nc: Any) -> dict[tuple[str, str], ServiceState]:
    found = await read_last_states(nc.jetstream(), "west")
    return {k: v for k, v in found.items() if v is not None}


def requests(agent: EdgeAgent, kind: str) -> float:
    value = agent.collector_registry.get_sample_value(
        "syncmesh_edge_source_requests_total", {"kind": kind}
    )
    return value or 0.0


async def test_changes_by_push_new_services_by_listing_deletions_as_tombstones(
    nats_peer: NatsPeer, nacos: NacosPeer, tmp_path: Path
) -> None:
    writer = await naming(nacos, tmp_path / "writer")
    # One ephemeral instance per service and client: a second client for a second instance.
    second = await naming(nacos, tmp_path / "second")
    nc = await natsconn.connect(natsconn.NatsConfig(servers=[nats_peer.url]))
    try:
        for n, name in enumerate(SERVICES):
            await writer.register_instance(
                RegisterInstanceParam(service_name=name, ip=f"10.0.0.{n + 1}", port=80)
            )
        cfg = msgspec.convert(
            {
                "cluster": "west",
                "nats": {"servers": [nats_peer.url]},
                "source": {
                    "kind": "nacos",
                    "nacos": {
                        "server_addr": nacos.server_addr,
                        "list_interval_s": 0.5,
                        "reread_interval_s": 3600.0,
                        "work_dir": str(tmp_path / "edge-nacos"),
                    },
                },
            },
            EdgeConfig,
        )
        async with EdgeAgent(cfg) as agent:
            await agent.wait_synced(90)
            got = await states(nc)
            assert {k[1] for k, s in got.items() if not s.deleted} == set(SERVICES)
            reads = requests(agent, "read")
            assert reads >= len(SERVICES)  # each new service read once (again if it failed)
            lists = requests(agent, "list")

            # An instance added to a known service: published through the push alone.
            await second.register_instance(
                RegisterInstanceParam(service_name="beta", ip="10.0.1.2", port=81)
            )

            async def beta_has_two() -> bool:
                state = (await states(nc)).get(("default", "beta"))
                return state is not None and {i.address for i in state.instances} == {
                    "10.0.0.2",
                    "10.0.1.2",
                }

            await wait_until(beta_has_two, 30, interval=0.2, what="push published")

            # Listing goes on (every 0.5 s); no known service is read again.
            async def listed_twice_more() -> bool:
                return requests(agent, "list") >= lists + 2

            await wait_until(listed_twice_more, 30, interval=0.2, what="listing goes on")
            assert requests(agent, "read") == reads

            # A new service: found by the listing, read once, followed by push.
            await writer.register_instance(
                RegisterInstanceParam(service_name="late", ip="10.0.3.1", port=83)
            )

            async def late_seen() -> bool:
                state = (await states(nc)).get(("default", "late"))
                return state is not None and [i.address for i in state.instances] == ["10.0.3.1"]

            await wait_until(late_seen, 30, interval=0.2, what="new service discovered")
            assert requests(agent, "read") == reads + 1

            # A deleted service: its instance deregistered, then the service removed from
            # Nacos. It leaves the listing and is published as a tombstone.
            await writer.deregister_instance(
                DeregisterInstanceParam(service_name="gamma", ip="10.0.0.3", port=80)
            )

            async def gamma_empty() -> bool:
                state = (await states(nc)).get(("default", "gamma"))
                return state is not None and (state.instances == [] or state.deleted)

            await wait_until(gamma_empty, 30, interval=0.2, what="deregistration pushed")
            async with aiohttp.ClientSession() as http:

                async def delete_gamma() -> bool:
                    async with http.delete(
                        f"{nacos.base_url}/v1/ns/service",
                        params={"serviceName": "gamma", "namespaceId": "public"},
                    ) as resp:
                        return resp.status == 200

                # Nacos may still count the instance for a moment after the push.
                await wait_until(delete_gamma, 30, interval=0.5, what="service deleted in Nacos")

            async def gamma_tombstone() -> bool:
                state = (await states(nc)).get(("default", "gamma"))
                return state is not None and state.deleted

            await wait_until(gamma_tombstone, 30, interval=0.2, what="tombstone published")
            final = await states(nc)
            assert {k[1] for k, s in final.items() if not s.deleted} == {"alpha", "beta", "late"}
            assert agent.core is not None and agent.core.source_health == "ok"
    finally:
        await nc.close()
        for client in (writer, second):
            await client.shutdown()
