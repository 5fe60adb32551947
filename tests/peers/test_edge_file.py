"""The edge agent with the service-file source against a real nats-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from edge_sync.config import EdgeConfig
from edge_sync.io.remote_state import read_last_states
from harness.nats_peer import NatsPeer, nats_server
from syncmesh import subjects
from syncmesh.schema import ServiceState, decode_cluster_beat
from syncmesh_app.edge import EdgeAgent, run_edge
from syncmesh_app.embedded.process import wait_until
from syncmesh_io import nats_connection as natsconn

pytestmark = pytest.mark.peers

ORDERS = """
[[services]]
name = "orders"
[[services.instances]]
address = "10.0.0.1"
port = 8080
[[services]]
name = "com.foo.Bar"
namespace = "payments"
[[services.instances]]
id = "bar-1"
address = "10.0.0.2"
port = 9090
"""


def edge_config(peer: NatsPeer, path: Path, **extra: Any) -> EdgeConfig:
    nats: dict[str, Any] = {"servers": [peer.url]}
    if peer.user:
        nats.update(user=peer.user, password=peer.password)
    data: dict[str, Any] = {
        "cluster": "east",
        "nats": nats,
        "source": {"kind": "file", "file": {"path": str(path)}},
        "beat_interval_s": 0.5,
        **extra,
    }
    return msgspec.convert(data, EdgeConfig)


@pytest.fixture
async def reader(nats_peer: NatsPeer) -> AsyncIterator[Any]:
    nc = await natsconn.connect(natsconn.NatsConfig(servers=[nats_peer.url]))
    try:
        yield nc
    finally:
        await nc.close()


async def states(nc: Any, cluster: str = "east") -> dict[tuple[str, str], ServiceState]:
    found = await read_last_states(nc.jetstream(), cluster)
    return {k: v for k, v in found.items() if v is not None}


async def test_publishes_reloads_and_tombstones(
    nats_peer: NatsPeer, reader: Any, tmp_path: Path
) -> None:
    path = tmp_path / "services.toml"
    path.write_text(ORDERS)
    async with EdgeAgent(edge_config(nats_peer, path)) as agent:
        await agent.wait_synced(30)
        got = await states(reader)
        assert set(got) == {("default", "orders"), ("payments", "com-foo-bar-cbd95f")}
        bar = got[("payments", "com-foo-bar-cbd95f")]
        assert bar.source_name == "com.foo.Bar" and bar.instances[0].id == "bar-1"
        assert bar.epoch == agent.epoch and bar.source == "file"

        # Edit: orders goes critical, com.foo.Bar disappears.
        path.write_text(
            ORDERS.split('[[services]]\nname = "com.foo.Bar"')[0].replace(
                "port = 8080", 'port = 8080\nhealth = "critical"'
            )
        )

        async def reloaded() -> bool:
            got = await states(reader)
            return got[("payments", "com-foo-bar-cbd95f")].deleted and (
                got[("default", "orders")].instances[0].health == "critical"
            )

        await wait_until(reloaded, 10, what="file reload published")
        final = await states(reader)
        assert final[("payments", "com-foo-bar-cbd95f")].instances == []
        revisions = [s.revision for s in final.values()]
        assert len(set(revisions)) == len(revisions)  # one counter, one revision per message


async def test_bad_file_keeps_last_good_state_and_is_counted(
    nats_peer: NatsPeer, reader: Any, tmp_path: Path
) -> None:
    path = tmp_path / "services.toml"
    path.write_text(ORDERS)
    async with EdgeAgent(edge_config(nats_peer, path)) as agent:
        await agent.wait_synced(30)
        before = await states(reader)
        path.write_text("[[services]]\nname = 'x'\ncolour = 'red'\n")

        async def rejected() -> bool:
            return (
                agent.collector_registry.get_sample_value(
                    "syncmesh_edge_invalid_input_total", {"reason": "file_schema"}
                )
                or 0
            ) >= 1

        await wait_until(rejected, 10, what="bad file counted")
        await asyncio.sleep(0.5)
        assert await states(reader) == before  # nothing changed on NATS
        assert agent.core is not None and agent.core.source_health == "degraded"
        assert "colour" in agent.core.source_error_text
        # Fixed again: healthy, and still the same content (no republish needed).
        path.write_text(ORDERS)
        await wait_until(lambda: _ok(agent), 10, what="source ok again")
        assert await states(reader) == before


async def _ok(agent: EdgeAgent) -> bool:
    return agent.core is not None and agent.core.source_health == "ok"


async def test_beats_resync_and_metrics_endpoint(
    nats_peer: NatsPeer, reader: Any, tmp_path: Path
) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(
        "services:\n  - name: web\n    instances:\n      - {address: 10.0.0.7, port: 80}\n"
    )
    cfg = edge_config(
        nats_peer,
        path,
        gateways=[{"address": "127.0.0.1", "port": 8443}],
        locality={"region": "eu", "zone": "eu-1"},
        client_cidrs=["10.0.0.0/16"],
        metrics_port=-1,
    )
    async with EdgeAgent(cfg) as agent:
        await agent.wait_synced(30)
        js = reader.jetstream()

        async def beat_with_digest() -> bool:
            msg = await js.get_last_msg(subjects.STREAM, subjects.cluster_subject("east"))
            beat = decode_cluster_beat(msg.data)
            return beat.services == 1 and beat.digest != ""

        await wait_until(beat_with_digest, 10, what="beat")
        beat = decode_cluster_beat(
            (await js.get_last_msg(subjects.STREAM, subjects.cluster_subject("east"))).data
        )
        assert beat.gateways[0].port == 8443 and beat.locality.zone == "eu-1"
        assert (
            beat.client_cidrs == ["10.0.0.0/16"]
            and beat.source_kind == "file"
            and beat.source_health == "ok"
        )
        assert beat.epoch == agent.epoch

        before = (await states(reader))[("default", "web")].revision
        reply = await reader.request(
            subjects.resync_subject("east"),
            json.dumps({"schema": 1, "reason": "test"}).encode(),
            timeout=5,
        )
        assert json.loads(reply.data) == {"ok": True}

        async def republished() -> bool:
            return (await states(reader))[("default", "web")].revision > before

        await wait_until(republished, 10, what="resync republish")
        # A malformed request is counted and changes nothing.
        await reader.publish(subjects.resync_subject("east"), b"{not json")
        await reader.flush()

        async def counted() -> bool:
            return (
                agent.collector_registry.get_sample_value(
                    "syncmesh_edge_invalid_input_total", {"reason": "resync_malformed"}
                )
                or 0
            ) == 1

        await wait_until(counted, 5, what="malformed resync counted")

        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{agent.metrics_port}/metrics") as resp,
        ):
            text = await resp.text()
        assert resp.status == 200
        assert 'syncmesh_edge_published_total{kind="service"}' in text
        assert "syncmesh_edge_services 1.0" in text


async def test_run_edge_with_nats_auth_until_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "services.toml"
    path.write_text(ORDERS)
    async with nats_server(users={"edge": "s3cret"}, workdir=tmp_path / "nats") as peer:
        ready = asyncio.Event()
        task = asyncio.create_task(run_edge(edge_config(peer, path), ready))
        await asyncio.wait_for(ready.wait(), 10)
        nc = await natsconn.connect(
            natsconn.NatsConfig(servers=[peer.url], user="edge", password="s3cret")
        )
        try:
            await wait_until(lambda: _count(nc, 2), 20, what="published with user/password auth")
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await nc.close()


async def _count(nc: Any, n: int) -> bool:
    return len(await states(nc)) == n


@pytest.mark.security
async def test_spoofed_or_malformed_input_is_counted_and_harmless(
    nats_peer: NatsPeer, reader: Any, tmp_path: Path
) -> None:
    # Garbage under this cluster's subject before the agent starts: at start-up it
    # is counted, and tombstoned because the source has no such service.
    js = reader.jetstream()
    await natsconn.ensure_stream(js)
    await js.publish("syncmesh.v2.svc.east.default.ghost", b'{"schema": 1, "cluster": "EAST!"}')
    path = tmp_path / "services.toml"
    path.write_text(ORDERS)
    async with EdgeAgent(edge_config(nats_peer, path)) as agent:
        await agent.wait_synced(30)
        ghost = (await states(reader))[("default", "ghost")]
        assert ghost.deleted and ghost.epoch == agent.epoch
        invalid = agent.collector_registry.get_sample_value
        assert invalid("syncmesh_edge_invalid_input_total", {"reason": "stream_malformed"}) == 1

        before = {k: v.revision for k, v in (await states(reader)).items()}
        await reader.publish(subjects.resync_subject("east"), b"x" * (70 * 1024))
        await reader.publish(subjects.resync_subject("east"), b'{"schema": "one"}')
        await reader.flush()

        async def both_counted() -> bool:
            return (
                invalid("syncmesh_edge_invalid_input_total", {"reason": "resync_oversized"}) == 1
                and invalid("syncmesh_edge_invalid_input_total", {"reason": "resync_malformed"})
                == 1
            )

        await wait_until(both_counted, 5, what="bad resync requests counted")
        await asyncio.sleep(0.5)
        assert {
            k: v.revision for k, v in (await states(reader)).items()
        } == before  # nothing republished
        assert invalid("syncmesh_edge_resync_requests_total", {"outcome": "done"}) is None


async def test_tombstones_expire_from_the_stream(
    nats_peer: NatsPeer, reader: Any, tmp_path: Path
) -> None:
    # A stream made before per-message TTLs and direct gets: the agent still claims and
    # publishes, and upgrades the stream when a TTL is refused (where it may).
    from nats.js.api import StreamConfig

    js = reader.jetstream()
    await js.add_stream(
        StreamConfig(
            name=subjects.STREAM, subjects=subjects.STREAM_SUBJECTS, max_msgs_per_subject=1
        )
    )
    path = tmp_path / "services.toml"
    path.write_text(ORDERS)
    async with EdgeAgent(edge_config(nats_peer, path, tombstone_ttl_s=2)) as agent:
        await agent.wait_synced(30)
        path.write_text(ORDERS.split('[[services]]\nname = "com.foo.Bar"')[0])
        bar = subjects.service_subject("east", "payments", "com-foo-bar-cbd95f")

        async def tombstoned() -> bool:
            return (await states(reader))[("payments", "com-foo-bar-cbd95f")].deleted

        await wait_until(tombstoned, 10, what="tombstone published")
        # The old stream refused the first tombstone's TTL; the agent (allowed to here)
        # upgraded it and published again.
        assert (await js.stream_info(subjects.STREAM)).config.allow_msg_ttl
        msg = await js.get_last_msg(subjects.STREAM, bar)
        assert msg.headers is not None and msg.headers.get("Nats-TTL") == "2"
        live = await js.get_last_msg(
            subjects.STREAM, subjects.service_subject("east", "default", "orders")
        )
        assert "Nats-TTL" not in (live.headers or {})  # live states never expire

        async def expired() -> bool:
            return ("payments", "com-foo-bar-cbd95f") not in await states(reader)

        await wait_until(expired, 10, what="tombstone expired")
        assert ("default", "orders") in await states(reader)


async def test_a_state_the_registry_would_reject_is_counted_not_published(
    nats_peer: NatsPeer, reader: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "services.toml"
    big = "".join(
        f'[[services.instances]]\naddress = "10.0.1.{i}"\nport = 80\n' for i in range(1, 4)
    )
    path.write_text(ORDERS + '[[services]]\nname = "big"\n' + big)
    config = edge_config(nats_peer, path, limits={"max_instances_per_service": 2})
    async with EdgeAgent(config) as agent:
        await agent.wait_synced(30)  # everything else is out; "big" is settled, not pending
        got = await states(reader)
        assert ("default", "big") not in got and ("default", "orders") in got
        count = agent.collector_registry.get_sample_value(
            "syncmesh_edge_unpublishable_total", {"reason": "too-many-instances"}
        )
        assert count == 1
        assert sum("too-many-instances" in r.getMessage() for r in caplog.records) == 1
