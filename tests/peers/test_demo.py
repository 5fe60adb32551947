"""The README's first command: the embedded demo answers DNS, follows an edit of a
service file, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from harness.bound_ports import DEMO_DNS, port_in_log

pytestmark = pytest.mark.peers


async def _a_records(name: str, port: int) -> list[str]:
    query = dns.message.make_query(name, "A")
    reply = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=1.0)
    assert reply.rcode() == dns.rcode.NOERROR
    return sorted(item.address for rrset in reply.answer for item in rrset)


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line names ``text`` (children run in their own sessions)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _bound_dns_port(log_path: Path) -> int:
    """The demo binds port 0 itself (no port picked here to be bound later) and
    its banner names the port it got."""
    port = port_in_log(log_path, DEMO_DNS)
    assert port, log_path.read_text()
    return port


async def test_demo_serves_follows_edits_and_stops_cleanly(tmp_path: Path) -> None:
    log_path = tmp_path / "demo.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "syncmesh_app",
                "demo",
                "--workdir",
                str(tmp_path / "demo"),
                "--dns-port",
                "0",
                "--admin-port",
                "0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while b"syncmesh demo is running" not in log_path.read_bytes():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.1)
        dns_port = _bound_dns_port(log_path)
        assert _processes_mentioning(str(tmp_path / "demo" / "nats")), "no embedded nats-server"
        name = "payments.svc.syncmesh.internal"
        # 127.0.0.1 is in east's client CIDRs: east's gateway answers.
        assert await _a_records(name, dns_port) == ["127.0.0.2"]

        east_file = tmp_path / "demo" / "east-services.toml"
        text = east_file.read_text()
        edited = text.replace("port = 8080\n", 'port = 8080\nhealth = "critical"\n')
        assert edited != text
        east_file.write_text(edited)
        changed_at = time.monotonic()
        while await _a_records(name, dns_port) != ["127.0.0.3"]:
            # Generous: the time it takes is a figure for bench/propagation.py, not a test.
            assert time.monotonic() - changed_at < 30.0, "edit not visible in DNS"
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - changed_at
        print(f"\nservice file edit visible in DNS after {elapsed * 1000:.0f} ms")

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0, log_path.read_text()
        await asyncio.sleep(0.2)
        assert not _group_alive(proc.pid), "a child of the demo outlived it"
        assert _processes_mentioning(str(tmp_path / "demo")) == [], "nats-server outlived the demo"
        assert b"syncmesh demo: stopped" in log_path.read_bytes()
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


async def test_demo_on_real_consul_and_nacos_stops_every_peer(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    log_path = tmp_path / "demo.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "harness.demo_peers",
                "--consul",
                "--nacos",
                "--workdir",
                str(workdir),
                "--dns-port",
                "0",
                "--admin-port",
                "0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while b"syncmesh demo is running" not in log_path.read_bytes():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.2)
        text = log_path.read_text()
        dns_port = _bound_dns_port(log_path)
        assert "east <- real Consul" in text and "west <- real Nacos" in text
        # Consul's payments (east) for a local client; pinned to west, Nacos's.
        assert await _a_records("payments.svc.syncmesh.internal", dns_port) == ["127.0.0.2"]
        pinned = "west.payments.default.svc.syncmesh.internal"
        started = time.monotonic()
        while await _a_records(pinned, dns_port) != ["127.0.0.3"]:
            assert time.monotonic() - started < 20, "Nacos's payments never reached DNS"
            await asyncio.sleep(0.1)
        assert len(_processes_mentioning(str(workdir))) >= 3  # nats, consul, nacos
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log_path.read_text()
        await asyncio.sleep(0.5)
        assert _processes_mentioning(str(workdir)) == [], "a peer outlived the demo"
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
