"""Cold-start ingest benchmark of the global registry against a real nats-server.

Publishes an epoch claim per cluster (schema v2: every epoch is the stream
sequence of the cluster's ``EpochClaim``), then CLUSTERS x SERVICES service
states (INSTANCES instances each) and one beat per cluster into the state
stream. Then, in ``--rounds`` interleaved rounds: the stock nats-py ordered
push consumer reading the whole stream and only counting messages (the
reference), and a registry replica in a fresh subprocess, timed from
subscribing to caught up with the stream (rebuild) and from spawning the
process to ready; its peak RSS. The spread (min/median/max) of the rounds is
printed; the last line has the medians::

    .venv/bin/python bench/registry_ingest.py [--clusters 100 --services 1000 --instances 5] [--rounds 3]

    rebuild_s=... states_per_s=... peak_rss_mb=... ref_ordered_consumer_states_per_s=... ratio_vs_ref=...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import claim_epoch, median, reference_consumer, spread  # noqa: E402
from dns_server.config import DnsConfig  # noqa: E402
from global_registry.config import ApiConfig  # noqa: E402
from harness.nats_peer import nats_server  # noqa: E402
from syncmesh import subjects  # noqa: E402
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import (  # noqa: E402
    SCHEMA_VERSION,
    ClusterBeat,
    Gateway,
    Instance,
    Locality,
    ServiceState,
    encode,
)
from syncmesh_app.registry import RegistryApp  # noqa: E402
from syncmesh_app.registry_config import RegistryConfig  # noqa: E402
from syncmesh_io.nats_connection import ensure_stream  # noqa: E402

GOAL_STATES_PER_S = 40_000
GOAL_REBUILD_S = 5.0
GOAL_RSS_MB = 1000


def service_state(cluster: int, service: int, instances: int, epoch: int) -> ServiceState:
    return ServiceState(
        schema=SCHEMA_VERSION,
        cluster=f"c{cluster:03d}",
        namespace="default",
        service=f"svc-{service:04d}",
        epoch=epoch,
        revision=service + 2,
        source="consul",
        source_name=f"svc-{service:04d}",
        instances=[
            Instance(
                id=f"svc-{service:04d}-{i}",
                address=f"10.{cluster % 250}.{service % 250}.{i + 1}",
                port=8080,
                health="passing" if i else "warning",
                zone=f"z{i % 3}",
                meta={"version": "v1", "team": "bench"},
            )
            for i in range(instances)
        ],
    )


def cluster_beat(cluster: int, gateway_port: int, epoch: int) -> ClusterBeat:
    return ClusterBeat(
        schema=SCHEMA_VERSION,
        cluster=f"c{cluster:03d}",
        epoch=epoch,
        revision=1,
        interval_s=3600.0,
        gateways=[Gateway(address="127.0.0.1", port=gateway_port)],
        locality=Locality(region=f"r{cluster % 5}", zone=f"r{cluster % 5}-z{cluster % 3}"),
        client_cidrs=[f"10.{cluster % 250}.0.0/16"],
        agent_version="bench",
        services=1000,
    )


async def publish(url: str, clusters: int, services: int, instances: int, gateway_port: int) -> int:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_stream(js)
    epochs = [await claim_epoch(js, f"c{c:03d}") for c in range(clusters)]
    sent = 0
    for c in range(clusters):
        beat = cluster_beat(c, gateway_port, epochs[c])
        await nc.publish(
            subjects.cluster_subject(beat.cluster),
            encode(beat),
            headers={"Nats-Msg-Id": subjects.msg_id(beat.cluster, beat.epoch, beat.revision)},
        )
        for s in range(services):
            state = service_state(c, s, instances, epochs[c])
            await nc.publish(
                subjects.service_subject(state.cluster, state.namespace, state.service),
                encode(state),
                headers={
                    "Nats-Msg-Id": subjects.msg_id(state.cluster, state.epoch, state.revision)
                },
            )
        sent += services + 1
        await nc.flush()
    expected = clusters * (services + 2)
    deadline = time.monotonic() + 60
    while True:
        info = await js.stream_info(subjects.STREAM)
        if info.state.messages >= expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    await nc.close()
    if info.state.messages != expected:
        raise SystemExit(f"stream holds {info.state.messages} messages, expected {expected}")
    return int(info.state.bytes)


async def child(url: str) -> None:
    """The registry replica under test, in its own process (for an honest peak RSS)."""
    config = RegistryConfig(
        nats=NatsConfig(servers=[url]),
        admin_port=0,
        dns=DnsConfig(enabled=False),
        api=ApiConfig(enabled=False),
    )
    started = time.perf_counter()
    async with RegistryApp(config) as app:
        await asyncio.wait_for(app.wait_ready(), 300)
        ready_s = time.perf_counter() - started
        catchup_s = (
            app.collector_registry.get_sample_value("syncmesh_registry_catchup_seconds") or 0.0
        )
        print(
            json.dumps(
                {
                    "services": app.view.service_count(),
                    "instances": app.view.instance_count,
                    "clusters": len(app.view.clusters),
                    "catchup_s": catchup_s,
                    "ready_s": ready_s,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "cpu_s": time.process_time(),
                }
            ),
            flush=True,
        )


async def gateway_listener() -> asyncio.Server:
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    return await asyncio.start_server(accept, "127.0.0.1", 0)


async def main(args: argparse.Namespace) -> None:
    states = args.clusters * args.services
    with tempfile.TemporaryDirectory(prefix="syncmesh-bench-") as tmp:
        async with nats_server(workdir=Path(tmp)) as peer:
            gateway = await gateway_listener()
            port = gateway.sockets[0].getsockname()[1]
            t0 = time.perf_counter()
            stream_bytes = await publish(
                peer.url, args.clusters, args.services, args.instances, port
            )
            print(
                f"published {states} service states + {args.clusters} beats "
                f"({stream_bytes / 1e6:.1f} MB in the stream) in {time.perf_counter() - t0:.1f}s",
                flush=True,
            )
            messages = states + 2 * args.clusters
            rounds: dict[str, list[float]] = {}
            for r in range(args.rounds):
                ref_s = await reference_consumer(peer.url, messages, timeout=120)
                rounds.setdefault("ref_states_per_s", []).append(states / ref_s)
                result, spawn_to_ready_s = await run_child(peer.url)
                if result["services"] != states:
                    raise SystemExit(
                        f"registry holds {result['services']} services, expected {states}"
                    )
                rounds.setdefault("rebuild_s", []).append(result["catchup_s"])
                rounds.setdefault("states_per_s", []).append(states / result["catchup_s"])
                rounds.setdefault("ready_s", []).append(result["ready_s"])
                rounds.setdefault("spawn_to_ready_s", []).append(spawn_to_ready_s)
                rounds.setdefault("peak_rss_mb", []).append(result["peak_rss_mb"])
                rounds.setdefault("cpu_s", []).append(result["cpu_s"])
                print(
                    f"round {r + 1}: registry caught up in {result['catchup_s']:.2f}s "
                    f"({states / result['catchup_s']:,.0f} states/s), ready after "
                    f"{result['ready_s']:.2f}s, {spawn_to_ready_s:.2f}s from spawning the "
                    f"process; peak RSS {result['peak_rss_mb']:.0f} MB; stock ordered consumer "
                    f"{ref_s:.2f}s ({states / ref_s:,.0f} states/s); load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
            gateway.close()
            print("rounds min/median/max:")
            for key, values in rounds.items():
                print(f"  {key:18s} {spread(values, '{:,.4g}')}")
            m = {k: median(v) for k, v in rounds.items()}
            met = (
                m["states_per_s"] >= GOAL_STATES_PER_S
                and m["rebuild_s"] <= GOAL_REBUILD_S
                and m["peak_rss_mb"] <= GOAL_RSS_MB
            )
            print(
                f"rebuild_s={m['rebuild_s']:.2f} states_per_s={m['states_per_s']:.0f} "
                f"peak_rss_mb={m['peak_rss_mb']:.0f} "
                f"ref_ordered_consumer_states_per_s={m['ref_states_per_s']:.0f} "
                f"ratio_vs_ref={m['states_per_s'] / m['ref_states_per_s']:.2f} "
                f"spawn_to_ready_s={m['spawn_to_ready_s']:.2f} goal_met={'yes' if met else 'no'}"
            )


async def run_child(url: str) -> tuple[dict[str, float], float]:
    spawned = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        url,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 600)
    spawn_to_ready_s = time.perf_counter() - spawned
    proc.terminate()
    await proc.wait()
    return json.loads(line), spawn_to_ready_s


def stream_arguments(doc: str | None) -> argparse.ArgumentParser:
    """The options of a bench that publishes this stream and reads it in rounds, each
    reader in a child process (``--child``)."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", metavar="NATS_URL", help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    arguments = stream_arguments(__doc__).parse_args()
    if arguments.child:
        # The event loop the registry runs on (``syncmesh registry``: ops/process.py).
        import uvloop

        uvloop.run(child(arguments.child))
    else:
        asyncio.run(main(arguments))
