"""The agent's start path: what it imports, and the source's first request before NATS.

An agent's initial sync is timed from the process spawn (bench/edge_consul_scale.py),
so its start imports only what the Consul agent needs, and the source's first
requests go out before the NATS client is even imported: Consul works on them while
the agent connects to NATS. Nothing is published before NATS is connected.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edge_sync.config import EdgeConfig
from harness.consul_peer import ConsulPeer
from harness.nats_peer import NatsPeer
from syncmesh_app.edge import EdgeAgent
from syncmesh_io import nats_connection as natsconn

REPO = Path(__file__).resolve().parents[2]

# Run the real entry point (``python -m syncmesh_app edge``) and write sys.modules at exit.
_PROBE = """
import atexit, json, runpy, sys
out, config = sys.argv[1], sys.argv[2]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["syncmesh", "--log-level", "WARNING", "edge", "--config", config]
runpy.run_module("syncmesh_app", run_name="__main__")
"""

# Never on the path of a Consul agent: the registry, DNS, the demo and Nacos.
FORBIDDEN_PREFIXES = (
    "global_registry",
    "dns_server",
    "syncmesh_app.registry",
    "syncmesh_app.demo",
    "syncmesh_app.audit",
    "syncmesh_app.ops.commands",
    "edge_sync.io.nacos",
    "edge_sync.core.nacos",
    "edge_sync.io.service_file",
    "nacos",
    "v2.nacos",
    "grpc",
)


def test_consul_agent_imports_no_registry_dns_or_nacos_module(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    # Nothing listens on port 1: the agent retries both sides until it is stopped.
    config.write_text(
        'cluster = "imports"\nmetrics_port = -1\n[nats]\nservers = ["nats://127.0.0.1:1"]\n'
        '[source]\nkind = "consul"\n[source.consul]\naddress = "127.0.0.1:1"\n'
    )
    out = tmp_path / "modules.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", _PROBE, str(out), str(config)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(2.0)
        assert proc.poll() is None, proc.communicate()[0].decode()
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    modules = json.loads(out.read_text())
    assert "edge_sync.io.consul" in modules
    assert "nats" in modules  # it did get to the NATS side
    loaded = [m for m in modules if m.startswith(FORBIDDEN_PREFIXES)]
    assert loaded == []


@pytest.mark.peers
async def test_first_consul_request_before_nats_connects(
    nats_peer: NatsPeer, consul_peer: ConsulPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, float] = {}
    agent_box: list[EdgeAgent] = []
    connect = natsconn.connect

    async def watched_connect(cfg: Any, **extra: Any) -> Any:
        agent = agent_box[0]
        seen["consul_requests"] = sum(
            sample.value
            for metric in agent.metrics.source_requests.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
        seen["published"] = sum(
            sample.value
            for metric in agent.metrics.published.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
        return await connect(cfg, **extra)

    monkeypatch.setattr(natsconn, "connect", watched_connect)
    config = msgspec.convert(
        {
            "cluster": "east",
            "nats": {"servers": [nats_peer.url]},
            "source": {"kind": "consul", "consul": {"address": consul_peer.http_addr}},
        },
        EdgeConfig,
    )
    agent = EdgeAgent(config)
    agent_box.append(agent)
    async with agent:
        await agent.wait_synced(30)
    # The catalog and checks watches had asked Consul before the NATS connection began,
    # and nothing had been published before it.
    assert seen["consul_requests"] >= 2
    assert seen["published"] == 0


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:8500", True),
        ("127.3.4.5:8500", True),
        ("localhost:8500", True),
        ("[::1]:8500", True),
        ("10.0.0.1:8500", False),
        ("consul.service.consul:8500", False),
        ("[fe80::1]:8500", False),
    ],
)
async def test_consul_on_loopback_is_asked_for_uncompressed_answers(
    address: str, loopback: bool
) -> None:
    # gzip only costs CPU on both sides when Consul is on this machine; elsewhere it
    # saves bandwidth (a checks snapshot is ~450 bytes per check), so it stays on.
    from edge_sync.config import ConsulSourceConfig
    from edge_sync.io.consul import ConsulSource

    source = ConsulSource(ConsulSourceConfig(address=address), None, lambda _: True)  # type: ignore[arg-type]
    async with source._new_session() as session:
        expected = "identity" if loopback else None
        assert session.headers.get("Accept-Encoding") == expected
