"""The epoch claim on a real nats-server: takeover, deposition of a frozen agent, lost claims."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edge_sync.config import EdgeConfig
from edge_sync.core.epoch_claim import EXPECTED_LAST_SUBJECT_SEQ
from edge_sync.io.epoch import read_last_claim
from edge_sync.io.remote_state import read_last_states
from harness.nats_peer import NatsPeer
from harness.samples import one_instance_file
from syncmesh import subjects
from syncmesh.schema import SCHEMA_VERSION, EpochClaim, ServiceState, decode_cluster_beat, encode
from syncmesh_app.edge import AgentDeposed, EdgeAgent, run_edge
from syncmesh_app.embedded.process import ManagedProcess, wait_until
from syncmesh_io import nats_connection as natsconn

pytestmark = [pytest.mark.peers, pytest.mark.reliability]

REPO = Path(__file__).resolve().parents[2]


def edge_config(peer: NatsPeer, path: Path) -> EdgeConfig:
    return msgspec.convert(
        {
            "cluster": "east",
            "nats": {"servers": [peer.url]},
            "source": {"kind": "file", "file": {"path": str(path)}},
            "beat_interval_s": 0.3,
            "metrics_port": 0,
        },
        EdgeConfig,
    )


@contextlib.asynccontextmanager
async def reader(peer: NatsPeer) -> Any:
    nc = await natsconn.connect(natsconn.NatsConfig(servers=[peer.url]))
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def live_states(js: Any) -> dict[str, ServiceState]:
    found = await read_last_states(js, "east")
    return {k[1]: v for k, v in found.items() if v is not None}


async def test_frozen_agent_resumed_after_a_takeover_publishes_nothing_and_exits(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    """A real SIGSTOP of an agent process; a second agent claims while it is frozen."""
    file_a, file_b = tmp_path / "a.toml", tmp_path / "b.toml"
    file_a.write_text(one_instance_file({"old": "10.0.0.1", "shared": "10.0.0.2"}))
    config_a = tmp_path / "edge-a.toml"
    config_a.write_text(
        f'cluster = "east"\nbeat_interval_s = 0.3\nmetrics_port = 0\n'
        f'[nats]\nservers = ["{nats_peer.url}"]\n'
        f'[source]\nkind = "file"\n[source.file]\npath = "{file_a}"\n'
    )
    first = ManagedProcess(
        "edge-a",
        [sys.executable, "-m", "syncmesh_app", "--log-level", "INFO", "edge"]
        + ["--config", str(config_a)],
        tmp_path / "edge-a.log",
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    first.start()
    try:
        async with reader(nats_peer) as js:

            async def first_published() -> bool:
                if not first.alive():
                    raise first.fail("agent exited")
                return set(await live_states(js)) == {"old", "shared"}

            await wait_until(first_published, 30, what="first agent published")
            epoch_a = (await read_last_claim(js, "east")).seq
            assert epoch_a > 0
            assert {s.epoch for s in (await live_states(js)).values()} == {epoch_a}

            first.signal_group(signal.SIGSTOP)
            file_b.write_text(one_instance_file({"shared": "10.9.0.2", "new": "10.9.0.3"}))
            async with EdgeAgent(edge_config(nats_peer, file_b)) as second:
                await second.wait_synced(30)
                epoch_b = second.epoch
                assert epoch_b > epoch_a
                # The frozen agent's source changes as well: it has news when it wakes up.
                file_a.write_text(one_instance_file({"old": "10.0.0.9", "late": "10.0.0.8"}))
                first.signal_group(signal.SIGCONT)

                async def first_exited() -> bool:
                    return not first.alive()

                await wait_until(first_exited, 30, what="deposed agent exits")
                assert first.proc is not None and first.proc.returncode == 3  # EXIT_DEPOSED
                assert "deposed" in first.log_tail(400)

                await asyncio.sleep(1.0)  # several beats of the new owner
                states = await live_states(js)
                # Not one write of the old agent after the takeover reached the stream.
                assert "late" not in states
                assert {s.epoch for s in states.values()} == {epoch_b}
                assert states["old"].deleted  # tombstoned by the new owner's reconciliation
                assert states["shared"].instances[0].address == "10.9.0.2"
                beat = await js.get_last_msg(
                    subjects.STREAM, subjects.cluster_subject("east"), direct=True
                )
                assert decode_cluster_beat(beat.data).epoch == epoch_b
                assert (await read_last_claim(js, "east")).seq == epoch_b
                assert second.deposed is None
    finally:
        first.signal_group(signal.SIGCONT)
        await first.stop()


async def test_agent_stops_when_it_learns_of_a_newer_claim(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(one_instance_file({"web": "10.0.0.1"}))
    ready = asyncio.Event()
    config = edge_config(nats_peer, path)
    task = asyncio.create_task(run_edge(config, ready))
    await asyncio.wait_for(ready.wait(), 10)
    async with reader(nats_peer) as js:

        async def published() -> bool:
            return "web" in await live_states(js)

        await wait_until(published, 20, what="published")
        last = await read_last_claim(js, "east")
        # Another agent's claim, made the way agents make it.
        usurper = EpochClaim(
            schema=SCHEMA_VERSION, cluster="east", agent="elsewhere:1", previous=last.seq
        )
        ack = await js.publish(
            subjects.epoch_subject("east"),
            encode(usurper),
            headers={EXPECTED_LAST_SUBJECT_SEQ: str(last.seq)},
        )
        with pytest.raises(AgentDeposed):
            await asyncio.wait_for(task, 10)  # an idle agent learns it from its next beat
        beat = await js.get_last_msg(subjects.STREAM, subjects.cluster_subject("east"), direct=True)
        assert beat.seq < ack.seq  # nothing of the old owner after the new claim


async def test_deposition_is_counted_and_stops_the_agent(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(one_instance_file({"web": "10.0.0.1"}))
    async with EdgeAgent(edge_config(nats_peer, path)) as first:
        await first.wait_synced(30)
        async with EdgeAgent(edge_config(nats_peer, path)) as second:
            await second.wait_synced(30)
            await asyncio.wait_for(first.stopped.wait(), 10)
            assert first.deposed is not None
            assert first.collector_registry.get_sample_value("syncmesh_edge_deposed_total") == 1
            assert second.epoch > first.epoch
            assert not second.stopped.is_set()


async def test_a_claim_lost_with_the_stream_history_is_claimed_again(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(one_instance_file({"web": "10.0.0.1", "api": "10.0.0.2"}))
    async with EdgeAgent(edge_config(nats_peer, path)) as agent, reader(nats_peer) as js:
        await agent.wait_synced(30)
        old = agent.epoch
        # The claim disappears (a purged subject); no one else claimed.
        await js.delete_msg(subjects.STREAM, old)

        async def reclaimed() -> bool:
            return agent.epoch > old and agent.synced

        await wait_until(reclaimed, 20, what="claimed again")
        states = await live_states(js)
        assert {s.epoch for s in states.values()} == {agent.epoch}  # everything republished
        assert (await read_last_claim(js, "east")).seq == agent.epoch
        assert agent.deposed is None


async def test_a_lost_stream_is_recreated_claimed_again_and_refilled(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(one_instance_file({"web": "10.0.0.1", "api": "10.0.0.2"}))
    async with EdgeAgent(edge_config(nats_peer, path)) as agent, reader(nats_peer) as js:
        await agent.wait_synced(30)
        old = agent.epoch
        await js.delete_stream(subjects.STREAM)  # a NATS that lost its store

        async def refilled() -> bool:
            states = await live_states(js)
            claim = await read_last_claim(js, "east")
            return (
                set(states) == {"web", "api"}
                and claim.seq == agent.epoch
                and {s.epoch for s in states.values()} == {agent.epoch}
            )

        await wait_until(refilled, 30, interval=0.2, what="stream recreated and refilled")
        # Claimed again in the new history (its sequences start over, so the epoch may
        # even repeat; the revisions keep growing).
        assert agent.collector_registry.get_sample_value("syncmesh_edge_epoch_claims_total") == 2
        assert agent.deposed is None and old > 0
