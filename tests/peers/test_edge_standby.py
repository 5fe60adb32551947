"""Standby agents on a real nats-server: agent processes (``python -m syncmesh_app edge``)
of one cluster with a file source and a registry replica reading the stream.

- SIGKILL of the leader: one of two standbys takes over (the other keeps standing
  by), publishes within 10 s, republishes nothing unchanged; the registry's answers
  never change meanwhile.
- SIGSTOP of the leader until a standby took over, then SIGCONT: the old leader's
  writes are refused by the server, it steps down to standby, and the stream ends
  with the successor's state.

The takeover times are printed (``-s``) and appended to ``$SYNCMESH_FIGURES`` if set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge_sync.io.epoch import read_last_claim
from edge_sync.io.remote_state import read_stored_states
from global_registry.config import ProbeConfig
from harness.bound_ports import AGENT_HTTP, port_in_log
from harness.nats_peer import NatsPeer
from harness.samples import one_instance_file
from syncmesh import subjects
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import ClusterBeat, decode_cluster_beat
from syncmesh_app.embedded.process import ManagedProcess, wait_until
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig
from syncmesh_io import nats_connection as natsconn

pytestmark = [pytest.mark.peers, pytest.mark.reliability]

REPO = Path(__file__).resolve().parents[2]
BEAT_S = 2.0  # the default beat interval: the lease is 2.5 x 2 s
SERVICES = {"web": "10.0.0.1", "api": "10.0.0.2", "db": "10.0.0.3"}


class Agent:
    def __init__(self, tmp: Path, name: str, nats_url: str, services: Path) -> None:
        self.name = name
        self.log = tmp / f"edge-{name}.log"
        config = tmp / f"edge-{name}.toml"
        # metrics_port -1: the agent binds an ephemeral port and logs it (``port``).
        config.write_text(
            f'cluster = "east"\nbeat_interval_s = {BEAT_S}\nmetrics_port = -1\n'
            f'[nats]\nservers = ["{nats_url}"]\n'
            '[[gateways]]\naddress = "127.0.0.2"\nport = 443\n'
            f'[source]\nkind = "file"\n[source.file]\npath = "{services}"\n'
            "[ha]\nstandby = true\n"
        )
        self.proc = ManagedProcess(
            f"edge-{name}",
            [sys.executable, "-m", "syncmesh_app", "--log-level", "INFO", "edge"]
            + ["--config", str(config)],
            self.log,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    @property
    def port(self) -> int:
        """The agent's health port as its log names it (the latest start's)."""
        port = port_in_log(self.log, AGENT_HTTP)
        if port is None:
            raise RuntimeError(f"edge-{self.name} has not logged its port yet")
        return port

    @property
    def agent_id(self) -> str:
        import socket

        assert self.proc.proc is not None
        return f"{socket.gethostname()}:{self.proc.proc.pid}"

    async def readyz(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}/readyz") as resp,
        ):
            return dict(await resp.json())


@contextlib.asynccontextmanager
async def agents(tmp: Path, peer: NatsPeer, names: list[str]) -> AsyncIterator[list[Agent]]:
    services = tmp / "services.toml"
    if not services.exists():
        services.write_text(one_instance_file(SERVICES))
    started = [Agent(tmp, n, peer.url, services) for n in names]
    try:
        yield started
    finally:
        for agent in started:
            agent.proc.signal_group(signal.SIGCONT)
            await agent.proc.stop()


@contextlib.asynccontextmanager
async def registry(peer: NatsPeer) -> AsyncIterator[RegistryApp]:
    config = RegistryConfig(
        nats=NatsConfig(servers=[peer.url]),
        admin_port=0,
        replica="r1",
        probe=ProbeConfig(enabled=False),
    )
    config.dns.enabled = False
    async with RegistryApp(config) as app:
        await asyncio.wait_for(app.wait_ready(), 30)
        yield app


@contextlib.asynccontextmanager
async def stream(peer: NatsPeer) -> AsyncIterator[Any]:
    nc = await natsconn.connect(NatsConfig(servers=[peer.url]))
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def last_beat(js: Any) -> ClusterBeat | None:
    try:
        raw = await js.get_last_msg(subjects.STREAM, subjects.cluster_subject("east"), direct=True)
    except Exception:
        return None
    return decode_cluster_beat(raw.data)


async def answers(http: aiohttp.ClientSession, app: RegistryApp) -> tuple[object, ...]:
    """What clients see of cluster east through the registry's HTTP API: the ranked
    candidates of every service (addresses and staleness, which DNS TXT shows) and
    the inventory's services with their instances."""
    base = f"http://127.0.0.1:{app.admin_port}"
    ranked = []
    for name in sorted(SERVICES):
        async with http.get(f"{base}/v1/resolve", params={"service": name}) as resp:
            reply = await resp.json()
        ranked.append(
            tuple(
                (c["cluster"], tuple(g["address"] for g in c["gateways"]), c.get("stale", False))
                for c in reply.get("clusters", [])
            )
        )
    async with http.get(f"{base}/v1/inventory", params={"cluster": "east"}) as resp:
        inv = await resp.json()
    services = tuple(
        (s["service"], json.dumps(s["instances"], sort_keys=True)) for s in inv["services"]
    )
    stale = tuple(c["stale"] for c in inv["clusters"])
    return tuple(ranked), services, stale


