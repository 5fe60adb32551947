"""The agent on a 3-node NATS cluster with an R3 stream, as in production: fenced
publishes of one agent check the same claim subject, which a clustered stream
lets only one message at a time do. Found by the soak (every batch failed and
backed off up to 5 s); a regression test that a busy fence is waited out, not
turned into failed batches and backoff."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from edge_sync.config import EdgeConfig, FileSourceConfig, SourceConfig
from edge_sync.io.remote_state import read_last_states
from harness.nats_peer import NatsPeer
from syncmesh.nats_config import NatsConfig
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.embedded.process import wait_until
from syncmesh_io.nats_connection import ensure_stream

pytestmark = [pytest.mark.peers, pytest.mark.reliability]


def _services(count: int, port: int) -> str:
    return "".join(
        f'[[services]]\nname = "svc{i}"\n[[services.instances]]\naddress = "10.0.{i // 250}.{i % 250 + 1}"\nport = {port}\n'
        for i in range(count)
    )


async def test_an_agent_publishes_a_burst_to_an_r3_stream_without_failed_batches(
    nats_cluster: NatsPeer, tmp_path: Path
) -> None:
    admin = await nats.connect(nats_cluster.urls)
    try:
        js = admin.jetstream()
        await ensure_stream(js, replicas=3)
        path = tmp_path / "services.toml"
        path.write_text(_services(300, 80))
        config = EdgeConfig(
            cluster="east",
            metrics_port=0,
            nats=NatsConfig(servers=nats_cluster.urls, replicas=3),
            source=SourceConfig(kind="file", file=FileSourceConfig(path=str(path))),
        )
        async with EdgeAgent(config) as agent:
            await agent.wait_synced(120)
            for round_ in range(5):  # bursts of changes to every service
                path.write_text(_services(300, 81 + round_))

            async def converged() -> bool:
                states = await read_last_states(js, "east", idle_timeout_s=1.0)
                ports = {s.instances[0].port for s in states.values() if s and s.instances}
                return len(states) == 300 and ports == {85}

            await wait_until(converged, 120, interval=0.5, what="every service at port 85")
            failed = agent.collector_registry.get_sample_value(
                "syncmesh_edge_publish_errors_total", {"reason": "api_error"}
            )
            assert not failed, f"{failed} batches failed on a busy fence"
    finally:
        await admin.close()
