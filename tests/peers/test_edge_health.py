"""The agent's /healthz, /readyz and /metrics on a real nats-server."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from edge_sync.config import DEFAULT_METRICS_PORT, EdgeConfig
from harness.nats_peer import NatsPeer
from syncmesh.configfile import ConfigError
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.embedded.process import wait_until

pytestmark = pytest.mark.peers

SERVICES = '[[services]]\nname = "web"\n[[services.instances]]\naddress = "10.0.0.1"\nport = 80\n'


def edge_config(peer: NatsPeer, path: Path, **extra: Any) -> EdgeConfig:
    data: dict[str, Any] = {
        "cluster": "east",
        "nats": {"servers": [peer.url]},
        "source": {"kind": "file", "file": {"path": str(path)}},
        "beat_interval_s": 0.3,
        **extra,
    }
    return msgspec.convert(data, EdgeConfig)


async def get(agent: EdgeAgent, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{agent.metrics_port}{path}") as resp,
    ):
        return resp.status, await resp.text()


async def test_readyz_needs_the_source_synced_and_nats_connected(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    path = tmp_path / "services.toml"  # not there yet: the source cannot sync
    await nats_peer.stop_node(0)
    async with EdgeAgent(edge_config(nats_peer, path, metrics_port=-1)) as agent:
        assert agent.metrics_port > 0
        assert (await get(agent, "/healthz"))[0] == 200
        status, body = await get(agent, "/readyz")
        assert status == 503
        assert json.loads(body)["source_synced"] is False

        path.write_text(SERVICES)

        async def source_synced_nats_down() -> bool:
            status, body = await get(agent, "/readyz")
            report = json.loads(body)
            return status == 503 and report["source_synced"] and not report["nats_connected"]

        await wait_until(source_synced_nats_down, 10, what="source synced, NATS still down")
        status, text = await get(agent, "/metrics")
        assert status == 200 and "syncmesh_edge_nats_connected 0.0" in text

        await nats_peer.start_node(0)

        async def ready() -> bool:
            return (await get(agent, "/readyz"))[0] == 200

        await wait_until(ready, 30, what="ready once NATS is there")
        report = json.loads((await get(agent, "/readyz"))[1])
        assert report["ready"] and report["epoch"] == agent.epoch > 0
        assert "syncmesh_edge_nats_connected 1.0" in (await get(agent, "/metrics"))[1]

        # Deposed by a newer agent of the same cluster: no longer healthy, nor ready.
        async with EdgeAgent(edge_config(nats_peer, path, metrics_port=0)) as newer:
            await newer.wait_synced(30)
            await wait_until(_stopped(agent), 10, what="first agent deposed")
            status, body = await get(agent, "/healthz")
            assert status == 503 and json.loads(body)["status"] == "stopped"
            assert (await get(agent, "/readyz"))[0] == 503


def _stopped(agent: EdgeAgent) -> Any:
    async def check() -> bool:
        return agent.stopped.is_set()

    return check


@contextlib.contextmanager
def occupied(port: int) -> Iterator[None]:
    """Hold ``port`` on 127.0.0.1 (when something else holds it already, it is taken anyway)."""
    sock = socket.socket()
    try:
        with contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            sock.listen()
        yield
    finally:
        sock.close()


async def test_endpoints_are_on_by_default_and_a_taken_default_port_falls_back(
    nats_peer: NatsPeer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "services.toml"
    path.write_text(SERVICES)
    assert edge_config(nats_peer, path).metrics_port is None  # the default: on
    with occupied(DEFAULT_METRICS_PORT):
        async with EdgeAgent(edge_config(nats_peer, path)) as agent:
            await agent.wait_synced(30)
            assert agent.metrics_port not in (0, DEFAULT_METRICS_PORT)
            assert any("is taken" in r.getMessage() for r in caplog.records)
            assert (await get(agent, "/readyz"))[0] == 200
            status, text = await get(agent, "/metrics")
            assert status == 200 and 'syncmesh_edge_published_total{kind="service"} 1.0' in text


async def test_an_explicit_port_that_is_taken_is_a_config_error(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    path = tmp_path / "services.toml"
    path.write_text(SERVICES)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError, match=f"metrics_port {port}"):
            async with EdgeAgent(edge_config(nats_peer, path, metrics_port=port)):
                pass
    finally:
        holder.close()