class Sampler:
    """Samples the registry's answers over HTTP back to back; differences from the first
    sample are kept."""

    def __init__(
        self, http: aiohttp.ClientSession, app: RegistryApp, baseline: tuple[object, ...]
    ) -> None:
        self.http = http
        self.app = app
        self.baseline = baseline
        self.samples = 0
        self.differences: list[tuple[object, ...]] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            now = await answers(self.http, self.app)
            self.samples += 1
            if now != self.baseline:
                self.differences.append(now)
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def record_figure(name: str, value: float) -> None:
    line = f"{name}={value:.2f}"
    print(line)
    target = os.environ.get("SYNCMESH_FIGURES")
    if target:
        with open(target, "a") as fh:
            fh.write(line + "\n")


async def wait_leading(js: Any, agent: Agent, standbys: int, what: str) -> int:
    """Until ``agent`` leads with ``standbys`` standbys in its beat; returns its epoch."""

    async def leading() -> bool:
        if not agent.proc.alive():
            raise agent.proc.fail("agent exited")
        beat = await last_beat(js)
        claim = await read_last_claim(js, "east")
        return (
            beat is not None
            and beat.epoch == claim.seq
            and beat.leader == agent.agent_id
            and beat.standbys == standbys
        )

    await wait_until(leading, 40, interval=0.1, what=what)
    return (await read_last_claim(js, "east")).seq


