"""Edge agent at catalog scale on Nacos: a real Nacos 2.3.2 with 2,000 services x 3 instances.

The services are registered as ephemeral instances through nacos-sdk-python v2
(gRPC, one client, ``batch_register_instances`` per service), a real
nats-server runs, and the agent runs in its own process
(``python -m syncmesh_app edge --config FILE``, source ``nacos``: one
subscription per service, gRPC push). Measured from outside the process:

- ``initial_sync_s``: agent start until JetStream acknowledged all services
  (the agent's ``syncmesh_edge_published_total{kind="service"}``), checked on the stream;
- ``threads``, ``sockets``, ``rss_mb`` (and peak) of the agent process after the sync,
  ``nacos_conns``: its TCP connections to Nacos;
- ``idle_cpu_pct`` over 10 s after the sync;
- push latency at that size: ``--changes`` instance changes (an instance added to
  or removed from a random service, through the SDK), from the call returning to
  the agent's new state of that service arriving on NATS (core subscription on
  the cluster's subjects), and the reference: a separate SDK client subscribed
  to those services, the time its push arrives. A change not seen within 10 s
  counts as ``inf``.
- ``ref_sync_s``: a bare SDK client doing what the agent must do at start (page
  through ``list_services``, subscribe to every service and read its instances,
  16 at once like the agent), in the same invocation; ``ratio_vs_ref``.

``--rounds`` agent starts (each a fresh process publishing as a cluster of its own,
``bench0``, ``bench1``...: an agent adopts unchanged states it finds in the stream
instead of republishing them, so a second run under the same cluster would publish
nothing) and reference runs, interleaved; spread printed, medians in the last line.

    .venv/bin/python bench/edge_nacos_scale.py [--services 2000] [--instances 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ProcStats,
    load_average,
    median,
    metric,
    percentile,
    say,
    spread,
)
from harness import bytecode  # noqa: E402
from harness.nacos_peer import nacos_server  # noqa: E402
from harness.nats_peer import nats_server  # noqa: E402
from syncmesh import subjects  # noqa: E402
from syncmesh.schema import decode_service_state  # noqa: E402
from syncmesh_app.embedded.process import ManagedProcess, free_port, wait_until  # noqa: E402

CLUSTER = "bench"  # the agent of round N publishes as f"{CLUSTER}{N}"
REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = 16  # the agent's SUBSCRIBE_CONCURRENCY
TIMEOUT_S = 10.0


def sdk_config(server_addr: str, work: Path) -> Any:
    from v2.nacos import ClientConfigBuilder

    config = (
        ClientConfigBuilder()
        .server_address(server_addr)
        .cache_dir(str(work / "cache"))
        .log_dir(str(work / "logs"))
        .load_cache_at_start(False)
        .log_level(logging.WARNING)
        .build()
    )
    config.set_update_cache_when_empty(True)
    return config


async def sdk_client(server_addr: str, work: Path) -> Any:
    from v2.nacos import NacosNamingService

    return await NacosNamingService.create_naming_service(sdk_config(server_addr, work))


def name(i: int) -> str:
    return f"svc-{i:05d}"


def instance_param(i: int, j: int) -> Any:
    from v2.nacos import RegisterInstanceParam

    return RegisterInstanceParam(
        service_name=name(i),
        ip=f"10.{i // 250 % 250}.{i % 250}.{j + 1}",
        port=8080,
        metadata={"version": "v1"},
    )


async def register(client: Any, services: int, instances: int) -> None:
    from v2.nacos import BatchRegisterInstanceParam, ListServiceParam

    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with limit:
            ok = await client.batch_register_instances(
                BatchRegisterInstanceParam(
                    service_name=name(i), instances=[instance_param(i, j) for j in range(instances)]
                )
            )
            if not ok:
                raise RuntimeError(f"register {name(i)} failed")

    await asyncio.gather(*(one(i) for i in range(services)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = await client.list_services(
            ListServiceParam(namespace_id="public", page_no=1, page_size=10)
        )
        if int(listed.count or 0) >= services:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"Nacos lists {listed.count} services, expected {services}")


async def reference_sync(server_addr: str, work: Path, services: int) -> float:
    """A bare SDK client: list every page, subscribe to every service, read its instances."""
    from v2.nacos import ListInstanceParam, ListServiceParam, SubscribeServiceParam

    started = time.monotonic()
    client = await sdk_client(server_addr, work)
    try:
        names: list[str] = []
        page = 1
        while True:
            result = await client.list_services(
                ListServiceParam(namespace_id="public", page_no=page, page_size=500)
            )
            batch = list(result.services or [])
            names += batch
            if not batch or len(names) >= int(result.count or 0):
                break
            page += 1
        limit = asyncio.Semaphore(CONCURRENCY)
        seen = 0

        async def on_push(instances: list[Any]) -> None:
            pass

        async def follow(service: str) -> None:
            nonlocal seen
            async with limit:
                await client.subscribe(
                    SubscribeServiceParam(service_name=service, subscribe_callback=on_push)
                )
                got = await client.list_instances(
                    ListInstanceParam(service_name=service, subscribe=True, healthy_only=None)
                )
                if got:
                    seen += 1

        await asyncio.gather(*(follow(n) for n in names))
        elapsed = time.monotonic() - started
        if seen < services:
            raise RuntimeError(f"reference saw {seen} services with instances, expected {services}")
        return elapsed
    finally:
        await client.shutdown()
        quiet_sdk_logs()


def quiet_sdk_logs() -> None:
    # The SDK adds a file handler to the shared "naming" logger and never removes it.
    logger = logging.getLogger("naming")
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


class Tap:
    """Arrival time and instance count of every state the agent puts on NATS, per service."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[float, int]]] = {}
        self.changed = asyncio.Event()
        self._nc: Any = None

    async def start(self, url: str, cluster: str) -> None:
        loop = asyncio.get_running_loop()

        async def on_msg(msg: Any) -> None:
            state = decode_service_state(msg.data)
            self.seen.setdefault(state.source_name, []).append((loop.time(), len(state.instances)))
            self.changed.set()

        self._nc = await nats.connect(url)
        await self._nc.subscribe(subjects.cluster_service_wildcard(cluster), cb=on_msg)
        await self._nc.flush()

    async def stop(self) -> None:
        await self._nc.close()

    async def wait(self, service: str, after: float, count: int, deadline: float) -> float | None:
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            for at, n in self.seen.get(service, ()):
                if at >= after and n == count:
                    return at
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                break
        return None


