"""``syncmesh retire-cluster`` on real peers: a decommissioned cluster leaves every
registry's view, its still-running agent is fenced out, and a dry run changes nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from dns_server.config import DnsConfig
from edge_sync.config import EdgeConfig, FileSourceConfig, SourceConfig
from global_registry.config import ProbeConfig
from harness.nats_peer import NatsPeer
from syncmesh.nats_config import NatsConfig
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.embedded.process import wait_until
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig

pytestmark = pytest.mark.peers

SERVICES = (
    '[[services]]\nname = "pay"\n[[services.instances]]\naddress = "10.0.0.1"\nport = 80\n'
    '[[services]]\nname = "shop"\n[[services.instances]]\naddress = "10.0.0.2"\nport = 80\n'
)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncmesh_app", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_retired_cluster_leaves_the_view_and_its_agent_is_fenced(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    files = {}
    for cluster in ("east", "west"):
        files[cluster] = tmp_path / f"{cluster}.toml"
        files[cluster].write_text(SERVICES)
    nats_cfg = NatsConfig(servers=[nats_peer.url])
    registry = RegistryConfig(
        nats=nats_cfg, dns=DnsConfig(enabled=False), admin_port=0, probe=ProbeConfig(enabled=False)
    )

    def edge(cluster: str) -> EdgeConfig:
        return EdgeConfig(
            cluster=cluster,
            nats=nats_cfg,
            beat_interval_s=0.5,
            metrics_port=0,
            source=SourceConfig(kind="file", file=FileSourceConfig(path=str(files[cluster]))),
        )

    async with RegistryApp(registry) as app:
        await app.wait_ready()
        async with EdgeAgent(edge("east")) as east, EdgeAgent(edge("west")) as west:
            await east.wait_synced(30)
            await west.wait_synced(30)

            async def both_known() -> bool:
                return {"east", "west"} <= set(app.view.clusters)

            await wait_until(both_known, 30, what="both clusters in the view")

            dry = await asyncio.to_thread(_cli, "retire-cluster", "east", "--nats", nats_peer.url)
            assert dry.returncode == 0, dry.stderr
            assert "would tombstone 2 services" in dry.stdout
            await asyncio.sleep(1.0)
            assert "east" in app.view.clusters, "a dry run changes nothing"

            done = await asyncio.to_thread(
                _cli, "retire-cluster", "east", "--nats", nats_peer.url, "--yes", "--ttl", "60"
            )
            assert done.returncode == 0, done.stderr
            assert "tombstoned 2 services" in done.stdout

            async def east_gone() -> bool:
                return "east" not in app.view.clusters and "west" in app.view.clusters

            await wait_until(east_gone, 30, what="east retired from the view")

            # east's agent is still running: the server refuses its next beat, and it stops.
            async def fenced() -> bool:
                return east.deposed is not None

            await wait_until(fenced, 30, what="east's agent deposed by the retirement")
            await asyncio.sleep(2.0)
            assert "east" not in app.view.clusters, "nothing of the old agent came back"
            assert west.deposed is None
