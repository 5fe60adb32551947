"""The operator commands with nothing but the read-only consumer permissions
(``syncmesh nats-permissions consumer -``) on a real nats-server with per-user
permissions: inventory (from the registry and from the stream), resolve and status."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dns_server.config import DnsConfig
from edge_sync.config import EdgeConfig, FileSourceConfig, SourceConfig
from global_registry.config import ProbeConfig
from harness.nats_peer import nats_server
from syncmesh.nats_config import NatsConfig
from syncmesh.permissions import agent_permissions, consumer_permissions, registry_permissions
from syncmesh.schema import Gateway
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig

pytestmark = [pytest.mark.peers, pytest.mark.security]

SERVICES = '[[services]]\nname = "pay"\n[[services.instances]]\naddress = "10.0.0.1"\nport = 80\n'


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    # In a thread: the registry answering the command runs on this test's event loop.
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "syncmesh_app", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )


async def test_operator_commands_with_consumer_permissions(tmp_path: Path) -> None:
    users = {"east": "pw-east", "reg": "pw-reg", "tool": "pw-tool"}
    perms = {
        "east": agent_permissions("east"),
        "reg": registry_permissions("r1"),
        "tool": consumer_permissions(),
    }
    async with nats_server(workdir=tmp_path / "nats", users=users, permissions=perms) as peer:  # type: ignore[arg-type]
        services = tmp_path / "east.toml"
        services.write_text(SERVICES)
        gateway = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = int(gateway.sockets[0].getsockname()[1])
        edge = EdgeConfig(
            cluster="east",
            beat_interval_s=0.5,
            nats=NatsConfig(servers=[peer.url], user="east", password="pw-east"),
            source=SourceConfig(kind="file", file=FileSourceConfig(path=str(services))),
            gateways=[Gateway(address="127.0.0.1", port=port)],
        )
        registry = RegistryConfig(
            nats=NatsConfig(servers=[peer.url], user="reg", password="pw-reg"),
            dns=DnsConfig(port=0),
            admin_port=0,
            replica="r1",
            probe=ProbeConfig(interval_s=0.2, timeout_s=0.3, rise=1, fall=2),
        )
        tool = tmp_path / "tool.toml"
        tool.write_text(f'[nats]\nservers = ["{peer.url}"]\nuser = "tool"\npassword = "pw-tool"\n')
        try:
            async with EdgeAgent(edge) as agent, RegistryApp(registry) as app:
                await agent.wait_synced(30)
                async with asyncio.timeout(30):
                    await app.wait_ready()
                    while not app.view.up_gateways("east"):
                        await asyncio.sleep(0.1)
                config = ["--config", str(tool)]
                result = await _cli("inventory", "--json", *config)
                assert result.returncode == 0, result.stderr
                assert [s["service"] for s in json.loads(result.stdout)["services"]] == ["pay"]
                result = await _cli("inventory", "--via", "stream", *config)
                assert result.returncode == 0 and "pay" in result.stdout, result.stderr
                result = await _cli("resolve", "pay", *config)
                assert result.returncode == 0, result.stderr
                assert "DNS answers 127.0.0.1 (cluster east" in result.stdout
                result = await _cli("status", "--json", *config)
                assert result.returncode == 0, result.stderr
                (replica,) = json.loads(result.stdout)
                assert replica["replica"] == "r1" and replica["ready"] is True
                # Without credentials the server refuses the connection: no answer.
                result = await _cli("status", "--nats", peer.url, "--timeout", "1")
                assert result.returncode == 1 and "cannot connect" in result.stderr
        finally:
            gateway.close()
            await gateway.wait_closed()
