"""Peers that cannot bind port 0 themselves retry on fresh ports after a collision."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

import harness.consul_peer
from harness.consul_peer import consul_agent
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
