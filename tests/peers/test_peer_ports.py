"""Peers that cannot bind port 0 themselves (Consul, a NATS cluster) retry on fresh
ports after a collision."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import nats
import pytest

import harness.consul_peer
import syncmesh_app.embedded.nats
from harness.consul_peer import consul_agent
from syncmesh_app.embedded.nats import nats_server
from syncmesh_app.embedded.process import free_port

pytestmark = pytest.mark.peers


async def test_consul_started_on_a_taken_port_comes_up_on_fresh_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process took the HTTP port between the pick and Consul's bind.
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        taken = squatter.getsockname()[1]
        picks: Iterator[int] = iter([taken])
        monkeypatch.setattr(
            harness.consul_peer, "free_port", lambda: next(picks, None) or free_port()
        )
        async with consul_agent(workdir=tmp_path / "consul") as peer:
            assert peer.http_url != f"http://127.0.0.1:{taken}"
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{peer.http_url}/v1/status/leader") as resp,
            ):
                assert resp.status == 200 and (await resp.json())


async def test_a_nats_cluster_started_on_a_taken_port_comes_up_on_fresh_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cluster's route ports must be known before any node starts, so they are
    # picked, not bound; here another process holds the first node's client port.
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        taken = squatter.getsockname()[1]
        picks: Iterator[int] = iter([taken])
        monkeypatch.setattr(
            syncmesh_app.embedded.nats, "free_port", lambda: next(picks, None) or free_port()
        )
        async with nats_server(cluster_size=3, workdir=tmp_path / "nats") as peer:
            assert taken not in [node.port for node in peer.nodes]
            nc = await nats.connect(peer.urls)
            try:
                info = await nc.jetstream().account_info()
                assert info.limits is not None
            finally:
                await nc.close()
