"""The nemesis's system: every part a real process it can kill, freeze and restart.

A 3-node NATS cluster (R3 stream), Consul (cluster east), Nacos (west), a
service file (north), one agent per cluster and two registry replicas, each
agent and registry a ``python -m syncmesh_app`` subprocess started from TOML
config files as an operator would, and real TCP listeners as the gateways.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from harness.bound_ports import ADMIN_HTTP, DNS, port_in_log
from harness.consul_peer import ConsulPeer, consul_agent
from harness.nacos_peer import NacosPeer, nacos_server
from harness.nats_peer import NatsPeer, nats_server
from harness.nemesis_plan import CLUSTERS, GATEWAY_ADDRESS, STANDBY_CLUSTER
from harness.system import Listener
from syncmesh_app.embedded.process import ManagedProcess, wait_until

__all__ = ["Agent", "Registry", "NemesisSystem", "nemesis_system", "LIBFAKETIME"]

REPO = Path(__file__).resolve().parent.parent
# Debian's faketime package: the agent's clock is moved by the library, never by
# a hook in the product.
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
ZONE_OF = {"east": "z1", "west": "z1", "north": "z2"}


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


@dataclass
class Agent:
    cluster: str
    config: Path
    log: Path
    process: ManagedProcess | None = None
    clock_offset: str = ""
    # "" for the cluster's first agent; "standby" for the second of a standby group.
    role: str = ""

    @property
    def name(self) -> str:
        return f"agent-{self.cluster}" + (f"-{self.role}" if self.role else "")

    def start(self, clock_offset: str = "") -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.clock_offset = clock_offset
        if clock_offset:
            env.update(LD_PRELOAD=str(LIBFAKETIME), FAKETIME=clock_offset)
        self.process = ManagedProcess(
            self.name,
            [sys.executable, "-m", "syncmesh_app", "edge", "--config", str(self.config)],
            self.log,
            env=env,
        )
        self.process.start()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()


@dataclass
class Registry:
    """A registry process binding its DNS and admin ports itself (port 0); its
    log names them, and a restart logs the new ones after ``_log_offset``."""

    name: str
    config: Path
    log: Path
    process: ManagedProcess | None = None
    _log_offset: int = 0

    def _port(self, pattern: re.Pattern[str]) -> int:
        port = port_in_log(self.log, pattern, self._log_offset)
        if port is None:
            raise RuntimeError(f"registry {self.name} has not logged {pattern.pattern!r} yet")
        return port

    @property
    def dns_port(self) -> int:
        return self._port(DNS)

    @property
    def admin_port(self) -> int:
        return self._port(ADMIN_HTTP)

    def start(self) -> None:
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        self.process = ManagedProcess(
            f"registry-{self.name}",
            [sys.executable, "-m", "syncmesh_app", "registry", "--config", str(self.config)],
            self.log,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.process.start()

    async def wait_ready(self, timeout: float = 120.0) -> None:
        async def ready() -> bool:
            assert self.process is not None
            if not self.process.alive():
                raise self.process.fail("exited")
            if port_in_log(self.log, ADMIN_HTTP, self._log_offset) is None:
                return False
            url = f"http://127.0.0.1:{self.admin_port}/readyz"
            try:
                async with aiohttp.ClientSession() as http, http.get(url) as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(ready, timeout, interval=0.2, what=f"registry {self.name} ready")


@dataclass
class NemesisSystem:
    workdir: Path
    nats: NatsPeer
    consul: ConsulPeer
    nacos: NacosPeer
    service_file: Path
    gateways: dict[str, Listener]
    # Nacos TCP-checks persistent instances: they point at these real listeners.
    nacos_targets: list[Listener]
    agents: dict[str, Agent] = field(default_factory=dict)
    # The second agent of each standby group, by cluster.
    standbys: dict[str, Agent] = field(default_factory=dict)
    registries: dict[str, Registry] = field(default_factory=dict)

    def processes(self) -> dict[str, ManagedProcess]:
        procs = {f"nats-{n.name}": n.process for n in self.nats.nodes}
        procs["consul"] = self.consul.process
        procs["nacos"] = self.nacos.process
        for agent in [*self.agents.values(), *self.standbys.values()]:
            if agent.process is not None:
                procs[agent.name] = agent.process
        for reg in self.registries.values():
            if reg.process is not None:
                procs[f"registry-{reg.name}"] = reg.process
        return procs

    def nats_index(self, name: str) -> int:
        return [n.name for n in self.nats.nodes].index(name)

    def freeze(self, process: ManagedProcess) -> None:
        process.signal_group(signal.SIGSTOP)

    def thaw(self, process: ManagedProcess) -> None:
        process.signal_group(signal.SIGCONT)

    async def wipe_consul(self) -> None:
        """Restart Consul without its data: every index goes back to the start."""
        await self.consul.process.stop()
        shutil.rmtree(self.consul.data_dir, ignore_errors=True)
        self.consul.data_dir.mkdir(parents=True)
        self.consul.process.start()
        await self.consul.wait_ready()

    async def restart_agent(self, cluster: str, clock_offset: str = "") -> None:
        agent = self.agents[cluster]
        if agent.process is not None:
            agent.process.kill()
        agent.start(clock_offset)

    async def leader(self, cluster: str, timeout: float = 30.0) -> Agent:
        """The agent of ``cluster``'s standby group that publishes now, as the
        registries see it (the beat's leader is ``host:pid``)."""
        group = [self.agents[cluster], self.standbys[cluster]]
        found: list[Agent] = []

        async def known() -> bool:
            reg = next(r for r in self.registries.values() if r.process and r.process.alive())
            url = f"http://127.0.0.1:{reg.admin_port}/v1/status"
            async with aiohttp.ClientSession() as http, http.get(url) as resp:
                status = await resp.json()
            leader = next(
                c.get("leader", "") for c in status["clusters"] if c["cluster"] == cluster
            )
            for agent in group:
                if agent.alive() and agent.process and leader.endswith(f":{agent.process.pid}"):
                    found.append(agent)
                    return True
            return False

        await wait_until(known, timeout, interval=0.2, what=f"the leader of {cluster}")
        return found[-1]

    async def restart_registry(self, name: str) -> None:
        reg = self.registries[name]
        if reg.process is not None:
            reg.process.kill()
        reg.start()
        await reg.wait_ready()


def _edge_toml(system: NemesisSystem, cluster: str) -> str:
    source = CLUSTERS[cluster]
    lines = [
        f'cluster = "{cluster}"',
        f"client_cidrs = {_toml_list(['127.0.0.0/24'] if cluster == 'east' else [])}",
        "beat_interval_s = 1.0",
        "metrics_port = -1",  # an ephemeral port: nothing here reads it
        "[nats]",
        f"servers = {_toml_list(system.nats.urls)}",
        "[source]",
        f'kind = "{source}"',
    ]
    if source == "consul":
        lines += ["[source.consul]", f'address = "{system.consul.http_addr}"']
    elif source == "nacos":
        sdk = system.workdir / f"nacos-sdk-{cluster}"
        lines += [
            "[source.nacos]",
            f'server_addr = "{system.nacos.server_addr}"',
            f'work_dir = "{sdk}"',
        ]
    else:
        lines += ["[source.file]", f'path = "{system.service_file}"']
    lines += [
        "[[gateways]]",
        f'address = "{GATEWAY_ADDRESS[cluster]}"',
        f"port = {system.gateways[cluster].port}",
        "[locality]",
        'region = "r1"',
        f'zone = "{ZONE_OF[cluster]}"',
    ]
    if cluster == STANDBY_CLUSTER:
        lines += ["[ha]", "standby = true"]
    return "\n".join(lines) + "\n"


def _registry_toml(system: NemesisSystem, reg: Registry) -> str:
    return (
        "\n".join(
            [
                f'replica = "{reg.name}"',
                'admin_address = "127.0.0.1"',
                "admin_port = 0",
                "[locality]",
                'region = "r1"',
                'zone = "z1"',
                "[nats]",
                f"servers = {_toml_list(system.nats.urls)}",
                "replicas = 3",
                "[dns]",
                'address = "127.0.0.1"',
                "port = 0",
                "ttl = 1",
                "[probe]",
                "interval_s = 0.5",
                "timeout_s = 0.5",
                "rise = 2",
                "fall = 2",
            ]
        )
        + "\n"
    )


@contextlib.asynccontextmanager
async def nemesis_system(workdir: Path) -> AsyncIterator[NemesisSystem]:
    workdir.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        nats = await stack.enter_async_context(
            nats_server(cluster_size=3, workdir=workdir / "nats")
        )
        consul = await stack.enter_async_context(consul_agent(workdir=workdir / "consul"))
        nacos = await stack.enter_async_context(nacos_server(workdir=workdir / "nacos"))
        gateways = {c: Listener(GATEWAY_ADDRESS[c]) for c in CLUSTERS}
        targets = [Listener("127.0.0.5") for _ in range(3)]
        for listener in [*gateways.values(), *targets]:
            await listener.open()
            stack.push_async_callback(listener.close)
        service_file = workdir / "north-services.toml"
        service_file.write_text("services = []\n")
        system = NemesisSystem(workdir, nats, consul, nacos, service_file, gateways, targets)
        # Registries first: they own the stream (create it R3).
        for name in ("r1", "r2"):
            reg = Registry(
                name,
                workdir / f"registry-{name}.toml",
                workdir / f"registry-{name}.log",
            )
            reg.config.write_text(_registry_toml(system, reg))
            system.registries[name] = reg
            reg.start()
        for cluster in CLUSTERS:
            agent = Agent(
                cluster, workdir / f"edge-{cluster}.toml", workdir / f"edge-{cluster}.log"
            )
            agent.config.write_text(_edge_toml(system, cluster))
            system.agents[cluster] = agent
            agent.start()
            if cluster == STANDBY_CLUSTER:
                standby = Agent(
                    cluster, agent.config, workdir / f"edge-{cluster}-standby.log", role="standby"
                )
                system.standbys[cluster] = standby
                standby.start()
        try:
            await asyncio.gather(*(reg.wait_ready() for reg in system.registries.values()))
            yield system
        finally:
            for proc in system.processes().values():
                # A frozen process ignores SIGTERM: thaw first, then stop.
                proc.signal_group(signal.SIGCONT)
            for agent in [*system.agents.values(), *system.standbys.values()]:
                if agent.process is not None:
                    await agent.process.stop(grace=3.0)
            for reg in system.registries.values():
                if reg.process is not None:
                    await reg.process.stop(grace=3.0)
