"""TLS and token auth end to end: the agent reads Consul over HTTPS (CA file) and
publishes to a nats-server that only speaks TLS, or that requires a token; a
client without the CA, or without the token, is refused."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import nats
import pytest

from edge_sync.config import ConsulSourceConfig, EdgeConfig, FileSourceConfig, SourceConfig
from edge_sync.io.remote_state import read_last_states
from harness.consul_peer import consul_agent
from harness.nats_peer import nats_server
from syncmesh.nats_config import NatsConfig
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.embedded.process import wait_until
from syncmesh_io.nats_connection import connect

pytestmark = [pytest.mark.peers, pytest.mark.security]


async def test_agent_over_tls_to_consul_and_nats(tmp_path: Path) -> None:
    async with (
        nats_server(workdir=tmp_path / "nats", tls=True) as nats_peer,
        consul_agent(workdir=tmp_path / "consul", tls=True) as consul,
    ):
        assert nats_peer.certs is not None and consul.https_addr
        ca = str(nats_peer.certs.ca)
        ctx = ssl.create_default_context(cafile=consul.ca_file)
        async with aiohttp.ClientSession() as http:
            body = {"ID": "pay-1", "Name": "payments", "Address": "10.1.0.1", "Port": 8080}
            async with http.put(
                f"https://{consul.https_addr}/v1/agent/service/register", json=body, ssl=ctx
            ) as resp:
                assert resp.status == 200

        # Without the CA the server certificate is not trusted.
        with pytest.raises(Exception):  # noqa: B017 - nats-py wraps the SSL error variously
            await nats.connect(
                nats_peer.url,
                tls=ssl.create_default_context(),
                max_reconnect_attempts=0,
                allow_reconnect=False,
                connect_timeout=2,
            )

        nats_cfg = NatsConfig(servers=[nats_peer.url], tls_ca=ca)
        config = EdgeConfig(
            cluster="east",
            nats=nats_cfg,
            beat_interval_s=0.5,
            source=SourceConfig(
                kind="consul",
                consul=ConsulSourceConfig(
                    address=consul.https_addr, scheme="https", ca_file=consul.ca_file
                ),
            ),
        )
        async with EdgeAgent(config) as agent:
            await agent.wait_synced(30)
            nc = await connect(nats_cfg)
            try:
                js = nc.jetstream()

                async def published() -> bool:
                    states = await read_last_states(js, "east", idle_timeout_s=1.0)
                    state = states.get(("default", "payments"))
                    return state is not None and [i.address for i in state.instances] == [
                        "10.1.0.1"
                    ]

                await wait_until(published, 20, what="payments published over TLS")
            finally:
                await nc.close()


async def test_agent_with_token_auth_and_refused_without(tmp_path: Path) -> None:
    services = tmp_path / "services.toml"
    services.write_text(
        '[[services]]\nname = "pay"\n[[services.instances]]\naddress = "10.0.0.1"\nport = 80\n'
    )
    async with nats_server(workdir=tmp_path / "nats", token="s3cr3t-token") as nats_peer:
        with pytest.raises(Exception):  # noqa: B017 - nats-py raises its own auth errors
            await nats.connect(
                nats_peer.url, max_reconnect_attempts=0, allow_reconnect=False, connect_timeout=2
            )
        nats_cfg = NatsConfig(servers=[nats_peer.url], token="s3cr3t-token")
        config = EdgeConfig(
            cluster="east",
            nats=nats_cfg,
            beat_interval_s=0.5,
            source=SourceConfig(kind="file", file=FileSourceConfig(path=str(services))),
        )
        async with EdgeAgent(config) as agent:
            await agent.wait_synced(30)
            nc = await connect(nats_cfg)
            try:
                states = await read_last_states(nc.jetstream(), "east", idle_timeout_s=1.0)
                state = states.get(("default", "pay"))
                assert state is not None and [i.address for i in state.instances] == ["10.0.0.1"]
            finally:
                await nc.close()
