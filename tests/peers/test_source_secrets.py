"""Source credentials that rotate, on real peers (issue 11): a Consul ACL token and a
Nacos password read from files and replaced while services change; the agent keeps
publishing with the new credential and loses no update."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from edge_sync.config import EdgeConfig
from edge_sync.io.nacos import NacosSource
from edge_sync.io.remote_state import read_last_states
from harness.consul_peer import consul_agent
from harness.nacos_peer import nacos_server
from harness.nats_peer import NatsPeer
from syncmesh.nats_config import NatsConfig
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.embedded.process import wait_until
from syncmesh_io.nats_connection import connect

pytestmark = [pytest.mark.peers, pytest.mark.security]


async def _published(nats_url: str, cluster: str, service: str) -> bool:
    nc = await connect(NatsConfig(servers=[nats_url]))
    try:
        states = await read_last_states(nc.jetstream(), cluster, idle_timeout_s=1.0)
    finally:
        await nc.close()
    state = states.get(("default", service))
    return state is not None and not state.deleted and bool(state.instances)


async def _consul(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with http.request(method, url, **kw) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json(content_type=None)


async def test_consul_token_file_rotates_without_a_restart(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    async with consul_agent(acl=True, workdir=tmp_path / "consul") as consul:
        root = consul.headers()
        async with aiohttp.ClientSession(headers=root) as http:
            base = consul.http_url

            async def new_token() -> dict[str, Any]:
                body = {"Policies": [{"Name": "global-management"}]}
                token: dict[str, Any] = await _consul(
                    http, "PUT", f"{base}/v1/acl/token", json=body
                )
                return token

            async def register(name: str) -> None:
                body = {"Name": name, "ID": name, "Address": "10.0.0.1", "Port": 80}
                await _consul(http, "PUT", f"{base}/v1/agent/service/register", json=body)

            first = await new_token()
            token_file = tmp_path / "consul-token"
            token_file.write_text(first["SecretID"] + "\n")
            await register("before")
            cfg = msgspec.convert(
                {
                    "cluster": "east",
                    "metrics_port": 0,
                    "nats": {"servers": [nats_peer.url]},
                    "source": {
                        "kind": "consul",
                        "consul": {
                            "address": consul.http_addr,
                            "token_file": str(token_file),
                            "wait_s": 2,
                        },
                    },
                },
                EdgeConfig,
            )
            async with EdgeAgent(cfg) as agent:
                await agent.wait_synced(30)
                assert await _published(nats_peer.url, "east", "before")
                # Rotate: the new token goes into the file, then the old one is revoked.
                second = await new_token()
                tmp = token_file.with_suffix(".new")
                tmp.write_text(second["SecretID"] + "\n")
                tmp.replace(token_file)
                await _consul(http, "DELETE", f"{base}/v1/acl/token/{first['AccessorID']}")
                await register("after")
                await wait_until(
                    lambda: _published(nats_peer.url, "east", "after"),
                    60,
                    what="service registered after the rotation published",
                )
                assert agent.core is not None and agent.core.source_health == "ok"


async def test_nacos_password_file_rotates_with_a_new_login(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    async with nacos_server(auth=True, workdir=tmp_path / "nacos") as nacos:
        password_file = tmp_path / "nacos-password"
        password_file.write_text(f"{nacos.password}\n")
        cfg = msgspec.convert(
            {
                "cluster": "west",
                "metrics_port": 0,
                "nats": {"servers": [nats_peer.url]},
                "source": {
                    "kind": "nacos",
                    "nacos": {
                        "server_addr": nacos.server_addr,
                        "username": nacos.username,
                        "password_file": str(password_file),
                        "list_interval_s": 0.5,
                        "secret_check_s": 0.5,
                        "work_dir": str(tmp_path / "sdk"),
                    },
                },
            },
            EdgeConfig,
        )
        async with aiohttp.ClientSession() as http:

            async def register(name: str) -> None:
                token = await nacos.login(http, password_file.read_text().strip())
                params = {
                    "serviceName": name,
                    "ip": "127.0.0.1",
                    "port": str(nacos.port),
                    "ephemeral": "false",
                    "accessToken": token,
                }
                async with http.post(f"{nacos.base_url}/v1/ns/instance", params=params) as resp:
                    assert resp.status == 200, await resp.text()

            await register("before")
            async with EdgeAgent(cfg) as agent:
                await agent.wait_synced(60)
                assert await _published(nats_peer.url, "west", "before")
                token = await nacos.login(http)
                new_password = "rotated-Pw-2"
                async with http.put(
                    f"{nacos.base_url}/v1/auth/users",
                    params={
                        "username": nacos.username or "",
                        "newPassword": new_password,
                        "accessToken": token,
                    },
                ) as resp:
                    assert resp.status == 200, await resp.text()
                password_file.write_text(new_password + "\n")
                source = agent.source
                assert isinstance(source, NacosSource)
                await wait_until(
                    lambda: _async(source.relogins >= 1), 30, what="login with the new password"
                )
                await register("after")
                await wait_until(
                    lambda: _published(nats_peer.url, "west", "after"),
                    60,
                    what="service registered after the rotation published",
                )
                assert agent.core is not None and agent.core.source_health == "ok"


async def _async(value: bool) -> bool:
    return value
