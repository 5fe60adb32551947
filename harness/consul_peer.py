"""A real Consul v1.14.11 dev agent on 127.0.0.1 for integration tests.

Every listener gets its own free port (or is disabled) so several agents and
other peers can run side by side, and the whole process group is torn down
even when the test body raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from harness.certs import TestCerts, make_certs
from harness.consul_build import ensure_consul
from syncmesh_app.embedded.process import ManagedProcess, PeerStartError, free_port

__all__ = ["ConsulPeer", "PeerStartError", "consul_agent"]

# A cold dev agent elects itself within ~1-3s; ACL bootstrap adds a little.
# Generous because CI machines with 2 cores also run the other peers.
READY_TIMEOUT = 60.0


@dataclass
class ConsulPeer:
    """Handle on one running agent; ``restart`` keeps ports, data dir and token."""

    http_addr: str
    http_url: str
    token: str | None
    process: ManagedProcess
    version: str
    dns_port: int = 0
    serf_lan_port: int = 0
    server_port: int = 0
    data_dir: Path = field(default_factory=Path)
    # With tls=True: the HTTPS listener and the CA that signed its certificate.
    https_addr: str = ""
    ca_file: str = ""

    def headers(self) -> dict[str, str]:
        return {"X-Consul-Token": self.token} if self.token else {}

    async def wait_ready(self, ready_timeout: float = READY_TIMEOUT) -> None:
        """Ready = a leader is elected AND the catalog answers (ACLs bootstrapped).

        The leader alone is not enough: right after election the catalog (and
        with ACLs the initial management token) may still be unavailable.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        last = "no answer yet"
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=5), headers=self.headers()
        ) as session:
            # Own loop instead of wait_until(): a crashed agent must fail fast
            # rather than be polled until the timeout.
            while loop.time() < deadline:
                if not self.process.alive():
                    raise self.process.fail("consul agent exited during start")
                try:
                    async with session.get(f"{self.http_url}/v1/status/leader") as resp:
                        leader = await resp.json() if resp.status == 200 else None
                    if leader:
                        async with session.get(f"{self.http_url}/v1/catalog/services") as resp:
                            if resp.status == 200:
                                return
                            last = f"catalog: HTTP {resp.status} {await resp.text()}"
                    else:
                        last = "no leader elected"
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.1)
        raise self.process.fail(f"not ready after {ready_timeout}s ({last})")

    async def stop(self) -> None:
        await self.process.stop()

    async def restart(self) -> None:
        """Stop and start on the same ports and data dir, then wait until ready.

        ``-dev`` keeps raft in memory, so the catalog starts empty again, but
        services registered through the agent API are persisted in the data dir
        and re-synced by anti-entropy, as with a real agent restart.
        """
        await self.process.stop()
        self.process.start()
        await self.wait_ready()


def _agent_config(
    http: int,
    dns: int,
    serf_lan: int,
    server: int,
    data_dir: Path,
    token: str | None,
    https: int = -1,
    certs: TestCerts | None = None,
) -> dict[str, object]:
    config: dict[str, object] = {
        "node_name": "syncmesh-consul-dev",
        "data_dir": str(data_dir),
        "bind_addr": "127.0.0.1",
        "client_addr": "127.0.0.1",
        "advertise_addr": "127.0.0.1",
        # -1 disables a listener; the dev defaults (8502, 8503 for gRPC TLS on
        # servers) would collide between agents and with other services.
        "ports": {
            "http": http,
            "https": https,
            "dns": dns,
            "serf_lan": serf_lan,
            "serf_wan": -1,
            "server": server,
            "grpc": -1,
            "grpc_tls": -1,
        },
        # No internet in CI: skip the HashiCorp checkpoint call.
        "disable_update_check": True,
        "log_level": "INFO",
    }
    if certs is not None:
        config["tls"] = {
            "defaults": {
                "ca_file": str(certs.ca),
                "cert_file": str(certs.cert),
                "key_file": str(certs.key),
                "verify_incoming": False,
            }
        }
    if token is not None:
        config["primary_datacenter"] = "dc1"
        config["acl"] = {
            "enabled": True,
            "default_policy": "deny",
            "down_policy": "extend-cache",
            # The agent token lets the node register itself under "deny".
            "tokens": {"initial_management": token, "agent": token},
        }
    return config


async def _consul_version(binary: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        "version",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    lines = out.decode(errors="replace").splitlines()
    return lines[0].strip() if lines else ""


_PORT_ATTEMPTS = 3


def _port_collision(log: Path) -> bool:
    try:
        return "address already in use" in log.read_text(errors="replace")
    except FileNotFoundError:
        return False


def _prepare(
    binary: Path,
    version: str,
    workdir: Path,
    data_dir: Path,
    token: str | None,
    certs: TestCerts | None,
    tls: bool,
) -> ConsulPeer:
    """Config on fresh ports, and the (not yet started) agent."""
    http, dns, serf_lan, server = (free_port() for _ in range(4))
    https = free_port() if tls else -1
    config_file = workdir / "agent.json"
    config_file.write_text(
        json.dumps(
            _agent_config(http, dns, serf_lan, server, data_dir, token, https, certs), indent=2
        )
    )
    # The token is a secret only for this throwaway agent; still keep the
    # file private so it is not world-readable on shared CI hosts.
    config_file.chmod(0o600)
    log_path = workdir / "consul.log"
    log_path.unlink(missing_ok=True)  # a retry reads only its own start
    process = ManagedProcess(
        name="consul",
        argv=[
            str(binary),
            "agent",
            "-dev",
            "-bind",
            "127.0.0.1",
            "-client",
            "127.0.0.1",
            "-config-file",
            str(config_file),
        ],
        log_path=log_path,
        cwd=workdir,
    )
    return ConsulPeer(
        http_addr=f"127.0.0.1:{http}",
        http_url=f"http://127.0.0.1:{http}",
        token=token,
        process=process,
        version=version,
        dns_port=dns,
        serf_lan_port=serf_lan,
        server_port=server,
        data_dir=data_dir,
        https_addr=f"127.0.0.1:{https}" if tls else "",
        ca_file=str(certs.ca) if certs else "",
    )


@contextlib.asynccontextmanager
async def consul_agent(
    acl: bool = False, workdir: Path | None = None, tls: bool = False
) -> AsyncIterator[ConsulPeer]:
    """Start ``consul agent -dev`` on free 127.0.0.1 ports; yield a ready ConsulPeer."""
    # The first call may build Consul (minutes); keep the event loop free.
    binary = await asyncio.to_thread(ensure_consul)
    version = await _consul_version(binary)

    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="consul-")))
        workdir.mkdir(parents=True, exist_ok=True)
        data_dir = workdir / "data"
        data_dir.mkdir(exist_ok=True)
        token = str(uuid.uuid4()) if acl else None
        certs = make_certs(workdir / "tls") if tls else None
        # Consul cannot bind port 0 and report it, so its ports are picked here
        # and bound by Consul moments later; another process can take one in
        # between. Such a collision is seen in Consul's log and retried on fresh
        # ports (Consul's own test SDK, freeport, has the same window).
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            peer = _prepare(binary, version, workdir, data_dir, token, certs, tls)
            try:
                peer.process.start()
                await peer.wait_ready()
                break
            except PeerStartError:
                await peer.process.stop()
                peer.process.kill()
                if attempt == _PORT_ATTEMPTS or not _port_collision(peer.process.log_path):
                    raise
        process = peer.process
        try:
            yield peer
        finally:
            await process.stop()
            # stop() already SIGKILLs the group after the grace period; this
            # covers a cancelled stop() leaving stragglers behind.
            process.kill()
