"""``syncmesh edge`` and ``syncmesh registry`` as real processes on a real nats-server:
the operator commands (inventory, resolve, status) find them through NATS alone,
SIGTERM stops both as cleanly as Ctrl-C (exit 0, a "stopping" line, readiness
withdrawn first), and ``--log-format json`` writes one JSON object per line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dns_server.config import DnsConfig
from global_registry.config import ProbeConfig
from harness.bound_ports import ADMIN_HTTP, wait_for_port
from harness.nats_peer import NatsPeer
from syncmesh.nats_config import NatsConfig
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig

pytestmark = pytest.mark.peers

SERVICES = """\
[[services]]
name = "payments"
[[services.instances]]
address = "10.1.0.11"
port = 8080
[[services.instances]]
address = "10.1.0.12"
port = 8080
health = "critical"
"""


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM, within_s: float = 30.0) -> int:
        self.popen.send_signal(sig)
        return self.popen.wait(timeout=within_s)


def _spawn(args: list[str], log: Path) -> Proc:
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "syncmesh_app", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(popen, log)


def _kill(proc: Proc) -> None:
    if proc.popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(timeout=5)


def _http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One ``syncmesh`` command as an operator types it."""
    return subprocess.run(
        [sys.executable, "-m", "syncmesh_app", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **(env or {})},
    )


@dataclass
class Running:
    nats_url: str
    edge: Proc
    registry: Proc
    admin_port: int
    edge_toml: Path
    registry_toml: Path
    services: Path


