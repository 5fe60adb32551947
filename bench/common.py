"""Helpers shared by the benchmarks (not a product module; nothing here is imported by syncmesh).

- ``spread``: min / median / max of a bench's rounds, the one format every bench prints;
- ``ProcStats``: CPU seconds, RSS, threads and sockets of a process, read from /proc;
- ``scrape`` / ``metric_sum``: one Prometheus text exposition, a family summed over its labels;
- ``claim_epoch``: the wire contract's epoch claim (schema v2), for benches that publish
  service states themselves;
- ``gateway_listeners``: TCP listeners the registry's probes can reach;
- ``wire_query`` / ``write_binary_queries``: DNS queries as bytes (0x20 case, EDNS Client
  Subnet) in dnsperf's ``-B`` input format;
- ``Dnsperf``: one dnsperf run, its qps and a p99 that counts lost queries as timeouts;
- ``start_nsd``: NSD 4 on a loopback port serving one zone file.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import shutil
import socket
import statistics
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from syncmesh import subjects
from syncmesh.schema import SCHEMA_VERSION, EpochClaim, encode
from syncmesh_app.embedded.process import dying_with_parent, stop_popen

CLIENT = "127.0.0.1"
ZONE = "syncmesh.internal."
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- reporting --------------------------------------------------------------------------------


def spread(values: Sequence[float], fmt: str = "{:.3g}") -> str:
    """``min/median/max`` of the rounds (``n/a`` when there are none)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return "n/a"
    return "/".join(fmt.format(v) for v in (min(finite), statistics.median(finite), max(finite)))