async def test_sigkill_of_the_leader_a_standby_takes_over_and_answers_never_change(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    async with (
        agents(tmp_path, nats_peer, ["a", "b", "c"]) as (a, b, c),
        stream(nats_peer) as js,
    ):
        a.proc.start()
        epoch_a = await wait_leading(js, a, 0, "a leads")
        b.proc.start()
        c.proc.start()
        await wait_leading(js, a, 2, "a counts two standbys")
        for standby in (b, c):
            ready = await standby.readyz()
            assert ready["role"] == "standby" and ready["ready"] and ready["epoch"] == 0
        before = await read_stored_states(js, "east")
        assert {s.state.epoch for s in before.values() if s.state} == {epoch_a}

        async with registry(nats_peer) as app, aiohttp.ClientSession() as http:

            async def view_ready() -> bool:
                ranked, services, stale = await answers(http, app)
                return len(services) == 3 and stale == (False,) and all(ranked)

            await wait_until(view_ready, 10, what="registry view")
            # /v1/status names the leader and counts its standbys.
            async with http.get(f"http://127.0.0.1:{app.admin_port}/v1/status") as resp:
                [east] = (await resp.json())["clusters"]
            assert (east["leader"], east["standbys"]) == (a.agent_id, 2)
            sampler = Sampler(http, app, await answers(http, app))
            loop = asyncio.get_running_loop()
            killed_at = loop.time()
            a.proc.signal_group(signal.SIGKILL)

            async def new_leader_beats() -> bool:
                rec = app.view.clusters.get("east")
                return rec is not None and rec.beat is not None and rec.beat.epoch > epoch_a

            await wait_until(new_leader_beats, 20, interval=0.02, what="takeover")
            takeover_s = loop.time() - killed_at
            await asyncio.sleep(BEAT_S * 1.5)  # a few beats of the new leader
            await sampler.stop()
            record_figure("takeover_after_sigkill_s", takeover_s)
            assert takeover_s <= 10.0
            # Never a different answer, and never stale: the lease (2.5 beats) runs out
            # before the registry's stale TTL (3 beats).
            assert sampler.samples > 50 and sampler.differences == []

        claim = await read_last_claim(js, "east")
        assert claim.claim is not None and claim.claim.previous == epoch_a  # over a, once
        winner, loser = (b, c) if claim.claim.agent == b.agent_id else (c, b)
        assert claim.claim.agent == winner.agent_id
        await wait_leading(js, winner, 1, "the winner counts the other standby")
        assert (await loser.readyz())["role"] == "standby"
        # A takeover republishes nothing unchanged: same messages, same sequences.
        after = await read_stored_states(js, "east")
        assert {k: s.seq for k, s in after.items()} == {k: s.seq for k, s in before.items()}
        assert (await winner.readyz())["pending"] == 0

        # The new leader follows the source.
        (tmp_path / "services.toml").write_text(one_instance_file({**SERVICES, "web": "10.0.0.9"}))

        async def republished() -> bool:
            states = await read_stored_states(js, "east")
            web = states[("default", "web")].state
            return web is not None and web.instances[0].address == "10.0.0.9"

        await wait_until(republished, 10, what="the new leader publishes a change")
        states = await read_stored_states(js, "east")
        assert states[("default", "web")].state.epoch == claim.seq  # type: ignore[union-attr]


async def test_frozen_leader_resumed_after_a_takeover_steps_down_to_standby(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    async with (
        agents(tmp_path, nats_peer, ["a", "b"]) as (a, b),
        stream(nats_peer) as js,
    ):
        a.proc.start()
        epoch_a = await wait_leading(js, a, 0, "a leads")
        b.proc.start()
        await wait_leading(js, a, 1, "a counts b")

        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        a.proc.signal_group(signal.SIGSTOP)
        epoch_b = await wait_leading(js, b, 0, "b took over")
        takeover_s = loop.time() - stopped_at
        record_figure("takeover_after_sigstop_s", takeover_s)
        assert takeover_s <= 10.0 and epoch_b > epoch_a

        # The source changes while a is frozen: a has news to publish when it wakes up.
        (tmp_path / "services.toml").write_text(
            one_instance_file({"web": "10.0.0.1", "api": "10.0.7.2", "new": "10.0.0.4"})
        )

        async def b_published() -> bool:
            states = await read_stored_states(js, "east")
            return ("default", "new") in states and states[("default", "db")].state.deleted  # type: ignore[union-attr]

        await wait_until(b_published, 10, what="b publishes the change")
        a.proc.signal_group(signal.SIGCONT)
        # a learns of the takeover from its first fenced write, steps down, and stands by.
        await wait_leading(js, b, 1, "a stands by for b")
        assert a.proc.alive()
        ready = await a.readyz()
        assert ready["role"] == "standby" and ready["ready"]
        assert "standing by" in a.proc.log_tail(4000)

        claim = await read_last_claim(js, "east")
        assert claim.seq == epoch_b and claim.claim is not None
        assert claim.claim.agent == b.agent_id
        states = await read_stored_states(js, "east")
        for key, stored in states.items():
            state = stored.state
            assert state is not None
            # Nothing of a was stored after b's claim: every message after the claim is b's.
            if stored.seq > epoch_b:
                assert state.epoch == epoch_b, key
        assert states[("default", "api")].state.instances[0].address == "10.0.7.2"  # type: ignore[union-attr]
        assert states[("default", "web")].state.epoch == epoch_a  # type: ignore[union-attr]  # unchanged: adopted
        beat = await last_beat(js)
        assert beat is not None and beat.epoch == epoch_b
        metrics = await _metrics(a.port)
        assert metrics.get("syncmesh_edge_stepdowns_total") == 1.0
        assert metrics.get("syncmesh_edge_leader") == 0.0


async def _metrics(port: int) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out
