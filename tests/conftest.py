"""Shared fixtures: real peers started by the project's own code on 127.0.0.1.

Each yields a ready peer and tears its whole process group down afterwards,
also when the test fails; the peer's log file is named in any start error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.consul_peer import ConsulPeer, consul_agent
from harness.nacos_peer import NacosPeer, nacos_server
from harness.nats_peer import NatsPeer, nats_server


@pytest.fixture
async def nats_peer(tmp_path: Path) -> AsyncIterator[NatsPeer]:
    async with nats_server(workdir=tmp_path / "nats") as peer:
        yield peer


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[NatsPeer]:
    async with nats_server(cluster_size=3, workdir=tmp_path / "nats-cluster") as peer:
        yield peer


@pytest.fixture
async def consul_peer(tmp_path: Path) -> AsyncIterator[ConsulPeer]:
    async with consul_agent(workdir=tmp_path / "consul") as peer:
        yield peer


@pytest.fixture
async def nacos_peer(tmp_path: Path) -> AsyncIterator[NacosPeer]:
    async with nacos_server(workdir=tmp_path / "nacos") as peer:
        yield peer
