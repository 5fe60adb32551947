"""Fault tests: NATS away or frozen while the source changes; the agent killed, crashed, restarted."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edge_sync.config import EdgeConfig
from edge_sync.io.remote_state import read_last_states
from harness.nats_peer import NatsPeer
from harness.samples import service_file_text
from syncmesh.schema import ServiceState
from syncmesh_app.edge import EdgeAgent, run_edge
from syncmesh_app.embedded.process import wait_until
from syncmesh_io import nats_connection as natsconn

pytestmark = [pytest.mark.peers, pytest.mark.reliability]


def service_file(services: dict[str, list[tuple[str, int, str]]]) -> str:
    return service_file_text(services)


def edge_config(peer: NatsPeer, path: Path) -> EdgeConfig:
    return msgspec.convert(
        {
            "cluster": "east",
            "nats": {"servers": [peer.url]},
            "source": {"kind": "file", "file": {"path": str(path)}},
            "beat_interval_s": 0.5,
        },
        EdgeConfig,
    )


async def stream_states(peer: NatsPeer) -> dict[tuple[str, str], ServiceState]:
    nc = await natsconn.connect(natsconn.NatsConfig(servers=[peer.url]))
    try:
        found = await read_last_states(nc.jetstream(), "east")
    finally:
        await nc.close()
    return {k: v for k, v in found.items() if v is not None}


def live_view(states: dict[tuple[str, str], ServiceState]) -> dict[str, list[tuple[str, int, str]]]:
    return {
        key[1]: [(i.address, i.port, i.health) for i in s.instances]
        for key, s in sorted(states.items())
        if not s.deleted
    }


def published(agent: EdgeAgent) -> float:
    m = agent.collector_registry
    return sum(
        m.get_sample_value("syncmesh_edge_published_total", {"kind": k}) or 0
        for k in ("service", "tombstone")
    )


async def test_nats_down_20s_while_source_changes(nats_peer: NatsPeer, tmp_path: Path) -> None:
    path = tmp_path / "services.toml"
    start = {
        "a": [("10.0.0.1", 80, "passing")],
        "b": [("10.0.0.2", 80, "passing")],
        "keep": [("10.0.0.3", 80, "passing")],
    }
    path.write_text(service_file(start))
    async with EdgeAgent(edge_config(nats_peer, path)) as agent:
        await agent.wait_synced(30)
        assert live_view(await stream_states(nats_peer)) == start
        before = published(agent)

        await nats_peer.stop_node(0)
        await wait_until(_disconnected(agent), 10, what="agent saw the outage")
        loop = asyncio.get_running_loop()
        outage_end = loop.time() + 20.0
        # While NATS is away: a goes away, c appears, b changes ten times.
        current = dict(start)
        del current["a"]
        current["c"] = [("10.0.0.4", 81, "passing")]
        for n in range(10):
            current["b"] = [
                ("10.0.0.2", 80, "critical" if n % 2 == 0 else "warning"),
                ("10.0.1.2", 9000 + n, "passing"),
            ]
            path.write_text(service_file(current))
            await asyncio.sleep(0.5)
        assert (
            agent.core is not None and agent.core.state.dirty_count == 3
        )  # latest state per key only
        await asyncio.sleep(max(0.0, outage_end - loop.time()))
        await nats_peer.start_node(0)

        await agent.wait_synced(60)
        final = await stream_states(nats_peer)
        assert live_view(final) == current  # exactly the source's state
        assert final[("default", "a")].deleted
        # Coalesced: one message per changed key, not one per change.
        assert published(agent) - before == 3
        assert (agent.collector_registry.get_sample_value("syncmesh_edge_nats_connected") or 0) == 1


def _disconnected(agent: EdgeAgent) -> Any:
    async def check() -> bool:
        return agent.publisher is not None and not agent.publisher.connected.is_set()

    return check


async def test_agent_killed_services_deleted_then_restarted_tombstones_appear(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    path = tmp_path / "services.toml"
    path.write_text(
        service_file({n: [("10.0.0.1", 80 + i, "passing")] for i, n in enumerate(["x", "y", "z"])})
    )
    ready = asyncio.Event()
    task = asyncio.create_task(run_edge(edge_config(nats_peer, path), ready))
    await asyncio.wait_for(ready.wait(), 10)

    async def three_live() -> bool:
        return len(live_view(await stream_states(nats_peer))) == 3

    await wait_until(three_live, 20, what="first agent published")
    first_epoch = (await stream_states(nats_peer))[("default", "x")].epoch
    task.cancel()  # killed: no goodbye, no tombstones on the way out
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert len(live_view(await stream_states(nats_peer))) == 3

    # While no agent runs, x and y are deleted from the source.
    path.write_text(service_file({"z": [("10.0.0.1", 82, "passing")]}))
    async with EdgeAgent(edge_config(nats_peer, path)) as agent:
        await agent.wait_synced(30)
        final = await stream_states(nats_peer)
        assert final[("default", "x")].deleted and final[("default", "y")].deleted
        assert final[("default", "x")].epoch == agent.epoch > first_epoch
        assert live_view(final) == {"z": [("10.0.0.1", 82, "passing")]}
        assert (
            agent.collector_registry.get_sample_value("syncmesh_edge_start_tombstones_total") == 2
        )


async def test_nats_unreachable_at_start(nats_peer: NatsPeer, tmp_path: Path) -> None:
    path = tmp_path / "services.toml"
    path.write_text(service_file({"early": [("10.0.0.9", 90, "passing")]}))
    await nats_peer.stop_node(0)
    async with EdgeAgent(edge_config(nats_peer, path)) as agent:
        # The source is read while NATS is away; nothing is lost, nothing crashes.
        await wait_until(_source_synced(agent), 10, what="source read without NATS")
        await asyncio.sleep(2.0)
        assert not agent.synced
        await nats_peer.start_node(0)
        await agent.wait_synced(60)
        assert live_view(await stream_states(nats_peer)) == {"early": [("10.0.0.9", 90, "passing")]}


def _source_synced(agent: EdgeAgent) -> Any:
    async def check() -> bool:
        return agent.core is not None and agent.core.source_synced

    return check


async def test_frozen_nats_while_the_file_churns_converges(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    """Regression (issue 10 #8): nats-server SIGSTOP'd while services come and go every 0.1 s."""
    path = tmp_path / "services.toml"
    rng = random.Random(8)
    names = [f"s{i}" for i in range(8)]

    def churn() -> dict[str, list[tuple[str, int, str]]]:
        chosen = rng.sample(names, rng.randint(0, len(names)))
        return {
            n: [("10.0.0.1", rng.randint(1, 3), rng.choice(["passing", "critical"]))]
            for n in sorted(chosen)
        }

    current = churn()
    path.write_text(service_file(current))
    async with EdgeAgent(edge_config(nats_peer, path)) as agent:
        await agent.wait_synced(30)
        node = nats_peer.nodes[0]
        node.process.signal_group(signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            thaw = loop.time() + 7.0
            while loop.time() < thaw:
                current = churn()
                path.write_text(service_file(current))
                await asyncio.sleep(0.1)
        finally:
            node.process.signal_group(signal.SIGCONT)
        # A few more changes right after the thaw, while timed-out publishes are retried.
        for _ in range(10):
            current = churn()
            path.write_text(service_file(current))
            await asyncio.sleep(0.1)

        async def converged() -> bool:
            return agent.synced and live_view(await stream_states(nats_peer)) == current

        await wait_until(converged, 90, interval=0.5, what="stream converged to the file")
        crashes = agent.collector_registry.get_sample_value(
            "syncmesh_edge_task_crashes_total", {"task": "nats"}
        )
        assert not crashes  # the NATS task never crashed


async def test_a_crashed_nats_task_is_counted_restarted_and_converges(
    nats_peer: NatsPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "services.toml"
    path.write_text(service_file({"a": [("10.0.0.1", 80, "passing")]}))
    async with EdgeAgent(edge_config(nats_peer, path)) as agent:
        await agent.wait_synced(30)
        assert agent.core is not None
        epoch = agent.epoch
        state = agent.core.state
        original = state.take
        crashes = 0

        def take_then_crash(limit: int) -> Any:
            # Keys are taken (in flight), then an unexpected error ends the NATS task.
            nonlocal crashes
            taken = original(limit)
            if taken and not crashes:
                crashes += 1
                raise RuntimeError("boom")
            return taken

        monkeypatch.setattr(state, "take", take_then_crash)
        current = {"a": [("10.0.0.1", 81, "passing")], "b": [("10.0.0.2", 80, "passing")]}
        path.write_text(service_file(current))

        async def converged() -> bool:
            return agent.synced and live_view(await stream_states(nats_peer)) == current

        await wait_until(converged, 30, interval=0.2, what="converged after the crash")
        registry = agent.collector_registry
        assert registry.get_sample_value("syncmesh_edge_task_crashes_total", {"task": "nats"}) == 1
        assert agent.epoch == epoch  # a restarted task keeps the run's claim
