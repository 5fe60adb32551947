"""Anti-entropy on a real nats-server: the registry's view is made to differ from the
agent's behind both their backs, and heals by itself.

- A forged state of one service, with the agent's own epoch and a revision far
  ahead of the agent's, published without the agent: a running replica accepts it,
  the digests differ, the replica asks for a resync, the agent outbids the forged
  revision and republishes.
- One service's message deleted from the stream, then a replica cold-starts: it
  lacks that service, the digests differ, a resync brings it back.

Heal times are printed (``-s``) and appended to ``$SYNCMESH_FIGURES`` if set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edge_sync.config import EdgeConfig
from edge_sync.io.remote_state import read_stored_states
from global_registry.config import AntiEntropyConfig, ProbeConfig
from harness.nats_peer import NatsPeer
from harness.samples import one_instance_file
from syncmesh import subjects
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import Instance, encode
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.embedded.process import wait_until
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig
from syncmesh_io import nats_connection as natsconn

pytestmark = [pytest.mark.peers, pytest.mark.reliability]

BEAT_S = 1.0
GRACE_S = 3.0
SERVICES = {"web": "10.0.0.1", "api": "10.0.0.2", "db": "10.0.0.3"}


def edge_config(peer: NatsPeer, path: Path) -> EdgeConfig:
    return msgspec.convert(
        {
            "cluster": "east",
            "nats": {"servers": [peer.url]},
            "source": {"kind": "file", "file": {"path": str(path)}},
            "gateways": [{"address": "127.0.0.2", "port": 443}],
            "beat_interval_s": BEAT_S,
            "metrics_port": 0,
        },
        EdgeConfig,
    )


def registry_config(peer: NatsPeer, replica: str) -> RegistryConfig:
    config = RegistryConfig(
        nats=NatsConfig(servers=[peer.url]),
        admin_port=0,
        replica=replica,
        probe=ProbeConfig(enabled=False),
        anti_entropy=AntiEntropyConfig(grace_s=GRACE_S, min_interval_s=5.0),
    )
    config.dns.enabled = False
    return config


@contextlib.asynccontextmanager
async def stream(peer: NatsPeer) -> AsyncIterator[Any]:
    nc = await natsconn.connect(NatsConfig(servers=[peer.url]))
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


def address_of(app: RegistryApp, service: str) -> str | None:
    rec = app.view.clusters.get("east")
    entry = rec.services.get(("default", service)) if rec is not None else None
    return None if entry is None else entry.state.instances[0].address


def in_sync(app: RegistryApp) -> bool | None:
    sync = app._resync.core.status("east")
    return None if sync is None else sync.in_sync


def resyncs_sent(app: RegistryApp) -> float:
    value = app.collector_registry.get_sample_value(
        "syncmesh_registry_resync_requests_total", {"cluster": "east"}
    )
    return value or 0.0


def record_figure(name: str, value: float) -> None:
    line = f"{name}={value:.2f}"
    print(line)
    target = os.environ.get("SYNCMESH_FIGURES")
    if target:
        with open(target, "a") as fh:
            fh.write(line + "\n")


async def test_a_forged_state_accepted_by_a_running_replica_heals_by_itself(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    path = tmp_path / "services.toml"
    path.write_text(one_instance_file(SERVICES))
    async with (
        EdgeAgent(edge_config(nats_peer, path)) as agent,
        RegistryApp(registry_config(nats_peer, "r1")) as app,
        stream(nats_peer) as js,
    ):
        await agent.wait_synced(30)
        await asyncio.wait_for(app.wait_ready(), 30)

        async def agreed() -> bool:
            return in_sync(app) is True and address_of(app, "web") == "10.0.0.1"

        await wait_until(agreed, 15, interval=0.05, what="registry in sync with the agent")
        assert resyncs_sent(app) == 0

        states = await read_stored_states(js, "east")
        web = states[("default", "web")].state
        assert web is not None and web.epoch == agent.epoch
        forged = msgspec.structs.replace(
            web,
            revision=web.revision + 1_000_000,  # far ahead of anything the agent will send
            instances=[Instance(id="evil", address="10.6.6.6", port=80)],
        )
        # Straight into the stream, without the agent and without its fence headers.
        await js.publish(subjects.service_subject("east", "default", "web"), encode(forged))
        loop = asyncio.get_running_loop()
        forged_at = loop.time()

        async def forged_accepted() -> bool:
            return address_of(app, "web") == "10.6.6.6"

        await wait_until(forged_accepted, 5, interval=0.01, what="the replica took the forgery")

        async def healed() -> bool:
            return address_of(app, "web") == "10.0.0.1" and in_sync(app) is True

        await wait_until(healed, 30, interval=0.05, what="the view heals")
        heal_s = loop.time() - forged_at
        record_figure("anti_entropy_heal_forged_s", heal_s)
        # Bound: a beat to see it, the grace, a beat to act, the republish.
        assert heal_s <= BEAT_S + GRACE_S + BEAT_S + 3.0
        assert resyncs_sent(app) >= 1
        done = agent.collector_registry.get_sample_value(
            "syncmesh_edge_resync_requests_total", {"outcome": "done"}
        )
        assert done is not None and done >= 1
        after = await read_stored_states(js, "east")
        fixed = after[("default", "web")].state
        assert fixed is not None and fixed.revision > forged.revision  # outbid, then republished
        assert fixed.instances[0].address == "10.0.0.1"


async def test_a_message_deleted_behind_a_cold_replica_comes_back(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    path = tmp_path / "services.toml"
    path.write_text(one_instance_file(SERVICES))
    async with EdgeAgent(edge_config(nats_peer, path)) as agent, stream(nats_peer) as js:
        await agent.wait_synced(30)
        states = await read_stored_states(js, "east")
        await js.delete_msg(subjects.STREAM, states[("default", "api")].seq)
        assert ("default", "api") not in await read_stored_states(js, "east")

        loop = asyncio.get_running_loop()
        async with RegistryApp(registry_config(nats_peer, "cold")) as app:
            await asyncio.wait_for(app.wait_ready(), 30)
            ready_at = loop.time()
            assert address_of(app, "api") is None  # the cold replica never saw it

            async def healed() -> bool:
                return address_of(app, "api") == "10.0.0.2" and in_sync(app) is True

            await wait_until(healed, 30, interval=0.05, what="the view heals")
            heal_s = loop.time() - ready_at
            record_figure("anti_entropy_heal_deleted_s", heal_s)
            assert heal_s <= BEAT_S + GRACE_S + BEAT_S + 3.0
            assert resyncs_sent(app) >= 1
            status = app.status_report().clusters[0]
            assert status.in_sync is True and status.resync_requests >= 1
            assert agent.core is not None and status.leader == agent.core.agent
        assert ("default", "api") in await read_stored_states(js, "east")
