"""``syncmesh audit`` on real peers: a file source, a real Consul, a real Nacos.

Each test lets an agent publish its cluster, stops it (a dead agent is how real
drift starts), then injects one drift of each kind - a service the source gained
(missing globally), one it lost or that only the stream has (extra), one whose
instances changed (differs) - and checks the report and the exit status.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from edge_sync.config import EdgeConfig
from edge_sync.io.remote_state import read_stored_states
from harness.consul_peer import ConsulPeer, consul_agent
from harness.nacos_peer import NacosPeer, nacos_server
from harness.nats_peer import NatsPeer
from harness.samples import claim_epoch, cluster_beat, publish
from syncmesh import subjects
from syncmesh.configfile import load_config
from syncmesh.schema import encode
from syncmesh_app.audit import AuditOptions, audit
from syncmesh_app.edge import EdgeAgent
from syncmesh_io import nats_connection as natsconn

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[2]


def kinds(report: Any, cluster: str) -> dict[str, str]:
    [c] = [c for c in report.clusters if c.cluster == cluster]
    return {d.service: d.kind for d in c.drift}


async def cli_audit(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncmesh_app",
        "audit",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def sync_once(config_path: Path) -> None:
    """An agent publishes the cluster once, then stops (without tombstoning anything)."""
    config = load_config(str(config_path), EdgeConfig, "SYNCMESH_EDGE")
    async with EdgeAgent(config) as agent:
        await agent.wait_synced(60)


def file_services(services: dict[str, tuple[str, int]]) -> str:
    return "".join(
        f'[[services]]\nname = "{name}"\n[[services.instances]]\nid = "{name}-1"\n'
        f'address = "{address}"\nport = {port}\n'
        for name, (address, port) in services.items()
    )


async def test_file_source_in_sync_then_each_drift_kind_and_all(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    services = tmp_path / "services.toml"
    services.write_text(
        file_services({"web": ("10.0.0.1", 80), "api": ("10.0.0.2", 80), "db": ("10.0.0.3", 5432)})
    )
    config = tmp_path / "edge.toml"
    config.write_text(
        f'cluster = "east"\nmetrics_port = 0\n[nats]\nservers = ["{nats_peer.url}"]\n'
        f'[source]\nkind = "file"\n[source.file]\npath = "{services}"\n'
    )
    await sync_once(config)
    code, out, _ = await cli_audit("--config", str(config))
    assert code == 0, out
    assert "east: in sync" in out and "3 services" in out

    services.write_text(
        file_services({"web": ("10.0.0.1", 80), "api": ("10.0.0.2", 81), "new": ("10.0.0.4", 80)})
    )
    report = await audit(AuditOptions(configs=[str(config)]))
    assert kinds(report, "east") == {"api": "differs", "db": "extra", "new": "missing"}
    assert not report.in_sync
    [east] = report.clusters
    api = next(d for d in east.drift if d.service == "api")
    [change] = api.changed
    assert change.fields == {"port": [80, 81]}
    db = next(d for d in east.drift if d.service == "db")
    assert db.global_age_s is not None and 0 <= db.global_age_s < 60
    assert east.agent_stale is False  # the agent stopped just now

    # Another cluster in NATS with no config here: listed by --all, not audited.
    nc = await natsconn.connect(natsconn.NatsConfig(servers=[nats_peer.url]))
    try:
        js = nc.jetstream()
        epoch = await claim_epoch(js, "west")
        await publish(js, cluster_beat("west", epoch=epoch))
    finally:
        await nc.close()
    code, out, _ = await cli_audit("--config", str(config), "--all", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["in_sync"] is False
    by_name = {c["cluster"]: c for c in data["clusters"]}
    assert by_name["west"]["audited"] is False
    assert {d["service"]: d["kind"] for d in by_name["east"]["drift"]} == {
        "api": "differs",
        "db": "extra",
        "new": "missing",
    }

    # An unreachable source is an error, not drift.
    broken = tmp_path / "broken.toml"
    broken.write_text(
        f'cluster = "east"\n[nats]\nservers = ["{nats_peer.url}"]\n'
        '[source]\nkind = "consul"\n[source.consul]\naddress = "127.0.0.1:1"\n'
        "request_timeout_s = 1\n"
    )
    code, out, _ = await cli_audit("--config", str(broken), "--timeout", "5")
    assert code == 2, out
    assert "error: source consul 127.0.0.1:1" in out
    code, _, err = await cli_audit("--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "nope.toml" in err


# -- Consul ----------------------------------------------------------------------


@pytest.fixture
async def consul(tmp_path: Path) -> AsyncIterator[ConsulPeer]:
    async with consul_agent(workdir=tmp_path / "consul") as peer:
        yield peer


async def consul_call(consul: ConsulPeer, path: str, body: Any = None) -> None:
    async with (
        aiohttp.ClientSession(headers=consul.headers()) as http,
        http.put(f"{consul.http_url}{path}", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()


async def register(consul: ConsulPeer, name: str, sid: str, port: int) -> None:
    await consul_call(
        consul,
        "/v1/agent/service/register",
        {
            "Name": name,
            "ID": sid,
            "Address": "127.0.0.10",
            "Port": port,
            "Check": {"CheckID": f"ttl-{sid}", "TTL": "600s", "Status": "passing"},
        },
    )


async def test_consul_missing_extra_and_differs(
    nats_peer: NatsPeer, consul: ConsulPeer, tmp_path: Path
) -> None:
    await register(consul, "web", "web-1", 8080)
    await register(consul, "web", "web-2", 8081)
    await register(consul, "api", "api-1", 9090)
    await register(consul, "db", "db-1", 5432)
    config = tmp_path / "edge.toml"
    config.write_text(
        f'cluster = "east"\nmetrics_port = 0\n[nats]\nservers = ["{nats_peer.url}"]\n'
        f'[source]\nkind = "consul"\n[source.consul]\naddress = "{consul.http_addr}"\n'
        "wait_s = 5\n"
    )
    await sync_once(config)
    code, out, _ = await cli_audit("--config", str(config))
    assert code == 0, out

    await register(consul, "orders", "orders-1", 7000)  # missing globally
    await consul_call(consul, "/v1/agent/service/deregister/db-1")  # extra globally
    await consul_call(consul, "/v1/agent/check/update/ttl-web-2", {"Status": "critical"})
    await register(consul, "web", "web-3", 8082)  # web differs twice
    report = await audit(AuditOptions(configs=[str(config)]))
    assert kinds(report, "east") == {"orders": "missing", "db": "extra", "web": "differs"}
    [east] = report.clusters
    web = next(d for d in east.drift if d.service == "web")
    node = web.changed[0].id.split("/", 1)[0]
    assert web.added == [f"{node}/web-3"]
    assert [(c.id, c.fields) for c in web.changed] == [
        (f"{node}/web-2", {"health": ["passing", "critical"]})
    ]
    code, out, _ = await cli_audit("--config", str(config))
    assert code == 1
    assert "orders" in out and "missing" in out and "health 'passing' -> 'critical'" in out


# -- Nacos -----------------------------------------------------------------------


@pytest.fixture
async def nacos(tmp_path: Path) -> AsyncIterator[NacosPeer]:
    async with nacos_server(workdir=tmp_path / "nacos") as peer:
        yield peer


async def test_nacos_missing_extra_and_differs(
    nats_peer: NatsPeer, nacos: NacosPeer, tmp_path: Path
) -> None:
    from v2.nacos import ClientConfigBuilder, NacosNamingService, RegisterInstanceParam

    async def naming(work: str) -> Any:
        built = (
            ClientConfigBuilder()
            .server_address(nacos.server_addr)
            .cache_dir(str(tmp_path / work / "cache"))
            .log_dir(str(tmp_path / work / "logs"))
            .load_cache_at_start(False)
            .build()
        )
        return await NacosNamingService.create_naming_service(built)

    # A Nacos 2.x gRPC client holds one ephemeral instance per service: one client per instance.
    clients = [await naming(f"reg-{i}") for i in range(4)]
    try:
        await clients[0].register_instance(
            RegisterInstanceParam(service_name="web", ip="10.0.0.1", port=80)
        )
        await clients[1].register_instance(
            RegisterInstanceParam(service_name="api", ip="10.0.0.2", port=80)
        )
        config = tmp_path / "edge.toml"
        config.write_text(
            f'cluster = "west"\nmetrics_port = 0\n[nats]\nservers = ["{nats_peer.url}"]\n'
            f'[source]\nkind = "nacos"\n[source.nacos]\nserver_addr = "{nacos.server_addr}"\n'
            f'work_dir = "{tmp_path / "edge-nacos"}"\n'
        )
        await sync_once(config)
        code, out, _ = await cli_audit("--config", str(config), "--timeout", "30")
        assert code == 0, out

        # missing: a new service; differs: a second instance of web; extra: a state only
        # the stream has, written there behind the source's back.
        await clients[2].register_instance(
            RegisterInstanceParam(service_name="orders", ip="10.0.0.3", port=80)
        )
        await clients[3].register_instance(
            RegisterInstanceParam(service_name="web", ip="10.0.0.9", port=80)
        )
        nc = await natsconn.connect(natsconn.NatsConfig(servers=[nats_peer.url]))
        try:
            js = nc.jetstream()
            api = (await read_stored_states(js, "west"))[("default", "api")].state
            assert api is not None
            ghost = msgspec.structs.replace(
                api, service="ghost", source_name="ghost", revision=api.revision + 100
            )
            await js.publish(subjects.service_subject("west", "default", "ghost"), encode(ghost))
        finally:
            await nc.close()

        async def drift_seen() -> dict[str, str]:
            report = await audit(AuditOptions(configs=[str(config)], timeout_s=30))
            return kinds(report, "west")

        # Nacos needs a moment to show a fresh registration to a new client.
        for _ in range(30):
            found = await drift_seen()
            if found == {"orders": "missing", "ghost": "extra", "web": "differs"}:
                break
            await asyncio.sleep(1.0)
        assert found == {"orders": "missing", "ghost": "extra", "web": "differs"}
        code, out, _ = await cli_audit("--config", str(config), "--json", "--timeout", "30")
        assert code == 1
        west = json.loads(out)["clusters"][0]
        web = next(d for d in west["drift"] if d["service"] == "web")
        assert web["added"] == ["10.0.0.9#80#DEFAULT"]
    finally:
        for client in clients:
            await client.shutdown()