def median(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank; NaN for no values; ``inf`` entries (failures) sort last."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def load_average() -> float:
    return os.getloadavg()[0]


def say(*parts: object) -> None:
    print(*parts, flush=True)


# -- /proc ------------------------------------------------------------------------------------


@dataclass
class ProcStats:
    pid: int

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def rss_mb(self) -> float:
        return self._status("VmRSS") / 1024

    def hwm_mb(self) -> float:
        return self._status("VmHWM") / 1024

    def threads(self) -> int:
        return self._status("Threads")

    def socket_inodes(self) -> set[str]:
        inodes: set[str] = set()
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{self.pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
        return inodes

    def sockets(self) -> int:
        return len(self.socket_inodes())

    def tcp_connections(self, remote_port: int | None = None) -> int:
        """Established TCP connections of the process (to ``remote_port`` when given)."""
        inodes = self.socket_inodes()
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    fields = line.split()
                    remote, state, inode = fields[2], fields[3], fields[9]
                    if state != "01" or inode not in inodes:
                        continue
                    if remote_port is None or remote.endswith(f":{remote_port:04X}"):
                        count += 1
        return count


# -- Prometheus -------------------------------------------------------------------------------


async def scrape(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as resp:
        return await resp.text()


async def metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    """One sample of a scrape, ``name`` with its labels as exposed (0 when absent)."""
    text = await scrape(http, url)
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def metric_sum(text: str, name: str, labels: str = "") -> float:
    """Sum of every sample of ``name`` (any labels; only those containing ``labels`` if given)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        rest = line[len(name) :]
        if rest[:1] not in (" ", "{"):
            continue
        if labels and labels not in rest:
            continue
        with contextlib.suppress(ValueError):
            total += float(line.rsplit(" ", 1)[1])
    return total


def hit_rate(before: str, after: str) -> float:
    """Answer-cache hit rate between two scrapes of a registry (hits / (hits + misses))."""
    hits = metric_sum(after, "syncmesh_dns_cache_hits_total") - metric_sum(
        before, "syncmesh_dns_cache_hits_total"
    )
    misses = metric_sum(after, "syncmesh_dns_cache_misses_total") - metric_sum(
        before, "syncmesh_dns_cache_misses_total"
    )
    return hits / (hits + misses) if hits + misses > 0 else math.nan


# -- wire contract ----------------------------------------------------------------------------


async def claim_epoch(js: Any, cluster: str, previous_seq: int = 0) -> int:
    """Publish the cluster's ``EpochClaim`` (compare-and-set on its subject); the epoch is
    the stream sequence it was stored at. ``previous_seq`` 0: the subject must be empty."""
    claim = EpochClaim(schema=SCHEMA_VERSION, cluster=cluster, agent="bench", previous=0)
    ack = await js.publish(
        subjects.epoch_subject(cluster),
        encode(claim),
        headers={"Nats-Expected-Last-Subject-Sequence": str(previous_seq)},
    )
    return int(ack.seq)


async def reference_consumer(url: str, expected: int, timeout: float = 300.0) -> float:
    """Seconds for nats-py's stock ordered push consumer to deliver the whole
    stream; the callback only counts (no decode, no apply): the ingest reference."""
    import nats
    from nats.js.api import DeliverPolicy

    nc = await nats.connect(url)
    js = nc.jetstream()
    done = asyncio.Event()
    count = 0

    async def on_message(msg: Any) -> None:
        nonlocal count
        count += 1
        if count >= expected:
            done.set()

    started = time.perf_counter()
    sub = await js.subscribe(
        "syncmesh.v2.>",
        stream=subjects.STREAM,
        cb=on_message,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
        idle_heartbeat=2.0,
    )
    await asyncio.wait_for(done.wait(), timeout)
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    await nc.close()
    return elapsed


async def wait_stream_messages(js: Any, expected: int, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        info = await js.stream_info(subjects.STREAM)
        if info.state.messages >= expected:
            return info
        if time.monotonic() > deadline:
            raise RuntimeError(f"stream holds {info.state.messages} messages, expected {expected}")
        await asyncio.sleep(0.05)


# -- gateways the probes can reach -----------------------------------------------------------


@contextlib.asynccontextmanager
async def gateway_listeners(addresses: Iterable[str], port: int = 0) -> AsyncIterator[int]:
    """A TCP listener on every loopback ``address`` (127.x.y.z), all on one port; yields it."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    servers: list[asyncio.Server] = []
    addresses = list(addresses)
    try:
        for attempt in range(20):
            try:
                first = await asyncio.start_server(accept, addresses[0], port)
                servers = [first]
                port = first.sockets[0].getsockname()[1]
                for address in addresses[1:]:
                    servers.append(await asyncio.start_server(accept, address, port))
                break
            except OSError:
                for server in servers:
                    server.close()
                servers = []
                port = 0
                if attempt == 19:
                    raise
        yield port
    finally:
        for server in servers:
            server.close()


# -- DNS queries ------------------------------------------------------------------------------

QTYPES = {"A": 1, "NS": 2, "SOA": 6, "TXT": 16, "AAAA": 28, "SRV": 33}


def mixed_case(name: str, rng: random.Random) -> str:
    """As a resolver doing 0x20 (Unbound ``use-caps-for-id``) sends it: each letter's case random."""
    return "".join(c.upper() if c.isalpha() and rng.random() < 0.5 else c for c in name)


def wire_query(
    name: str,
    qtype: str,
    *,
    qid: int = 0,
    edns: bool = True,
    ecs: tuple[str, int] | None = None,
    rd: bool = False,
) -> bytes:
    """One DNS query as bytes: header, question, and an OPT record (with ECS when given)."""
    flags = 0x0100 if rd else 0
    header = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 1 if edns or ecs else 0)
    labels = [p for p in name.rstrip(".").split(".") if p]
    qname = b"".join(bytes((len(p),)) + p.encode() for p in labels) + b"\0"
    body = header + qname + struct.pack("!HH", QTYPES[qtype], 1)
    if edns or ecs:
        options = b""
        if ecs is not None:
            address, prefix = ecs
            raw = socket.inet_aton(address)[: (prefix + 7) // 8]
            data = struct.pack("!HBB", 1, prefix, 0) + raw
            options = struct.pack("!HH", 8, len(data)) + data
        body += b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(options)) + options
    return body


def write_binary_queries(path: Path, queries: Iterable[bytes]) -> int:
    """dnsperf ``-B`` input: each query prefixed with its 2-byte length (dnsperf sets the id)."""
    count = 0
    with open(path, "wb") as out:
        for wire in queries:
            out.write(struct.pack("!H", len(wire)) + wire)
            count += 1
    return count


class Zipf:
    """Ranks 0..n-1 with P(k) proportional to 1/(k+1)^s (precomputed CDF, bisect)."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        import bisect
        import itertools

        weights = [1.0 / (k + 1) ** s for k in range(n)]
        self._cdf = list(itertools.accumulate(weights))
        self._total = self._cdf[-1]
        self._bisect = bisect.bisect_left
        self._rng = rng

    def draw(self) -> int:
        return min(len(self._cdf) - 1, self._bisect(self._cdf, self._rng.random() * self._total))


# -- dnsperf ----------------------------------------------------------------------------------


@dataclass
class DnsRun:
    qps: float
    p99_ms: float  # lost queries count as the timeout (math.inf when more than 1 % were lost)
    sent: int
    lost: int

    @property
    def lost_pct(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else math.nan


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


def dnsperf(
    port: int,
    datafile: Path,
    seconds: float,
    rate: int = 0,
    verbose: bool = False,
    timeout_s: float = 2.0,
    once: bool = False,
) -> DnsRun:
    """One run; one dnsperf thread (one core), 4 sockets, 200 queries in flight at most.
    ``once``: through the file once (``seconds`` is then only an upper bound)."""
    args = ["dnsperf", "-s", CLIENT, "-p", str(port), "-d", str(datafile), "-l", str(seconds)]
    if once:
        args += ["-n", "1"]
    args += ["-c", "4", "-T", "1", "-q", "200", "-t", str(timeout_s)]
    if datafile.suffix == ".bin":
        args.append("-B")
    if rate:
        args += ["-Q", str(rate)]
    if verbose:
        args.append("-v")
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode:
        raise RuntimeError("dnsperf failed: " + done.stderr[-2000:])
    out = done.stdout
    qps = re.search(r"Queries per second:\s+([0-9.]+)", out)
    sent = re.search(r"Queries sent:\s+([0-9]+)", out)
    lost = re.search(r"Queries lost:\s+([0-9]+)", out)
    if not (qps and sent and lost):
        raise RuntimeError("unexpected dnsperf output:\n" + out[-2000:])
    p99 = math.nan
    if verbose:
        latencies = [float(m) for m in re.findall(r"^> \S+ .* ([0-9]+\.[0-9]+)$", out, re.M)]
        latencies += [timeout_s] * int(lost.group(1))
        if latencies:
            p99 = percentile(latencies, 99) * 1000
    return DnsRun(float(qps.group(1)), p99, int(sent.group(1)), int(lost.group(1)))


def free_udp_tcp_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind((CLIENT, 0))
            port = u.getsockname()[1]
            try:
                t.bind((CLIENT, port))
            except OSError:
                continue
            return int(port)


def wait_answering(port: int, timeout: float = 60.0) -> None:
    query = wire_query(ZONE, "SOA", qid=0xABCD, edns=False)
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


def start_nsd(
    workdir: Path, port: int, zone_text: str, zone: str = ZONE
) -> subprocess.Popen[bytes]:
    """NSD 4, one server process, rate limiting off, its files in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "zone").write_text(zone_text)
    conf = workdir / "nsd.conf"
    conf.write_text(
        f"""server:
    ip-address: {CLIENT}@{port}
    port: {port}
    username: ""
    chroot: ""
    zonesdir: "{workdir}"
    database: ""
    pidfile: "{workdir}/nsd.pid"
    xfrdfile: "{workdir}/xfrd.state"
    zonelistfile: "{workdir}/zone.list"
    logfile: "{workdir}/nsd.log"
    server-count: 1
    verbosity: 0
    hide-version: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: {zone}
    zonefile: "{workdir}/zone"
"""
    )
    check = subprocess.run(["nsd-checkconf", str(conf)], capture_output=True, text=True)
    if check.returncode:
        raise RuntimeError("nsd.conf: " + check.stderr + check.stdout)
    argv, preexec = dying_with_parent(["nsd", "-d", "-c", str(conf)])
    return subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=preexec,  # noqa: PLW1509 - only without setpriv
    )


