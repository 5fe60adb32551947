"""syncmesh DNS next to Consul's own DNS interface and NSD, on the same service set, in one run.

- Consul 1.14.11 (the harness's ``consul agent -dev``, stock DNS settings) holds the
  services of one cluster of the scale inventory (``--size`` states over 100 clusters;
  cluster ``c000`` has size/100 services x 3-10 instances), registered through
  ``/v1/txn`` with a passing check each; asked ``<svc>.service.consul`` A on
  ``ConsulPeer.dns_port``.
- syncmesh: a registry process (``python -m syncmesh_app registry``) holding the
  whole inventory of ``--size`` states from a real nats-server; asked
  ``<svc>.<ns>.svc.syncmesh.internal`` A for the same services (the client
  127.0.0.1 is in ``c000``'s client CIDRs, so the answer is c000's gateways).
- NSD 4 serving a static zone of exactly the answers syncmesh gave: the ceiling.
- CoreDNS 1.11.3 (``file`` plugin, same zone): built once from the Go module proxy
  with ``go install`` into the syncmesh cache (about 2 minutes on 2 cores), or a
  binary given with ``--coredns PATH``; ``--coredns none`` leaves it out, and a
  failed build leaves it out with a message.

Same query file shape for every server: A questions over that cluster's
services with Zipf popularity (s = 1), EDNS on. dnsperf on one core: max QPS
(no ``-Q``) and p99 at each ``--fixed-qps`` (lost queries count as the 2 s
timeout), ``--rounds`` interleaved rounds, spread printed, medians compared.
Consul answers every instance (3-10 A records) where syncmesh and NSD answer the
cluster's 1-2 gateways: the response sizes differ and are printed.

    .venv/bin/python bench/dns_compare.py [--size 100000] [--rounds 3] [--seconds 4]

The last line: ``syncmesh_qps=… consul_qps=… nsd_qps=… ratio_vs_consul=… ratio_vs_nsd=…
p99_ms_at_<q>=… …``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    CLIENT,
    ZONE,
    DnsRun,
    Zipf,
    ask_all,
    dnsperf,
    ensure_tools,
    free_udp_tcp_port,
    gateway_listeners,
    load_average,
    median,
    say,
    spread,
    start_nsd,
    stop,
    wait_answering,
    wire_query,
    write_binary_queries,
    zone_of,
)
from bench.scale_inventory import Inventory, publish_inventory  # noqa: E402
from bench.scale_registry import spawn_registry  # noqa: E402
from harness.consul_peer import consul_agent  # noqa: E402
from harness.nats_peer import nats_server  # noqa: E402
from syncmesh_app.embedded.process import dying_with_parent  # noqa: E402
from syncmesh_io.nats_connection import ensure_stream  # noqa: E402

TXN_OPS = 64
CLUSTER = 0


async def register_cluster(http_url: str, inv: Inventory) -> int:
    """Every instance of cluster c000 as a Consul service instance with a passing check."""
    nodes: dict[str, str] = {}
    ops: list[dict[str, Any]] = []
    instances = 0
    for s in range(inv.per_cluster):
        state = inv.state(CLUSTER, s, 1)
        for inst in state.instances:
            node, sid = inst.id.split("/", 1)
            nodes.setdefault(node, f"127.0.{len(nodes) // 250}.{len(nodes) % 250 + 1}")
            ops.append(
                {
                    "Service": {
                        "Verb": "set",
                        "Node": node,
                        "Service": {
                            "ID": sid,
                            "Service": state.service,
                            "Address": inst.address,
                            "Port": inst.port,
                        },
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
                            "ServiceName": state.service,
                        },
                    }
                }
            )
            instances += 1
    node_ops = [
        {"Node": {"Verb": "set", "Node": {"Node": n, "Address": a}}} for n, a in nodes.items()
    ]
    limit = asyncio.Semaphore(8)
    async with aiohttp.ClientSession(http_url) as http:

        async def put(chunk: list[dict[str, Any]]) -> None:
            async with limit, http.put("/v1/txn", json=chunk) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"txn failed: HTTP {resp.status} {await resp.text()}")

        for i in range(0, len(node_ops), TXN_OPS):
            await put(node_ops[i : i + TXN_OPS])
        await asyncio.gather(*(put(ops[i : i + TXN_OPS]) for i in range(0, len(ops), TXN_OPS)))
        async with http.get("/v1/catalog/services") as resp:
            listed = await resp.json()
    if sum(1 for n in listed if n.startswith("svc")) != inv.per_cluster:
        raise RuntimeError(f"Consul lists {len(listed)} services, expected {inv.per_cluster}")
    return instances


COREDNS_VERSION = "v1.11.3"


def ensure_coredns() -> str | None:
    """The cached CoreDNS binary, built with ``go install`` the first time (None if that fails)."""
    import shutil

    from syncmesh_app.embedded.process import cache_dir

    target = cache_dir() / f"coredns-{COREDNS_VERSION}"
    binary = target / "coredns"
    if binary.exists():
        return str(binary)
    go = shutil.which("go") or "/usr/local/go/bin/go"
    say(f"building CoreDNS {COREDNS_VERSION} from the Go module proxy (once) ...")
    started = time.monotonic()
    try:
        subprocess.run(
            [go, "install", f"github.com/coredns/coredns@{COREDNS_VERSION}"],
            env={**os.environ, "GOBIN": str(target), "GOFLAGS": "-buildvcs=false"},
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        say(f"CoreDNS not built ({type(exc).__name__}); compared without it")
        return None
    say(f"CoreDNS built in {time.monotonic() - started:.0f}s")
    return str(binary)


def coredns_config(workdir: Path, port: int, zone_file: Path) -> Path:
    path = workdir / "Corefile"
    path.write_text(f"{ZONE} {{\n    bind {CLIENT}\n    file {zone_file}\n}}\n")
    return path


async def main(args: argparse.Namespace) -> str:
    ensure_tools()
    inv = Inventory(args.size)
    names = [
        (inv.namespace(inv.name_id(CLUSTER, s)), inv.service(inv.name_id(CLUSTER, s)))
        for s in range(inv.per_cluster)
    ]
    rng = random.Random(31)
    order = list(range(len(names)))
    rng.shuffle(order)
    zipf = Zipf(len(names), 1.0, rng)
    picks = [order[zipf.draw()] for _ in range(args.queries)]
    say(f"load average {load_average():.2f}; {len(names)} services of cluster c000, "
        f"{args.size:,} states in syncmesh")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="syncmesh-dns-compare-") as tmp:
        work = Path(tmp)
        syncmesh_file, consul_file = work / "syncmesh.bin", work / "consul.bin"
        write_binary_queries(
            syncmesh_file,
            (wire_query(f"{names[i][1]}.{names[i][0]}.svc.{ZONE}", "A") for i in picks),
        )
        write_binary_queries(
            consul_file, (wire_query(f"{names[i][1]}.service.consul.", "A") for i in picks)
        )
        async with (
            consul_agent(workdir=work / "consul") as consul,
            nats_server(workdir=work / "nats") as peer,
            gateway_listeners(inv.gateway_addresses()) as gateway_port,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        ):
            t0 = time.monotonic()
            instances = await register_cluster(consul.http_url, inv)
            say(f"Consul: {len(names)} services, {instances} instances registered in "
                f"{time.monotonic() - t0:.1f}s")  # fmt: skip
            nc = await nats.connect(peer.url)
            js = nc.jetstream()
            await ensure_stream(js)
            await publish_inventory(js, nc, inv, gateway_port)
            await nc.close()
            extra = Path(args.registry_toml).read_text() if args.registry_toml else ""
            reg = await spawn_registry(work, peer.url, "registry", extra)
            ready_s = await reg.wait_ready(http)
            say(f"syncmesh registry ready {ready_s:.2f}s after spawn")
            questions = [(ZONE, "SOA"), (ZONE, "NS")] + [
                (f"{ns_svc[1]}.{ns_svc[0]}.svc.{ZONE}", "A") for ns_svc in names
            ]
            zone_text, records = zone_of(await ask_all(reg.dns_port, questions))
            nsd_port = free_udp_tcp_port()
            nsd = start_nsd(work / "nsd", nsd_port, zone_text)
            servers: dict[str, tuple[int, Path]] = {
                "syncmesh": (reg.dns_port, syncmesh_file),
                "consul": (consul.dns_port, consul_file),
                "nsd": (nsd_port, syncmesh_file),
            }
            coredns = None
            binary = None
            if args.coredns == "auto":
                binary = await asyncio.to_thread(ensure_coredns)
            elif args.coredns != "none":
                binary = args.coredns
            if binary:
                core_port = free_udp_tcp_port()
                (work / "coredns").mkdir()
                (work / "coredns" / "zone").write_text(zone_text)
                corefile = coredns_config(work / "coredns", core_port, work / "coredns" / "zone")
                argv, preexec = dying_with_parent(
                    [binary, "-conf", str(corefile), "-dns.port", str(core_port), "-quiet"]
                )
                coredns = subprocess.Popen(
                    argv,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=preexec,  # noqa: PLW1509 - only without setpriv
                )
                servers["coredns"] = (core_port, syncmesh_file)
            results: dict[str, dict[str, list[float]]] = {k: {} for k in servers}
            try:
                await asyncio.to_thread(wait_answering, nsd_port, 120)
                if coredns is not None:
                    await asyncio.to_thread(wait_answering, servers["coredns"][0], 60)
                say(f"NSD zone: {records} records")
                for name, (port, path) in servers.items():
                    warm = await asyncio.to_thread(dnsperf, port, path, 2)
                    say(f"warm-up {name}: {warm.qps:,.0f} qps")
                for r in range(args.rounds):
                    say(f"round {r + 1} (load {load_average():.2f})")
                    for name, (port, path) in servers.items():
                        peak: DnsRun = await asyncio.to_thread(dnsperf, port, path, args.seconds)
                        line = f"  {name:9s} max {peak.qps:9,.0f} qps lost {peak.lost_pct:5.2f}%"
                        results[name].setdefault("qps", []).append(peak.qps)
                        for q in args.fixed_qps:
                            fixed = await asyncio.to_thread(
                                dnsperf, port, path, args.seconds, q, True
                            )
                            results[name].setdefault(f"p99_{q}", []).append(fixed.p99_ms)
                            results[name].setdefault(f"lost_{q}", []).append(fixed.lost_pct)
                            line += (
                                f" | at {q:,}: {fixed.qps:,.0f} qps p99 {fixed.p99_ms:.3f} ms "
                                f"lost {fixed.lost_pct:.2f}%"
                            )
                        say(line)
                sizes = await response_sizes(servers, names)
            finally:
                stop(nsd)
                stop(coredns)
                await reg.stop()
    say("rounds min/median/max:")
    for name, figures in results.items():
        for key, values in figures.items():
            say(f"  {name:9s} {key:10s} {spread(values, '{:,.4g}')}")
    for name, size in sizes.items():
        say(f"  {name:9s} mean response {size:.0f} bytes")
    med = {n: {k: median(v) for k, v in f.items()} for n, f in results.items()}
    fields = {
        "services": len(names),
        "states": inv.clusters * inv.per_cluster,
        "syncmesh_qps": f"{med['syncmesh']['qps']:.0f}",
        "consul_qps": f"{med['consul']['qps']:.0f}",
        "nsd_qps": f"{med['nsd']['qps']:.0f}",
        "ratio_vs_consul": f"{med['syncmesh']['qps'] / med['consul']['qps']:.2f}",
        "ratio_vs_nsd": f"{med['syncmesh']['qps'] / med['nsd']['qps']:.2f}",
    }
    if "coredns" in med:
        fields["coredns_qps"] = f"{med['coredns']['qps']:.0f}"
        fields["ratio_vs_coredns"] = f"{med['syncmesh']['qps'] / med['coredns']['qps']:.2f}"
    for q in args.fixed_qps:
        for name in servers:
            fields[f"{name}_p99_ms_at_{q}"] = f"{med[name][f'p99_{q}']:.3f}"
        fields[f"p99_ratio_vs_nsd_at_{q}"] = (
            f"{med['syncmesh'][f'p99_{q}'] / med['nsd'][f'p99_{q}']:.2f}"
        )
        fields[f"p99_ratio_vs_consul_at_{q}"] = (
            f"{med['syncmesh'][f'p99_{q}'] / med['consul'][f'p99_{q}']:.2f}"
        )
    return " ".join(f"{k}={v}" for k, v in fields.items())


async def response_sizes(
    servers: dict[str, tuple[int, Path]], names: list[tuple[str, str]]
) -> dict[str, float]:
    """Mean response size over 50 of the names, per server."""
    sample = names[:50]
    out = {}
    for name, (port, _) in servers.items():
        if name == "consul":
            questions = [(f"{svc}.service.consul.", "A") for _, svc in sample]
        else:
            questions = [(f"{svc}.{ns}.svc.{ZONE}", "A") for ns, svc in sample]
        replies = await ask_all(port, questions)
        out[name] = sum(len(r) for r in replies.values()) / len(replies)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=100_000, help="states in syncmesh")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument(
        "--fixed-qps",
        default="50000,5000",
        type=lambda v: [int(x) for x in v.split(",")],
        help="offered loads of the p99 runs, the same for every server",
    )
    parser.add_argument(
        "--registry-toml",
        metavar="FILE",
        help="diagnostics: TOML appended to the registry's config (default: none, stock settings)",
    )
    parser.add_argument(
        "--coredns",
        default="auto",
        metavar="auto|none|BINARY",
        help="CoreDNS (file plugin): auto = build once from the Go module proxy",
    )
    print(asyncio.run(main(parser.parse_args())), flush=True)
