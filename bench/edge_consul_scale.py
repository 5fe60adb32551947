"""Edge agent at catalog scale: a real Consul with 5,000 services x 3 instances.

Registers the catalog through /v1/txn (bounded concurrency), starts a real
nats-server, runs the edge agent in its own process (``python -m syncmesh_app edge``)
and measures, from outside that process:

- initial_sync_s: agent start until JetStream acknowledged all 5,000 services
  (the agent's own ``syncmesh_edge_published_total``), then checked on the stream;
- max_consul_conns: the most TCP connections the agent process had established
  to Consul's HTTP port at any sample (every 20 ms, from /proc/<pid>/fd and
  /proc/net/tcp);
- idle_cpu_pct: agent CPU (utime+stime from /proc/<pid>/stat) over 10 s idle,
  as a percentage of one core;
- ref_list_s: in the same invocation, a bare aiohttp client fetching
  /v1/health/service/<name> for all 5,000 with the same concurrency (32), and
  ratio_vs_ref = initial_sync_s / ref_list_s;
- ref_identity_list_s: the same client asking for uncompressed answers
  (``Accept-Encoding: identity``), as the agent asks a loopback Consul, and
  ratio_vs_identity_ref (the agent gains nothing the reference could not).

``--rounds`` (3) interleaved rounds of the reference and a fresh agent process,
each for its own cluster (``bench-<round>``): an agent adopts what the stream
already holds for its cluster and republishes nothing unchanged, so a second
agent of one cluster would publish nothing; spread printed, medians in the
last line. Also
``sync_after_first_conn_s``: the sync time counted from the agent's first
Consul connection (interpreter start and imports left out), and its ratio.

The agent is started the way a deployment starts it: with its bytecode compiled
(``harness.bytecode``, as ``./run setup`` and the image build do), not compiling
every module at each start because the shell sets PYTHONDONTWRITEBYTECODE.

Usage: .venv/bin/python bench/edge_consul_scale.py [--services 5000] [--instances 3] [--rounds 3]
The last line is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# `./run bench` runs this file as a script: the checkout (harness/ is not installed).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median, metric, spread  # noqa: E402
from edge_sync.io.remote_state import read_last_states  # noqa: E402
from harness import bytecode  # noqa: E402
from harness.consul_peer import consul_agent  # noqa: E402
from harness.nats_peer import nats_server  # noqa: E402
from syncmesh_app.embedded.process import ManagedProcess, free_port, wait_until  # noqa: E402
from syncmesh_io import nats_connection as natsconn  # noqa: E402

CLUSTER = "bench"
FETCH_CONCURRENCY = 32
REPO = Path(__file__).resolve().parents[1]
TXN_OPS = 64
NODES = 100


def _cluster(round_: int) -> str:
    return f"{CLUSTER}-{round_}"


def _node(k: int) -> str:
    return f"node-{k % NODES:03d}"


def _ops(services: int, instances: int) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = [
        {
            "Node": {
                "Verb": "set",
                "Node": {"Node": _node(k), "Address": f"127.0.{k // 250}.{k % 250 + 1}"},
            }
        }
        for k in range(NODES)
    ]
    for i in range(services):
        name = f"svc-{i:05d}"
        for j in range(instances):
            node = _node(i * instances + j)
            sid = f"{name}-{j}"
            ops.append(
                {
                    "Service": {
                        "Verb": "set",
                        "Node": node,
                        "Service": {"ID": sid, "Service": name, "Port": 10000 + j},
                    }
                }
            )
            ops.append(
                {
                    "Check": {
                        "Verb": "set",
                        "Check": {
                            "Node": node,
                            "CheckID": f"chk-{sid}",
                            "Name": "bench",
                            "Status": "passing",
                            "ServiceID": sid,
                            "ServiceName": name,
                        },
                    }
                }
            )
    return ops


async def register(http_url: str, services: int, instances: int) -> float:
    ops = _ops(services, instances)
    # Nodes first, in their own transaction: service ops need them.
    chunks = [ops[:NODES]] + [ops[i : i + TXN_OPS] for i in range(NODES, len(ops), TXN_OPS)]
    started = time.monotonic()
    limit = asyncio.Semaphore(8)
    async with aiohttp.ClientSession(http_url) as http:

        async def put(chunk: list[dict[str, Any]]) -> None:
            async with limit, http.put("/v1/txn", json=chunk) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"txn failed: HTTP {resp.status} {await resp.text()}")

        await put(chunks[0])
        await asyncio.gather(*(put(c) for c in chunks[1:]))
        async with http.get("/v1/catalog/services") as resp:
            listed = await resp.json()
    if len([n for n in listed if n.startswith("svc-")]) != services:
        raise RuntimeError(f"catalog has {len(listed)} services, expected {services}")
    return time.monotonic() - started


async def reference_list(http_url: str, services: int, identity: bool = False) -> float:
    """``identity``: ask for uncompressed answers, as the agent does of a
    loopback Consul (aiohttp asks for gzip by default)."""
    names = [f"svc-{i:05d}" for i in range(services)]
    connector = aiohttp.TCPConnector(limit=FETCH_CONCURRENCY)
    headers = {"Accept-Encoding": "identity"} if identity else None
    started = time.monotonic()
    async with aiohttp.ClientSession(http_url, connector=connector, headers=headers) as http:
        queue = list(reversed(names))

        async def worker() -> None:
            while queue:
                name = queue.pop()
                async with http.get(f"/v1/health/service/{name}") as resp:
                    await resp.read()

        await asyncio.gather(*(worker() for _ in range(FETCH_CONCURRENCY)))
    return time.monotonic() - started


def consul_connections(pid: int, port: int) -> int:
    inodes: set[str] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return 0
    hex_port = f"{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and remote.endswith(":" + hex_port) and inode in inodes:
                count += 1
    return count


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


async def run_agent(
    work: Path, consul_addr: str, consul_port: int, nats_url: str, services: int, round_: int
) -> tuple[ManagedProcess, str, dict[str, float]]:
    """Start an agent; returns once JetStream acknowledged every service."""
    metrics_port = free_port()
    config = work / f"edge-{round_}.toml"
    config.write_text(
        f'cluster = "{_cluster(round_)}"\nmetrics_port = {metrics_port}\n'
        f'[nats]\nservers = ["{nats_url}"]\n'
        f'[source]\nkind = "consul"\n[source.consul]\naddress = "{consul_addr}"\n'
        f"fetch_concurrency = {FETCH_CONCURRENCY}\n"
    )
    agent = ManagedProcess(
        "edge-agent",
        [sys.executable, "-m", "syncmesh_app", "--log-level", "WARNING", "edge", "--config",
         str(config)],
        work / f"agent-{round_}.log",
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    figures = {"max_conns": 0.0, "first_conn_s": math.nan}
    # /proc is sampled every 20 ms (free for the agent); its /metrics only every 100 ms:
    # scraping it every 20 ms cost the agent ~7 % of its CPU during the sync (py-spy).
    scraped_at = 0.0
    started = time.monotonic()
    agent.start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:

        async def synced() -> bool:
            if not agent.alive():
                raise agent.fail(f"agent exited with {agent.returncode}")
            conns = consul_connections(agent.pid, consul_port)
            if conns and math.isnan(figures["first_conn_s"]):
                figures["first_conn_s"] = time.monotonic() - started
            figures["max_conns"] = max(figures["max_conns"], conns)
            nonlocal scraped_at
            if time.monotonic() - scraped_at < 0.1:
                return False
            scraped_at = time.monotonic()
            published = await metric(http, url, 'syncmesh_edge_published_total{kind="service"}')
            return published >= services

        await wait_until(synced, 300, interval=0.02, what="initial sync")
    figures["initial_sync_s"] = time.monotonic() - started
    return agent, url, figures


async def main(services: int, instances: int, rounds_n: int) -> str:
    print(f"bytecode up to date in {bytecode.ensure():.1f}s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    rounds: dict[str, list[float]] = {}
    async with (
        consul_agent(workdir=work / "consul") as consul,
        nats_server(workdir=work / "nats") as nats,
    ):
        reg_s = await register(consul.http_url, services, instances)
        print(f"registered {services} services x {instances} instances in {reg_s:.1f}s", flush=True)
        consul_port = int(consul.http_addr.rsplit(":", 1)[1])
        for r in range(rounds_n):
            ref_list_s = await reference_list(consul.http_url, services)
            rounds.setdefault("ref_list_s", []).append(ref_list_s)
            identity_s = await reference_list(consul.http_url, services, identity=True)
            rounds.setdefault("ref_identity_list_s", []).append(identity_s)
            agent, url, figures = await run_agent(
                work, consul.http_addr, consul_port, nats.url, services, r
            )
            for key, value in figures.items():
                rounds.setdefault(key, []).append(value)
            print(
                f"round {r + 1}: initial sync {figures['initial_sync_s']:.2f}s (first Consul "
                f"connection {figures['first_conn_s']:.2f}s after spawning); bare client "
                f"{ref_list_s:.2f}s (uncompressed {identity_s:.2f}s); load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            if r < rounds_n - 1:
                await agent.stop()
                continue
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
                    pending = await metric(http, url, "syncmesh_edge_pending_publishes")
                # Idle: let the last beats and timers settle, then 10 s of CPU.
                await asyncio.sleep(2.0)
                max_conns = int(max(rounds["max_conns"]))
                cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
                end = t0 + 10.0
                while time.monotonic() < end:
                    max_conns = max(max_conns, consul_connections(agent.pid, consul_port))
                    await asyncio.sleep(0.5)
                idle_cpu_pct = (cpu_seconds(agent.pid) - cpu0) / (time.monotonic() - t0) * 100
                nc = await natsconn.connect(natsconn.NatsConfig(servers=[nats.url]))
                try:
                    states = await read_last_states(nc.jetstream(), _cluster(r))
                finally:
                    await nc.close()
                live = [s for s in states.values() if s is not None and not s.deleted]
                complete = sum(1 for s in live if len(s.instances) == instances)
                if complete != services:
                    raise RuntimeError(
                        f"stream has {complete} complete services, expected {services}"
                    )
            finally:
                await agent.stop()
    # Kept on failure (agent.log, consul.log) for inspection; removed on success.
    shutil.rmtree(work, ignore_errors=True)
    print("rounds min/median/max:")
    for key, values in rounds.items():
        print(f"  {key:16s} {spread(values)}")
    sync_s, ref_s = median(rounds["initial_sync_s"]), median(rounds["ref_list_s"])
    identity_s = median(rounds["ref_identity_list_s"])
    after_start = median(
        [a - b for a, b in zip(rounds["initial_sync_s"], rounds["first_conn_s"], strict=True)]
    )
    return (
        f"services={services} instances={services * instances} pending_after_sync={pending:.0f} "
        f"initial_sync_s={sync_s:.2f} max_consul_conns={max_conns} idle_cpu_pct={idle_cpu_pct:.2f} "
        f"ref_list_s={ref_s:.2f} ratio_vs_ref={sync_s / ref_s:.2f} "
        f"sync_after_first_conn_s={after_start:.2f} ratio_after_first_conn={after_start / ref_s:.2f} "
        f"ref_identity_list_s={identity_s:.2f} ratio_vs_identity_ref={sync_s / identity_s:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(asyncio.run(main(args.services, args.instances, args.rounds)), flush=True)
