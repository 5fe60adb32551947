"""Queries per second and p99 latency of the syncmesh DNS layer against NSD.

What it measures: the DNS layer only (``dns_server`` with its answer cache,
in its own process on uvloop), fed by the registry's real ``RegistryView``
built from sample messages (``harness.view_feed``); no NATS, no probes
running. NSD serves a static zone generated from the same view, so both
answer the same questions with the same records.

Usage (root; installs dnsperf and nsd from Debian when missing)::

    .venv/bin/python bench/dns_qps.py [--seconds 10] [--rounds 3] [--services 500] [--mixed-case]

``--mixed-case`` asks every name in random case, as a resolver doing 0x20 does.

Each server gets a throughput run (dnsperf, no per-query output) and a
latency run (``dnsperf -v -Q <--latency-qps>``, p99 from the per-query
latencies) at the same offered load for both servers, and a latency run at
saturation (``p99_saturated_ratio_vs_nsd``: there p99 is mostly queue depth
over rate, so it restates the throughput ratio), in
``--rounds`` interleaved rounds; the best of each counts. The last line
is ``qps_ratio_vs_nsd=… p99_ratio_vs_nsd=… syncmesh_qps=… nsd_qps=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dnslib import QTYPE, DNSRecord

from bench.common import start_nsd
from dns_server.config import DnsConfig
from dns_server.core.resolver import Resolver
from global_registry.core.view import RegistryView
from harness.view_feed import ViewFeed
from syncmesh.schema import Gateway
from syncmesh.view_api import ServiceKey

ZONE = "syncmesh.internal."
CLIENT = "127.0.0.1"


def build_view(services: int) -> tuple[RegistryView, list[ServiceKey]]:
    """Three clusters; the bench client (127.0.0.1) is in ``east``."""
    feed = ViewFeed()
    feed.cluster(
        "east",
        [Gateway(address=f"10.1.0.{i}", port=443, weight=100) for i in range(1, 4)],
        ["127.0.0.0/8"],
        region="eu",
        zone="eu-1",
        rtt_ms=0.4,
    )
    feed.cluster(
        "west",
        [Gateway(address="10.2.0.1", port=443), Gateway(address="fd00::2:1", port=443)],
        ["10.2.0.0/16"],
        region="eu",
        zone="eu-2",
        rtt_ms=3.0,
    )
    feed.cluster(
        "north",
        [Gateway(address="fd00::3:1", port=8443)],
        ["10.3.0.0/16"],
        region="us",
        rtt_ms=40.0,
    )
    keys: list[ServiceKey] = []
    for i in range(services):
        key = ServiceKey("default" if i % 3 == 0 else f"team{i % 7}", f"svc{i}")
        keys.append(key)
        for cluster in ("east", "west", "north")[: 1 + i % 3]:
            feed.service(key, cluster, healthy=2)
    return feed.view, keys


def questions(keys: list[ServiceKey]) -> list[tuple[str, str]]:
    """Mostly A, as real clients ask; some SRV, AAAA, TXT and unknown names."""
    rng = random.Random(7)
    out: list[tuple[str, str]] = []
    for key in keys:
        name = f"{key.service}.{key.namespace}.svc.{ZONE}"
        out += [(name, "A")] * 6 + [(name, "SRV"), (name, "AAAA"), (name, "TXT")]
        out.append((f"missing-{key.service}.{key.namespace}.svc.{ZONE}", "A"))
    rng.shuffle(out)
    return out


def mixed_case(name: str, rng: random.Random) -> str:
    """``name`` with each letter upper-cased at random (one draw per line of the
    query file: dnsperf sends a line as written, so each line's case stays
    fixed, and every spelling but the lower-case one takes the 0x20 splice)."""
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


def zone_text(view: RegistryView, asked: list[tuple[str, str]], config: DnsConfig) -> str:
    """The records syncmesh answers to the bench client, as a zone file for NSD."""
    resolver = Resolver(config, serial=1)
    client_class = view.client_class(__import__("ipaddress").ip_address(CLIENT))
    lines: dict[str, None] = {}
    for name, rtype in [(ZONE, "SOA"), (ZONE, "NS")] + sorted(set(asked)):
        wire = b"".join(bytes((len(p),)) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
        answer = resolver.answer(wire, getattr(QTYPE, rtype), 1, client_class, view)
        for rr in answer.answers + answer.additional:
            lines[rr.toZone()] = None
    return "$ORIGIN " + ZONE + "\n" + "\n".join(lines) + "\n"


def ensure_tools() -> None:
    if shutil.which("dnsperf") and (shutil.which("nsd") or os.path.exists("/usr/sbin/nsd")):
        return
    subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "dnsperf", "nsd"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind((CLIENT, 0))
            port = u.getsockname()[1]
            try:
                t.bind((CLIENT, port))
            except OSError:
                continue
            return int(port)


def wait_answering(port: int, timeout: float = 20.0) -> None:
    query = (
        bytes.fromhex("abcd01000001000000000000") + b"\x08syncmesh\x08internal\x00\x00\x06\x00\x01"
    )
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(query, (CLIENT, port))
            try:
                if s.recv(4096)[:2] == query[:2]:
                    return
            except OSError:
                time.sleep(0.1)
    raise RuntimeError(f"no DNS server answering on port {port}")


def ask(port: int, name: str, rtype: str) -> tuple[int, list[str]]:
    query = DNSRecord.question(name, rtype)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(query.pack(), (CLIENT, port))
        reply = DNSRecord.parse(s.recv(65535))
    return reply.header.rcode, sorted(str(rr.rdata) for rr in reply.rr)


def compare(ports: tuple[int, int], asked: list[tuple[str, str]]) -> None:
    """Both servers must give the same rcode and records (order aside)."""
    sample = random.Random(3).sample(sorted(set(asked)), 300)
    differ = [q for q in sample if ask(ports[0], *q) != ask(ports[1], *q)]
    print(
        f"same answers from both servers for {len(sample) - len(differ)}/{len(sample)} questions",
        flush=True,
    )
    if differ:
        raise RuntimeError(f"answers differ, e.g. {differ[:3]}")


def start_syncmesh(port: int, services: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--services", str(services)],
        stdout=subprocess.DEVNULL,
    )


def dnsperf(port: int, datafile: Path, seconds: int, verbose: bool, rate: int = 0) -> str:
    args = ["dnsperf", "-s", CLIENT, "-p", str(port), "-d", str(datafile), "-l", str(seconds)]
    if rate:
        args += ["-Q", str(rate)]
    # One thread (one core) for dnsperf, the other core for the server.
    args += ["-c", "4", "-T", "1", "-q", "200", "-t", "2"]
    if verbose:
        args.append("-v")
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode:
        raise RuntimeError("dnsperf failed: " + done.stderr[-2000:])
    return done.stdout


def qps_of(report: str) -> float:
    match = re.search(r"Queries per second:\s+([0-9.]+)", report)
    if not match:
        raise RuntimeError("no qps in dnsperf output:\n" + report[-2000:])
    return float(match.group(1))


def p99_of(report: str) -> float:
    # ``-v`` prints one line per answer ending with its latency in seconds.
    latencies = sorted(float(m) for m in re.findall(r"^> \S+ .* ([0-9]+\.[0-9]+)$", report, re.M))
    if not latencies:
        raise RuntimeError("no per-query latencies in dnsperf -v output:\n" + report[:2000])
    return latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]


def measure(
    name: str, port: int, datafile: Path, seconds: int, latency_qps: int
) -> tuple[float, float, float]:
    """(max qps, p99 at ``latency_qps`` offered, p99 at saturation) of one server."""
    throughput = dnsperf(port, datafile, seconds, verbose=False)
    short = max(3, seconds // 2)
    at_rate = dnsperf(port, datafile, short, verbose=True, rate=latency_qps)
    saturated = dnsperf(port, datafile, short, verbose=True)
    qps, p99, p99_sat = qps_of(throughput), p99_of(at_rate), p99_of(saturated)
    lost = re.search(r"Queries lost:\s+(\S+)", throughput)
    print(
        f"{name}: qps={qps:.0f} p99_ms={p99 * 1000:.3f} at {qps_of(at_rate):.0f} qps, "
        f"p99_ms={p99_sat * 1000:.3f} saturated at {qps_of(saturated):.0f} qps "
        f"lost={lost.group(1) if lost else '?'}",
        flush=True,
    )
    return qps, p99, p99_sat


def serve(port: int, services: int) -> None:
    """The syncmesh side: its own process, uvloop, answering until SIGTERM."""
    from prometheus_client import CollectorRegistry

    from dns_server.io.server import run, start_dns

    async def main() -> None:
        view, _ = build_view(services)
        server = await start_dns(
            DnsConfig(address=CLIENT, port=port, zone=ZONE), view, CollectorRegistry()
        )
        # As the registry does once caught up: long-lived objects leave the GC's scans.
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.close()

    run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--mixed-case",
        action="store_true",
        help="ask every name in a random mix of upper and lower case, as a resolver "
        "doing 0x20 (Unbound use-caps-for-id) does",
    )
    parser.add_argument(
        "--latency-qps",
        type=int,
        default=50_000,
        help="offered load of the latency runs, the same for both servers",
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.services)
        return
    ensure_tools()
    view, keys = build_view(args.services)
    asked = questions(keys)
    rng = random.Random(20)
    with tempfile.TemporaryDirectory(prefix="syncmesh-dns-bench-") as tmp:
        workdir = Path(tmp)
        datafile = workdir / "queries.txt"
        sent = [(mixed_case(n, rng) if args.mixed_case else n, t) for n, t in asked]
        datafile.write_text("".join(f"{n} {t}\n" for n, t in sent))
        nsd_port, syncmesh_port = free_port(), free_port()
        processes = [
            start_nsd(workdir, nsd_port, zone_text(view, asked, DnsConfig(zone=ZONE))),
            start_syncmesh(syncmesh_port, args.services),
        ]
        try:
            wait_answering(nsd_port)
            wait_answering(syncmesh_port)
            compare((syncmesh_port, nsd_port), asked)
            # Warm-up: the syncmesh cache fills lazily on first miss.
            dnsperf(syncmesh_port, datafile, 2, verbose=False)
            dnsperf(nsd_port, datafile, 2, verbose=False)
            # Interleaved rounds, best of each: other load on the machine hits both alike.
            rounds = [
                (
                    measure("syncmesh", syncmesh_port, datafile, args.seconds, args.latency_qps),
                    measure("nsd", nsd_port, datafile, args.seconds, args.latency_qps),
                )
                for _ in range(args.rounds)
            ]
            s_qps = max(r[0][0] for r in rounds)
            s_p99 = min(r[0][1] for r in rounds)
            s_sat = min(r[0][2] for r in rounds)
            n_qps = max(r[1][0] for r in rounds)
            n_p99 = min(r[1][1] for r in rounds)
            n_sat = min(r[1][2] for r in rounds)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
    print(
        f"qps_ratio_vs_nsd={s_qps / n_qps:.3f} p99_ratio_vs_nsd={s_p99 / n_p99:.3f} "
        f"syncmesh_qps={s_qps:.0f} nsd_qps={n_qps:.0f} p99_saturated_ratio_vs_nsd={s_sat / n_sat:.3f} "
        f"syncmesh_p99_ms={s_p99 * 1000:.3f} nsd_p99_ms={n_p99 * 1000:.3f} latency_qps={args.latency_qps}"
    )


if __name__ == "__main__":
    main()