stop = stop_popen


# -- asking a server every question once (to build a static zone of its answers) -------------


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[bytes]] = {}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        future = self.waiting.pop(int.from_bytes(data[:2], "big"), None)
        if future is not None and not future.done():
            future.set_result(data)


async def ask_all(
    port: int, questions: Sequence[tuple[str, str]], window: int = 200, timeout: float = 2.0
) -> dict[tuple[str, str], bytes]:
    """Every question asked once over UDP (EDNS, 1232 bytes), ``window`` in flight; the replies."""
    loop = asyncio.get_running_loop()
    collector = _Collector()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: collector, remote_addr=(CLIENT, port)
    )
    replies: dict[tuple[str, str], bytes] = {}
    ids = iter(range(1, 1 << 62))
    limit = asyncio.Semaphore(window)

    async def one(question: tuple[str, str]) -> None:
        async with limit:
            for _ in range(5):
                qid = next(ids) & 0xFFFF
                future: asyncio.Future[bytes] = loop.create_future()
                collector.waiting[qid] = future
                transport.sendto(wire_query(*question, qid=qid))
                try:
                    replies[question] = await asyncio.wait_for(future, timeout)
                    return
                except TimeoutError:
                    collector.waiting.pop(qid, None)
            raise RuntimeError(f"no answer to {question}")

    try:
        await asyncio.gather(*(one(q) for q in questions))
    finally:
        transport.close()
    return replies


def zone_of(replies: dict[tuple[str, str], bytes], zone: str = ZONE) -> tuple[str, int]:
    """A zone file with every record of the answer and additional sections (SOA/NS at the
    apex included when asked), and how many records it has."""
    import dns.message

    lines: dict[str, None] = {}
    for wire in replies.values():
        message = dns.message.from_wire(wire)
        for rrset in message.answer + message.additional:
            for line in rrset.to_text().splitlines():
                lines[line] = None
    if not any(" SOA " in line for line in lines):
        raise RuntimeError("ask the apex SOA too")
    return "$ORIGIN " + zone + "\n" + "\n".join(lines) + "\n", len(lines)