async def push_latency(
    server_addr: str,
    work: Path,
    tap: Tap,
    services: int,
    instances: int,
    changes: int,
) -> tuple[list[float], list[float]]:
    """Add/remove one instance of random services; agent-on-NATS and reference push times.

    The extra instance comes from a client of its own: a Nacos 2 client publishes one
    instance per service (a ``register_instance`` from the batch client would replace
    its three)."""
    from v2.nacos import DeregisterInstanceParam, SubscribeServiceParam

    loop = asyncio.get_running_loop()
    rng = random.Random(9)
    chosen = rng.sample(range(services), min(changes, services))
    watcher = await sdk_client(server_addr, work / "watcher")
    writer = await sdk_client(server_addr, work / "writer-2")
    pushes: dict[str, list[tuple[float, int]]] = {}
    arrived = asyncio.Event()
    try:
        for i in chosen:
            pushes[name(i)] = []

            async def on_push(got: list[Any], service: str = name(i)) -> None:
                pushes[service].append((loop.time(), len(got or ())))
                arrived.set()

            await watcher.subscribe(
                SubscribeServiceParam(service_name=name(i), subscribe_callback=on_push)
            )
        await asyncio.sleep(1.0)
        agent_ms: list[float] = []
        ref_ms: list[float] = []
        for k in range(changes):
            i = chosen[k % len(chosen)]
            add = (k // len(chosen)) % 2 == 0
            extra = instance_param(i, instances)
            if add:
                await writer.register_instance(extra)
                want = instances + 1
            else:
                await writer.deregister_instance(
                    DeregisterInstanceParam(service_name=name(i), ip=extra.ip, port=extra.port)
                )
                want = instances
            t0 = loop.time()
            deadline = t0 + TIMEOUT_S

            async def ref_wait(
                service: str = name(i), want: int = want, t0: float = t0, deadline: float = deadline
            ) -> float | None:
                while loop.time() < deadline:
                    for at, n in pushes[service]:
                        if at >= t0 - 0.05 and n == want:
                            return at
                    arrived.clear()
                    try:
                        await asyncio.wait_for(arrived.wait(), max(0.0, deadline - loop.time()))
                    except TimeoutError:
                        break
                return None

            at_agent, at_ref = await asyncio.gather(
                tap.wait(name(i), t0 - 0.05, want, deadline), ref_wait()
            )
            agent_ms.append(math.inf if at_agent is None else (at_agent - t0) * 1000)
            ref_ms.append(math.inf if at_ref is None else (at_ref - t0) * 1000)
            await asyncio.sleep(0.1)
        return agent_ms, ref_ms
    finally:
        await watcher.shutdown()
        await writer.shutdown()
        quiet_sdk_logs()


async def run_agent(
    work: Path, nacos_addr: str, grpc_port: int, nats_url: str, services: int, round_: int
) -> tuple[ManagedProcess, float, int, str]:
    metrics_port = free_port()
    config = work / f"edge-{round_}.toml"
    config.write_text(
        f'cluster = "{CLUSTER}{round_}"\nmetrics_port = {metrics_port}\n'
        f'[nats]\nservers = ["{nats_url}"]\n'
        f'[source]\nkind = "nacos"\n[source.nacos]\nserver_addr = "{nacos_addr}"\n'
        f'work_dir = "{work / f"agent-sdk-{round_}"}"\n'
    )
    agent = ManagedProcess(
        "edge-agent",
        [sys.executable, "-m", "syncmesh_app", "--log-level", "WARNING", "edge", "--config",
         str(config)],
        work / f"agent-{round_}.log",
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    max_conns = 0
    started = time.monotonic()
    agent.start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:

        async def synced() -> bool:
            nonlocal max_conns
            if not agent.alive():
                raise agent.fail(f"agent exited with {agent.returncode}")
            stats = ProcStats(agent.pid)
            max_conns = max(max_conns, stats.tcp_connections(grpc_port))
            published = await metric(http, url, 'syncmesh_edge_published_total{kind="service"}')
            return published >= services

        # Every 100 ms: each scrape of /metrics costs the agent CPU during the sync.
        await wait_until(synced, 600, interval=0.1, what="initial sync")
    return agent, time.monotonic() - started, max_conns, url


async def main(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="edge-nacos-bench-"))
    say(f"load average {load_average():.2f}")
    # The agent starts as deployed: bytecode compiled once, not at every start.
    say(f"bytecode up to date in {bytecode.ensure():.1f}s")
    rounds: dict[str, list[float]] = {}
    async with (
        nacos_server(workdir=work / "nacos") as nacos,
        nats_server(workdir=work / "nats") as peer,
    ):
        say(f"Nacos {nacos.version} up in {nacos.startup_seconds:.1f}s")
        writer = await sdk_client(nacos.server_addr, work / "writer")
        try:
            t0 = time.monotonic()
            await register(writer, args.services, args.instances)
            say(f"registered {args.services} services x {args.instances} instances in "
                f"{time.monotonic() - t0:.1f}s")  # fmt: skip
            agent = None
            url = ""
            for r in range(args.rounds):
                ref_s = await reference_sync(nacos.server_addr, work / f"ref-{r}", args.services)
                rounds.setdefault("ref_sync_s", []).append(ref_s)
                if agent is not None:
                    await agent.stop()
                agent, sync_s, conns, url = await run_agent(
                    work, nacos.server_addr, nacos.grpc_port, peer.url, args.services, r
                )
                rounds.setdefault("initial_sync_s", []).append(sync_s)
                rounds.setdefault("nacos_conns", []).append(conns)
                say(f"round {r + 1}: agent initial sync {sync_s:.2f}s (load "
                    f"{load_average():.2f}); bare SDK client {ref_s:.2f}s")  # fmt: skip
            assert agent is not None
            stats = ProcStats(agent.pid)
            await asyncio.sleep(2.0)
            sizes = {
                "threads": stats.threads(),
                "sockets": stats.sockets(),
                "rss_mb": stats.rss_mb(),
                "peak_rss_mb": stats.hwm_mb(),
            }
            cpu0, t_0 = stats.cpu_s(), time.monotonic()
            await asyncio.sleep(10.0)
            idle_cpu = (stats.cpu_s() - cpu0) / (time.monotonic() - t_0) * 100
            async with aiohttp.ClientSession() as http:
                pending = await metric(http, url, "syncmesh_edge_pending_publishes")
            tap = Tap()
            await tap.start(peer.url, f"{CLUSTER}{args.rounds - 1}")
            try:
                agent_ms, ref_ms = await push_latency(
                    nacos.server_addr, work, tap, args.services, args.instances,
                    args.changes,
                )  # fmt: skip
            finally:
                await tap.stop()
            await agent.stop()
        finally:
            await writer.shutdown()
            quiet_sdk_logs()
    shutil.rmtree(work, ignore_errors=True)
    say("rounds min/median/max:")
    for key, values in rounds.items():
        say(f"  {key:16s} {spread(values)}")
    say(f"  agent after sync: {sizes['threads']} threads, {sizes['sockets']} sockets, "
        f"RSS {sizes['rss_mb']:.1f} MB (peak {sizes['peak_rss_mb']:.1f}), idle CPU "
        f"{idle_cpu:.2f}%, pending publishes {pending:.0f}")  # fmt: skip
    for label, values in (("agent (Nacos -> NATS)", agent_ms), ("reference SDK push", ref_ms)):
        failed = sum(1 for v in values if math.isinf(v))
        say(f"  push latency {label}: n={len(values)} min={min(values):.1f} "
            f"p50={percentile(values, 50):.1f} p90={percentile(values, 90):.1f} "
            f"p99={percentile(values, 99):.1f} max={max(values):.1f} ms failed={failed}")  # fmt: skip
    sync_s, ref_s = median(rounds["initial_sync_s"]), median(rounds["ref_sync_s"])
    return (
        f"services={args.services} instances={args.services * args.instances} "
        f"initial_sync_s={sync_s:.2f} ref_sync_s={ref_s:.2f} ratio_vs_ref={sync_s / ref_s:.2f} "
        f"threads={sizes['threads']} sockets={sizes['sockets']} "
        f"max_nacos_conns={max(rounds['nacos_conns']):.0f} rss_mb={sizes['rss_mb']:.0f} "
        f"idle_cpu_pct={idle_cpu:.2f} push_p50_ms={percentile(agent_ms, 50):.1f} "
        f"push_p99_ms={percentile(agent_ms, 99):.1f} ref_push_p50_ms={percentile(ref_ms, 50):.1f} "
        f"ref_push_p99_ms={percentile(ref_ms, 99):.1f} "
        f"push_failures={sum(1 for v in agent_ms if math.isinf(v))}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changes", type=int, default=100)
    print(asyncio.run(main(parser.parse_args())), flush=True)
