"""The nats-server used by every test is real: JetStream keeps the last state per
subject, and a 3-node cluster keeps serving an R3 stream with one node down."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.errors import NoRespondersError
from nats.js.api import StreamConfig
from nats.js.errors import NoStreamResponseError

from harness.nats_peer import NatsPeer
from syncmesh import subjects
from syncmesh.nats_config import NatsConfig
from syncmesh_app.embedded.process import wait_until
from syncmesh_io.nats_connection import connect, ensure_stream

pytestmark = pytest.mark.peers


async def test_version_is_real_binary(nats_peer: NatsPeer) -> None:
    print(f"\n{nats_peer.version}")
    assert nats_peer.version.startswith("nats-server: v2.15.")


async def test_stream_keeps_last_state_per_subject(nats_peer: NatsPeer) -> None:
    nc = await connect(NatsConfig(servers=[nats_peer.url]))
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        await ensure_stream(js)  # idempotent
        for rev in range(5):
            await js.publish(subjects.service_subject("east", "default", "pay"), f"{rev}".encode())
        await js.publish(subjects.service_subject("east", "default", "cart"), b"only")
        info = await js.stream_info(subjects.STREAM)
        assert info.config.max_msgs_per_subject == 1
        assert info.state.messages == 2
        last = await js.get_last_msg(
            subjects.STREAM, subjects.service_subject("east", "default", "pay")
        )
        assert last.data == b"4"
    finally:
        await nc.close()


async def test_cluster_serves_r3_stream_with_one_node_killed(nats_cluster: NatsPeer) -> None:
    nc = await nats.connect(
        servers=nats_cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    try:
        js = nc.jetstream()
        config = StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3, max_msgs_per_subject=1)

        async def created() -> bool:
            # Creating the same stream again is a no-op, so a timed-out call is retried.
            await js.add_stream(config)
            return True

        await wait_until(created, 60, interval=0.5, what="the R3 stream created")

        # add_stream returns once the meta leader has placed the stream; its own
        # raft group may elect a leader a moment later ("no responders" meanwhile).
        async def writable() -> bool:
            try:
                await js.publish("r3.k0", b"before", timeout=1.0)
            except (NoRespondersError, NoStreamResponseError):
                return False
            return True

        await wait_until(writable, 30, interval=0.2, what="the new R3 stream to take writes")
        for i in range(10):
            await js.publish(f"r3.k{i}", b"before")
        info = await js.stream_info("R3")
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        await nats_cluster.stop_node(0, hard=True)
        # After a leader election, the stream keeps accepting writes and reads.
        published = 0
        for _ in range(100):
            try:
                await js.publish("r3.k0", b"after", timeout=1.0)
                published += 1
                break
            except Exception:  # noqa: BLE001 - election in progress
                await asyncio.sleep(0.2)
        assert published == 1
        msg = await js.get_last_msg("R3", "r3.k0")
        assert msg.data == b"after"
        info = await js.stream_info("R3")
        assert info.state.messages == 10
    finally:
        await nc.close()
