"""The whole system on real peers, for end-to-end tests and benchmarks.

A nats-server, a Consul (cluster ``east``) and a Nacos (cluster ``west``), an
edge agent for each, real TCP listeners as the two gateways, and one registry
with DNS on an ephemeral port.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from dns_server.config import DnsConfig
from edge_sync.config import ConsulSourceConfig, EdgeConfig, NacosSourceConfig, SourceConfig
from global_registry.config import ProbeConfig
from harness.consul_peer import ConsulPeer, consul_agent
from harness.nacos_peer import NacosPeer, nacos_server
from harness.nats_peer import NatsPeer, nats_server
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import Gateway, Locality
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig

__all__ = ["Listener", "System", "full_system", "FAST_PROBES"]

FAST_PROBES = ProbeConfig(interval_s=0.3, timeout_s=0.3, rise=2, fall=2, jitter=0.0)


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
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


@dataclass
class System:
    nats: NatsPeer
    consul: ConsulPeer
    nacos: NacosPeer
    registry: RegistryApp
    east_gateway: Listener
    west_gateway: Listener

    @property
    def dns_port(self) -> int:
        port = self.registry.dns_port
        assert port, "DNS is not running"
        return port


@contextlib.asynccontextmanager
async def full_system(workdir: Path, probes: ProbeConfig = FAST_PROBES) -> AsyncIterator[System]:
    async with contextlib.AsyncExitStack() as stack:
        nats_peer = await stack.enter_async_context(nats_server(workdir=workdir / "nats"))
        consul = await stack.enter_async_context(consul_agent(workdir=workdir / "consul"))
        nacos = await stack.enter_async_context(nacos_server(workdir=workdir / "nacos"))
        east_gw, west_gw = Listener("127.0.0.2"), Listener("127.0.0.3")
        await east_gw.open()
        stack.push_async_callback(east_gw.close)
        await west_gw.open()
        stack.push_async_callback(west_gw.close)
        nats_cfg = NatsConfig(servers=[nats_peer.url])
        await stack.enter_async_context(
            EdgeAgent(
                EdgeConfig(
                    cluster="east",
                    nats=nats_cfg,
                    source=SourceConfig(
                        kind="consul", consul=ConsulSourceConfig(address=consul.http_addr)
                    ),
                    gateways=[Gateway(address="127.0.0.2", port=east_gw.port)],
                    locality=Locality(region="r1", zone="z1"),
                    client_cidrs=["127.0.0.0/24"],
                    beat_interval_s=1.0,
                    metrics_port=-1,
                )
            )
        )
        await stack.enter_async_context(
            EdgeAgent(
                EdgeConfig(
                    cluster="west",
                    nats=nats_cfg,
                    source=SourceConfig(
                        kind="nacos",
                        nacos=NacosSourceConfig(
                            server_addr=nacos.server_addr,
                            list_interval_s=1.0,
                            work_dir=str(workdir / "sdk"),
                        ),
                    ),
                    gateways=[Gateway(address="127.0.0.3", port=west_gw.port)],
                    locality=Locality(region="r2", zone="z2"),
                    client_cidrs=["10.20.0.0/16"],
                    beat_interval_s=1.0,
                    metrics_port=-1,
                )
            )
        )
        app = await stack.enter_async_context(
            RegistryApp(
                RegistryConfig(
                    nats=nats_cfg, dns=DnsConfig(port=0), admin_port=0, replica="e2e", probe=probes
                )
            )
        )
        await app.wait_ready()
        yield System(nats_peer, consul, nacos, app, east_gw, west_gw)
