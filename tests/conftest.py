"""Shared fixtures: real peers started by the project's own code on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from syncmesh.testing.nats_peer import NatsPeer, nats_server


@pytest.fixture
async def nats_peer(tmp_path) -> AsyncIterator[NatsPeer]:
    async with nats_server(workdir=tmp_path / "nats") as peer:
        yield peer


@pytest.fixture
async def nats_cluster(tmp_path) -> AsyncIterator[NatsPeer]:
    async with nats_server(cluster_size=3, workdir=tmp_path / "nats-cluster") as peer:
        yield peer