@contextlib.asynccontextmanager
async def _gateway() -> AsyncIterator[int]:
    async def accept(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def _until(what: str, check: object, proc: Proc, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():  # type: ignore[operator]
        assert proc.popen.poll() is None, f"{what}: process exited\n{proc.text()}"
        assert time.monotonic() < deadline, f"{what}: not within {within_s}s\n{proc.text()}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def running(nats_peer: NatsPeer, tmp_path: Path) -> AsyncIterator[Running]:
    async with _gateway() as gw_port:
        services = tmp_path / "services.toml"
        services.write_text(SERVICES)
        edge_toml = tmp_path / "edge.toml"
        edge_toml.write_text(
            f'cluster = "east"\nbeat_interval_s = 0.5\n'
            f'[nats]\nservers = ["{nats_peer.url}"]\n'
            f'[source]\nkind = "file"\n[source.file]\npath = "{services}"\n'
            f'[[gateways]]\naddress = "127.0.0.1"\nport = {gw_port}\n'
            f'[locality]\nregion = "us-east"\nzone = "us-east-1a"\n'
        )
        # Port 0: the registry binds its own ports and logs them.
        registry_toml = tmp_path / "registry.toml"
        registry_toml.write_text(
            f'replica = "r1"\nadmin_port = 0\n'
            f'[nats]\nservers = ["{nats_peer.url}"]\n'
            f'[dns]\naddress = "127.0.0.1"\nport = 0\n'
            f"[probe]\ninterval_s = 0.3\ntimeout_s = 0.3\nrise = 1\nfall = 2\n"
        )
        edge = _spawn(["edge", "--config", str(edge_toml)], tmp_path / "edge.log")
        registry = _spawn(
            ["--log-format", "json", "registry", "--config", str(registry_toml)],
            tmp_path / "registry.log",
        )
        try:
            admin_port = await wait_for_port(
                registry.log, ADMIN_HTTP, lambda: registry.popen.poll() is None
            )
            await _until(
                "registry ready",
                lambda: _http(f"http://127.0.0.1:{admin_port}/readyz")[0] == 200,
                registry,
            )
            status_url = f"http://127.0.0.1:{admin_port}/v1/status"
            await _until(
                "east's gateway up",
                lambda: '"up":true' in _http(status_url)[1],
                registry,
            )
            yield Running(
                nats_peer.url, edge, registry, admin_port, edge_toml, registry_toml, services
            )
        finally:
            _kill(registry)
            _kill(edge)


def _json_lines(text: str) -> Iterator[dict[str, object]]:
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)


async def test_operator_commands_and_sigterm(running: Running, tmp_path: Path) -> None:
    nats = ["--nats", running.nats_url]

    # inventory: from the registry, as a table and as JSON.
    result = cli("inventory", *nats)
    assert result.returncode == 0, result.stderr
    assert "payments" in result.stdout and "1/2" in result.stdout
    result = cli("inventory", "--json", "--cluster", "east", *nats)
    assert result.returncode == 0, result.stderr
    inventory = json.loads(result.stdout)
    assert [s["service"] for s in inventory["services"]] == ["payments"]
    assert cli("inventory", "--cluster", "nowhere", *nats).returncode == 1
    # --config finds NATS in the agent's own file; the env variable works too.
    result = cli("inventory", "--via", "stream", "--config", str(running.edge_toml))
    assert result.returncode == 0, result.stderr
    assert "payments" in result.stdout
    result = cli("inventory", env={"SYNCMESH_NATS_URL": running.nats_url})
    assert result.returncode == 0 and "payments" in result.stdout, result.stderr

    # resolve: what DNS would answer, and why.
    result = cli("resolve", "payments.svc.syncmesh.internal", "--client", "10.9.9.9", *nats)
    assert result.returncode == 0, result.stderr
    assert "DNS answers 127.0.0.1 (cluster east" in result.stdout
    result = cli("resolve", "payments", "--json", "--config", str(running.registry_toml))
    reply = json.loads(result.stdout)
    assert reply["known"] and reply["clusters"][0]["cluster"] == "east"
    assert reply["clusters"][0]["healthy_instances"] == 1
    assert cli("resolve", "nothing-here", *nats).returncode == 1
    assert cli("resolve", "payments", "--client", "not-an-ip", *nats).returncode == 2
    # Subsets: no instance has a version here, so no candidate (1); a bad value is an error (2).
    result = cli("resolve", "payments", "--version", "1.2.3", "--tag", "canary", *nats)
    assert result.returncode == 1 and "(version 1.2.3 tag canary)" in result.stdout
    assert cli("resolve", "payments", "--version", "...", *nats).returncode == 2

    # status: every replica's view of clusters and gateways.
    result = cli("status", *nats)
    assert result.returncode == 0, result.stderr
    assert "replica r1: ready" in result.stdout
    assert "east" in result.stdout and "fresh" in result.stdout
    result = cli("status", "--json", *nats)
    (replica,) = json.loads(result.stdout)
    (east,) = replica["clusters"]
    assert east["cluster"] == "east" and east["source_health"] == "ok"
    assert east["gateways"][0]["up"] is True and east["gateways"][0]["state"] == "up"

    # --watch prints changes until SIGTERM, then exits 0.
    watch_log = tmp_path / "watch.log"
    watcher = _spawn(["inventory", "--watch", *nats], watch_log)
    try:
        await _until(
            "watch snapshot", lambda: b"watching for changes" in watch_log.read_bytes(), watcher
        )
        running.services.write_text(SERVICES.replace('health = "critical"\n', ""))
        await _until(
            "watch sees the edit", lambda: b"2/2 healthy" in watch_log.read_bytes(), watcher, 20
        )
        assert watcher.stop() == 0, watcher.text()
        assert "inventory: stopping on SIGTERM" in watcher.text()
    finally:
        _kill(watcher)

    # SIGTERM: the registry withdraws readiness, stops, exits 0; its log is JSON lines.
    assert running.registry.stop() == 0, running.registry.text()
    lines = list(_json_lines(running.registry.text()))
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    messages = [str(line["message"]) for line in lines]
    assert "registry r1: stopping on SIGTERM" in messages
    withdrawn = next(i for i, m in enumerate(messages) if m.startswith("stopping: not ready"))
    assert messages.index("registry r1: stopping on SIGTERM") < withdrawn
    assert messages[-1] == "registry r1: stopped"
    # With no replica left, status says so (exit 1) and still shows the stream's clusters.
    result = cli("status", "--timeout", "1", *nats)
    assert result.returncode == 1
    assert "no registry replica answered" in result.stdout and "east" in result.stdout
    assert cli("resolve", "payments", "--timeout", "1", *nats).returncode == 1
    # inventory needs no registry: it reads the stream.
    result = cli("inventory", "--timeout", "1", *nats)
    assert result.returncode == 0 and "payments" in result.stdout, result.stderr

    # SIGTERM: the agent stops as cleanly as on Ctrl-C.
    assert running.edge.stop() == 0, running.edge.text()
    text = running.edge.text()
    assert "edge east: stopping on SIGTERM" in text and "edge east: stopped" in text


async def test_sigint_stops_the_registry_too(running: Running) -> None:
    assert running.registry.stop(signal.SIGINT) == 0, running.registry.text()
    assert "registry r1: stopping on SIGINT" in running.registry.text()


def test_no_nats_is_no_answer() -> None:
    # Bound but not listening: the port stays ours and every connect is refused.
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        result = cli("status", "--nats", f"nats://127.0.0.1:{port}", "--timeout", "1")
    assert result.returncode == 1
    assert "cannot connect to NATS" in result.stderr


async def test_close_withdraws_readiness_before_dns_stops(nats_peer: NatsPeer) -> None:
    config = RegistryConfig(
        nats=NatsConfig(servers=[nats_peer.url]),
        replica="r1",
        admin_port=0,
        dns=DnsConfig(port=0),
        probe=ProbeConfig(interval_s=0.2, timeout_s=0.2),
    )
    app = RegistryApp(config)
    await app.start()
    try:
        async with asyncio.timeout(20):
            await app.wait_ready()
        assert app.ready and app.dns_port
        closing = asyncio.create_task(app.close())
        await asyncio.sleep(0)  # close() runs up to its first wait
        assert not app.ready and "stopping" in app.readiness()
        assert app.dns_port, "DNS stopped before readiness was withdrawn"
        await closing
        assert app.dns_port is None
    finally:
        await app.close()
