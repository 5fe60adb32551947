"""The digest gap, end to end against a real nats-server (docs/digest.md).

A publish whose acknowledgement is lost (nats-server frozen with SIGSTOP: the
message waits in the server's socket and is stored when it thaws), then content
the registry's validator refuses for the same service (never published): the
stream keeps the landed state, and the agent's beats must count it. Before the
fix the agent left the service out of its digest and the registry asked for
resyncs that could not repair it.
"""

from __future__ import annotations

import signal
from pathlib import Path

import msgspec
import pytest

from edge_sync.config import EdgeConfig
from edge_sync.io.remote_state import read_last_states
from harness.nats_peer import NatsPeer
from harness.samples import service_file_text
from syncmesh import subjects
from syncmesh.digest import service_set_digest
from syncmesh.schema import ClusterBeat, ServiceState, decode_cluster_beat
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.embedded.process import wait_until
from syncmesh_io import nats_connection as natsconn

pytestmark = [pytest.mark.peers, pytest.mark.reliability]

ONE = [("10.0.0.1", 80, "passing")]
LANDED = [("10.0.0.1", 80, "passing"), ("10.0.0.2", 80, "passing")]
# Three instances: above the limit of 2 below, so the validator refuses it.
REFUSED = [("10.0.0.1", 80, "passing"), ("10.0.0.2", 80, "passing"), ("10.0.0.3", 80, "passing")]


Instances = list[tuple[str, int, str]]


def service_file(services: dict[str, list[tuple[str, int, str]]]) -> str:
    return service_file_text(services)


async def stream_states(peer: NatsPeer) -> dict[tuple[str, str], ServiceState]:
    nc = await natsconn.connect(natsconn.NatsConfig(servers=[peer.url]))
    try:
        found = await read_last_states(nc.jetstream(), "east")
    finally:
        await nc.close()
    return {k: v for k, v in found.items() if v is not None}


def live_view(states: dict[tuple[str, str], ServiceState]) -> dict[str, Instances]:
    return {
        key[1]: [(i.address, i.port, i.health) for i in s.instances]
        for key, s in sorted(states.items())
        if not s.deleted
    }


def edge_config(peer: NatsPeer, path: Path) -> EdgeConfig:
    return msgspec.convert(
        {
            "cluster": "east",
            "nats": {"servers": [peer.url]},
            "source": {"kind": "file", "file": {"path": str(path)}},
            "beat_interval_s": 0.5,
            "publish_timeout_s": 1.0,
            "limits": {"max_instances_per_service": 2},
        },
        EdgeConfig,
    )


def counter(agent: EdgeAgent, name: str) -> float:
    """The sum of a counter over all its labels."""
    total = 0.0
    for metric in agent.collector_registry.collect():
        for sample in metric.samples:
            if sample.name == name:
                total += sample.value
    return total


async def last_beat(peer: NatsPeer) -> ClusterBeat:
    nc = await natsconn.connect(natsconn.NatsConfig(servers=[peer.url]))
    try:
        raw = await nc.jetstream().get_last_msg(subjects.STREAM, subjects.cluster_subject("east"))
    finally:
        await nc.close()
    return decode_cluster_beat(raw.data)


async def test_a_landed_state_whose_successor_is_refused_is_in_the_digest(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    path = tmp_path / "services.toml"
    path.write_text(service_file({"a": ONE, "b": ONE}))
    async with EdgeAgent(edge_config(nats_peer, path)) as agent:
        await agent.wait_synced(30)
        assert agent.core is not None
        state = agent.core.state
        node = nats_peer.nodes[0]
        refused = counter(agent, "syncmesh_edge_unpublishable_total")
        key = ("default", "a")

        node.process.signal_group(signal.SIGSTOP)
        try:
            # The new state of a is sent, the server stores it only when it thaws:
            # the agent sees a timeout.
            path.write_text(service_file({"a": LANDED, "b": ONE}))

            async def publish_failed() -> bool:
                # Its publish failed (the key is dirty again, content unknown in the stream).
                entry = state._entries.get(key)
                return (
                    entry is not None
                    and entry.unknown
                    and [i.address for i in entry.instances] == ["10.0.0.1", "10.0.0.2"]
                )

            await wait_until(publish_failed, 60, interval=0.1, what="a publish timed out")
            # Then content the validator refuses: settled unpublishable, never sent.
            path.write_text(service_file({"a": REFUSED, "b": ONE}))

            async def refused_once() -> bool:
                return counter(agent, "syncmesh_edge_unpublishable_total") > refused

            await wait_until(refused_once, 60, interval=0.1, what="the new content was refused")
            # Unknown stream content, nothing to publish over it: a read back is due.
            assert state.unread() == [key]
        finally:
            node.process.signal_group(signal.SIGCONT)

        async def landed() -> bool:
            found = live_view(await stream_states(nats_peer))
            return found.get("a") == LANDED

        await wait_until(landed, 60, interval=0.2, what="the timed-out publish landed")

        async def digests_agree() -> bool:
            stream = await stream_states(nats_peer)
            expected = service_set_digest(
                (k[0], k[1], m.epoch, m.revision) for k, m in stream.items() if not m.deleted
            )
            if state.unread_count or state.service_set_digest() != expected:
                return False
            beat = await last_beat(nats_peer)
            return (beat.services, beat.digest) == expected

        await wait_until(digests_agree, 60, interval=0.2, what="the beat's digest names a")
        assert state.service_set_digest()[0] == 2
        # The refused content stays settled: not published, not retried.
        final = live_view(await stream_states(nats_peer))
        assert final == {"a": LANDED, "b": ONE}
        assert state.dirty_count == 0
