"""Per-cluster NATS permissions on a real nats-server: each agent publishes only its
own cluster's subjects, the registry reads everything and serves its API, and a
spoofed write into another cluster is refused by the server itself."""

from __future__ import annotations

from pathlib import Path

import msgspec
import nats
import pytest

from dns_server.config import DnsConfig
from edge_sync.config import EdgeConfig, FileSourceConfig, SourceConfig
from global_registry.config import ProbeConfig
from harness.nats_peer import nats_server
from syncmesh import subjects
from syncmesh.nats_config import NatsConfig
from syncmesh.permissions import agent_permissions, consumer_permissions, registry_permissions
from syncmesh.schema import Inventory, InventoryRequest, encode
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.embedded.process import wait_until
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig

pytestmark = [pytest.mark.peers, pytest.mark.security]

SERVICES = '[[services]]\nname = "pay"\n[[services.instances]]\naddress = "10.0.0.1"\nport = 80\n'


async def test_agents_are_confined_to_their_cluster(tmp_path: Path) -> None:
    users = {"east": "pw-east", "west": "pw-west", "reg": "pw-reg", "tool": "pw-tool"}
    perms = {
        "east": agent_permissions("east"),
        "west": agent_permissions("west"),
        "reg": registry_permissions("r1"),
        "tool": consumer_permissions(),
    }
    async with nats_server(workdir=tmp_path / "nats", users=users, permissions=perms) as peer:  # type: ignore[arg-type]
        files = {}
        for cluster in ("east", "west"):
            files[cluster] = tmp_path / f"{cluster}.toml"
            files[cluster].write_text(SERVICES)

        def edge(cluster: str) -> EdgeConfig:
            return EdgeConfig(
                cluster=cluster,
                beat_interval_s=0.5,
                nats=NatsConfig(servers=[peer.url], user=cluster, password=users[cluster]),
                source=SourceConfig(kind="file", file=FileSourceConfig(path=str(files[cluster]))),
            )

        registry = RegistryConfig(
            nats=NatsConfig(servers=[peer.url], user="reg", password="pw-reg"),
            dns=DnsConfig(port=0),
            admin_port=0,
            replica="r1",
            probe=ProbeConfig(enabled=False),
        )
        async with RegistryApp(registry) as app:
            await app.wait_ready()
            # The registry owns the stream: agents may not create it.
            async with EdgeAgent(edge("east")) as east, EdgeAgent(edge("west")) as west:
                await east.wait_synced(30)
                await west.wait_synced(30)

                # east tries to overwrite west's service: the server refuses the publish.
                errors: list[Exception] = []

                async def on_error(exc: Exception) -> None:
                    errors.append(exc)

                spoofer = await nats.connect(
                    peer.url, user="east", password="pw-east", error_cb=on_error
                )
                try:
                    js = spoofer.jetstream(timeout=1.0)
                    with pytest.raises(Exception):  # noqa: B017 - no ack: the message never lands
                        await js.publish(subjects.service_subject("west", "default", "pay"), b"{}")
                    await wait_until(lambda: _async_true(bool(errors)), 5, what="permission error")
                    assert "permissions violation" in str(errors[0]).lower()
                finally:
                    await spoofer.close()

                # A read-only inventory tool asks the registry: both clusters, west untouched.
                client = await nats.connect(peer.url, user="tool", password="pw-tool")
                try:
                    reply = await client.request(
                        subjects.INVENTORY, encode(InventoryRequest()), timeout=2
                    )
                    inv = msgspec.json.decode(reply.data, type=Inventory)
                    got = {
                        (s.cluster, s.service, tuple(i.address for i in s.instances))
                        for s in inv.services
                    }
                    assert got == {("east", "pay", ("10.0.0.1",)), ("west", "pay", ("10.0.0.1",))}
                finally:
                    await client.close()


async def _async_true(value: bool) -> bool:
    return value
