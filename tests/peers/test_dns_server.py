"""The DNS server of a real registry replica over real UDP and TCP on loopback,
fed from a real nats-server, with dnspython as the client, in every UDP mode
(batched reader thread, reader thread, event loop). Gateways are real TCP
listeners the registry probes, one of them on ::1. A real Unbound doing 0x20
in front checks case randomisation end to end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import msgspec
import nats
import pytest
from prometheus_client import CollectorRegistry

from dns_server.config import DnsConfig
from dns_server.io.server import start_dns
from harness.nats_peer import NatsPeer
from harness.samples import claim_epoch, cluster_beat, instance, publish, service_state
from harness.system import FAST_PROBES, Listener
from harness.view_feed import ViewFeed
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import Gateway
from syncmesh.view_api import ServiceKey, ViewChange
from syncmesh_app.embedded.process import stop_popen, wait_until
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig
from syncmesh_io.nats_connection import ensure_stream

pytestmark = pytest.mark.peers

ZONE = "syncmesh.internal."
HOST = "127.0.0.1"
WEB, WIDE, DB = (
    ServiceKey("default", "web"),
    ServiceKey("default", "wide"),
    ServiceKey("shop", "db"),
)
EAST = ("127.0.0.11", "127.0.0.12")
WEST = ("127.0.0.21", "::1")
BIG = tuple(f"127.50.0.{i}" for i in range(1, 61))
# Fast probes whose RTTs all fall in one bucket (below 1 s): a slow connect on a
# busy machine must not reorder clusters and flush answers the tests count.
PROBES = msgspec.structs.replace(FAST_PROBES, timeout_s=1.0, rtt_floor_ms=1000.0)


@dataclass
class Served:
    app: RegistryApp
    js: Any
    gateways: dict[str, Listener]
    epochs: dict[str, int]

    @property
    def port(self) -> int:
        port = self.app.dns_port
        assert port
        return port

    def metric(self, name: str, **labels: str) -> float:
        return self.app.collector_registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def registry_serving(
    nats_peer: NatsPeer, udp_mode: Literal["batch", "thread", "loop"]
) -> AsyncIterator[Served]:
    """east (the test client's cluster, 127.0.0.1), west (same region, dual stack
    with a gateway on ::1), big (60 gateways); web in east and west, wide in
    big, db known but with no healthy instance."""
    nc = await nats.connect(nats_peer.url)
    listeners: dict[str, Listener] = {}
    try:
        for address in EAST + WEST + BIG:
            listeners[address] = Listener(address)
            await listeners[address].open()
        js = nc.jetstream()
        await ensure_stream(js)

        def gateways(addresses: tuple[str, ...], weight: int = 100) -> list[Gateway]:
            return [Gateway(address=a, port=listeners[a].port, weight=weight) for a in addresses]

        east = gateways(EAST[:1]) + gateways(EAST[1:], weight=50)
        # Each cluster claims its epoch first, as its agent would.
        epochs = {c: await claim_epoch(js, c) for c in ("east", "west", "big")}
        # Distinct revisions: JetStream drops a repeated <cluster>:<epoch>:<revision> message id.
        await publish(
            js,
            cluster_beat(
                "east",
                epoch=epochs["east"],
                revision=1,
                gateways=east,
                region="eu",
                client_cidrs=[HOST + "/32"],
            ),
        )
        await publish(
            js,
            cluster_beat(
                "west", epoch=epochs["west"], revision=1, gateways=gateways(WEST), region="eu"
            ),
        )
        await publish(
            js, cluster_beat("big", epoch=epochs["big"], revision=1, gateways=gateways(BIG))
        )
        for cluster, key in (("east", WEB), ("west", WEB), ("big", WIDE)):
            await publish(
                js,
                service_state(
                    cluster, key.service, key.namespace, epoch=epochs[cluster], revision=2
                ),
            )
        critical = [instance(health="critical")]
        await publish(
            js,
            service_state(
                "east", "db", "shop", epoch=epochs["east"], revision=3, instances=critical
            ),
        )
        config = RegistryConfig(
            nats=NatsConfig(servers=[nats_peer.url]),
            admin_port=0,
            probe=PROBES,
            dns=DnsConfig(
                port=0, udp_mode=udp_mode, latency_sample_every=1, tcp_idle_timeout_s=0.5
            ),
        )
        async with RegistryApp(config) as app:
            async with asyncio.timeout(20):
                await app.wait_ready()
            yield Served(app, js, listeners, epochs)
    finally:
        for listener in listeners.values():
            await listener.close()
        await nc.close()


@pytest.fixture(params=["batch", "thread", "loop"])
async def served(request: pytest.FixtureRequest, nats_peer: NatsPeer) -> AsyncIterator[Served]:
    async with registry_serving(nats_peer, request.param) as served:
        yield served


async def udp(port: int, name: str, rdtype: str = "A", **kw: object) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    response = await dns.asyncquery.udp(query, HOST, port=port, timeout=3, ignore_trailing=False)
    assert response.id == query.id
    return response


def values(message: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in message.answer for rd in rrset]


async def test_answers_over_udp(served: Served) -> None:
    port = served.port
    a = await udp(port, f"web.svc.{ZONE}")
    assert a.flags & dns.flags.AA and sorted(values(a)) == sorted(EAST)
    firsts = {values(await udp(port, f"web.default.svc.{ZONE}"))[0] for _ in range(4)}
    assert firsts == set(EAST)  # rotation, also from the cache
    srv = await udp(port, f"web.svc.{ZONE}", "SRV", use_edns=0)
    assert sorted(rd.priority for rd in srv.answer[0]) == [0, 0, 1, 1]
    assert len(srv.additional) == 4
    txt = values(await udp(port, f"web.svc.{ZONE}", "TXT"))
    assert txt[0].startswith('"rank=0 cluster=east reason=client-cidr')
    assert values(await udp(port, ZONE, "NS")) == ["ns.syncmesh.internal."]
    assert (await udp(port, ZONE, "SOA")).answer[0].rdtype == dns.rdatatype.SOA
    any_ = await udp(port, f"web.svc.{ZONE}", "ANY")
    assert [r.rdtype for r in any_.answer] == [dns.rdatatype.A]


async def test_ipv6_gateway_on_loopback_is_probed_and_answered_as_aaaa(served: Served) -> None:
    port = served.port
    assert values(await udp(port, f"west.web.default.svc.{ZONE}", "AAAA")) == ["::1"]
    assert values(await udp(port, f"west.web.default.svc.{ZONE}", "A")) == ["127.0.0.21"]
    srv = await udp(port, f"west.web.default.svc.{ZONE}", "SRV", use_edns=0)
    glue = {rrset.rdtype: [rd.to_text() for rd in rrset] for rrset in srv.additional}
    assert glue[dns.rdatatype.AAAA] == ["::1"]
    target = f"0-0-0-0-0-0-0-1.west.web.default.svc.{ZONE}"
    assert values(await udp(port, target, "AAAA")) == ["::1"]
    # The ::1 listener closes: once probes take it down, only the IPv4 gateway is left.
    await served.gateways["::1"].close()

    async def gone() -> bool:
        return not values(await udp(port, f"west.web.default.svc.{ZONE}", "AAAA"))

    await wait_until(gone, 10, interval=0.1)
    assert values(await udp(port, f"west.web.default.svc.{ZONE}", "A")) == ["127.0.0.21"]


async def test_errors_over_udp(served: Served) -> None:
    port = served.port
    nx = await udp(port, f"ghost.svc.{ZONE}")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].rdtype == dns.rdatatype.SOA
    nodata = await udp(port, f"db.shop.svc.{ZONE}")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    refused = await udp(port, "example.com.")
    assert refused.rcode() == dns.rcode.REFUSED and not refused.answer
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(b"\xbe\xef\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00", (HOST, port))
        formerr = await asyncio.to_thread(s.recv, 512)  # the loop must keep running
    assert formerr[:2] == b"\xbe\xef" and formerr[3] & 0x0F == dns.rcode.FORMERR


async def test_randomised_case_is_echoed_and_served_by_the_hot_lookup(served: Served) -> None:
    port = served.port
    rng = random.Random(15)
    name = f"web.svc.{ZONE}"
    await udp(port, name)
    before = served.metric("syncmesh_dns_cache_hits_total", level="packet")
    asked = 40
    for _ in range(asked):
        sent = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
        message = await udp(port, sent)
        assert message.question[0].name.to_text() == sent
        assert len(values(message)) == 2
    hits = served.metric("syncmesh_dns_cache_hits_total", level="packet") - before
    assert hits == asked
    assert served.metric("syncmesh_dns_cache_misses_total") == 1


async def test_truncation_and_tcp_fallback(served: Served) -> None:
    port = served.port
    # Pinned to the big cluster: 60 A records do not fit 512 bytes.
    name = f"big.wide.default.svc.{ZONE}"
    plain = await udp(port, name)
    assert plain.flags & dns.flags.TC and 0 < len(values(plain)) < 60
    edns = await udp(port, name, use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC and len(values(edns)) == 60 and edns.payload == 1232
    query = dns.message.make_query(name, "SRV", use_edns=0, payload=1232)
    response, used_tcp = await dns.asyncquery.udp_with_fallback(query, HOST, port=port, timeout=3)
    assert used_tcp and not response.flags & dns.flags.TC and len(values(response)) == 60


async def test_ecs_is_used_for_ranking_and_echoed(served: Served) -> None:
    # 10.20.9.0/24 is in no cluster: the replica's own locality (none) ranks,
    # so east and west tie on tier and RTT bucket, and the name decides.
    ecs = dns.edns.ECSOption("10.20.9.0", 24)
    message = await udp(served.port, f"web.svc.{ZONE}", use_edns=0, options=[ecs])
    assert sorted(values(message)) == sorted(EAST)
    (echo,) = message.options
    assert isinstance(echo, dns.edns.ECSOption)
    assert (echo.address, echo.srclen, echo.scopelen) == ("10.20.9.0", 24, 24)
    txt = values(await udp(served.port, f"web.svc.{ZONE}", "TXT", use_edns=0, options=[ecs]))
    assert "reason=client-cidr" not in txt[0]


async def test_tcp_pipelining_idle_timeout_and_bad_framing(served: Served) -> None:
    reader, writer = await asyncio.open_connection(HOST, served.port)
    queries = [dns.message.make_query(f"web.svc.{ZONE}", t) for t in ("A", "TXT")]
    writer.write(b"".join(len(w).to_bytes(2, "big") + w for w in (q.to_wire() for q in queries)))
    await writer.drain()
    for query in queries:
        length = int.from_bytes(await reader.readexactly(2), "big")
        response = dns.message.from_wire(await reader.readexactly(length))
        assert response.id == query.id and response.answer
    # Idle for longer than tcp_idle_timeout_s: the server closes.
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    writer.close()
    reader, writer = await asyncio.open_connection(HOST, served.port)
    writer.write(b"\x00\x00")
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    writer.close()
    errors = "syncmesh_dns_transport_errors_total"
    assert served.metric(errors, reason="tcp_empty_message") == 1
    assert served.metric(errors, reason="tcp_idle_timeout") == 1


async def test_a_tombstone_on_the_stream_changes_the_answer(served: Served) -> None:
    port = served.port
    assert sorted(values(await udp(port, f"web.svc.{ZONE}"))) == sorted(EAST)

    async def answer_is(expected: list[str]) -> bool:
        return sorted(values(await udp(port, f"web.svc.{ZONE}"))) == expected

    await publish(
        served.js,
        service_state(
            "east", "web", epoch=served.epochs["east"], revision=4, instances=[], deleted=True
        ),
    )
    await wait_until(lambda: answer_is(["127.0.0.21"]), 10, interval=0.05)
    await publish(
        served.js,
        service_state(
            "west", "web", epoch=served.epochs["west"], revision=4, instances=[], deleted=True
        ),
    )

    async def nxdomain() -> bool:
        return (await udp(port, f"web.svc.{ZONE}")).rcode() == dns.rcode.NXDOMAIN

    await wait_until(nxdomain, 10, interval=0.05)


async def test_metrics_on_the_registry(served: Served) -> None:
    for _ in range(5):
        await udp(served.port, f"web.svc.{ZONE}")
    await udp(served.port, f"ghost.svc.{ZONE}")
    queries = "syncmesh_dns_queries_total"
    assert served.metric(queries, qtype="A", rcode="NOERROR") == 5
    assert served.metric(queries, qtype="A", rcode="NXDOMAIN") == 1
    # Every reader mode answers repeats through the one hot lookup.
    assert served.metric("syncmesh_dns_cache_hits_total", level="packet") == 4
    assert served.metric("syncmesh_dns_cache_misses_total") == 2
    latency = served.metric("syncmesh_dns_answer_latency_seconds_count", transport="udp")
    assert latency >= 6


@pytest.mark.security
async def test_udp_fuzz_then_still_answers(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    port = served.port
    rng = random.Random(5)
    valid = dns.message.make_query(f"web.svc.{ZONE}", "A").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        for i in range(5000):
            if i % 2:
                packet = rng.randbytes(rng.randint(0, 300))
            else:
                mutable = bytearray(valid)
                for _ in range(rng.randint(1, 4)):
                    mutable[rng.randrange(len(mutable))] = rng.randrange(256)
                packet = bytes(mutable[: rng.randint(0, len(mutable))])
            try:
                s.sendto(packet, (HOST, port))
            except BlockingIOError:
                await asyncio.sleep(0.01)
            if i % 200 == 0:
                await asyncio.sleep(0)  # let the loop thread drain misses
    message = await udp(port, f"web.svc.{ZONE}")
    assert sorted(values(message)) == sorted(EAST)
    assert served.metric("syncmesh_dns_rejected_total", reason="internal_error") == 0
    rejected = served.app.collector_registry.get_sample_value
    total = sum(
        rejected("syncmesh_dns_rejected_total", {"reason": r}) or 0.0
        for r in ("short_header", "not_a_query", "question_count", "trailing_bytes", "opcode")
    )
    assert total > 100
    # The log gate: one line per reason in the period, not one per packet.
    lines = [r for r in caplog.records if r.name == "syncmesh.dns" and "rejected" in r.message]
    assert 0 < len(lines) < 40


# -- lifecycle, without a registry ---------------------------------------------------


def small_view() -> ViewFeed:
    feed = ViewFeed()
    feed.cluster("east", [Gateway(address="10.0.0.1", port=443)], [HOST + "/32"])
    feed.service(WEB, "east")
    return feed


async def test_disabled_binds_nothing() -> None:
    server = await start_dns(DnsConfig(enabled=False), small_view().view, CollectorRegistry())
    assert server.port == 0
    server.invalidate(ViewChange(everything=True))
    await server.close()


async def test_close_frees_the_port() -> None:
    server = await start_dns(DnsConfig(port=0), small_view().view, CollectorRegistry())
    port = server.port
    assert values(await udp(port, f"web.svc.{ZONE}")) == ["10.0.0.1"]
    await server.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, port))


FLOOD = """
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
queries = []
for i in range(20000):
    name = b"".join(bytes([len(l)]) + l for l in (b"n%d" % i, b"svc", b"syncmesh", b"internal"))
    queries.append(b"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00" + name + b"\\x00\\x00\\x01\\x00\\x01")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
end = time.monotonic() + seconds
while time.monotonic() < end:
    for q in queries[:2000]:
        try:
            s.sendto(q, ("127.0.0.1", port))
        except BlockingIOError:
            pass
    queries = queries[2000:] + queries[:2000]
"""


@pytest.mark.parametrize("udp_mode", ["batch", "thread"])
async def test_a_flood_of_misses_does_not_starve_the_event_loop(
    udp_mode: Literal["batch", "thread"], tmp_path: Path
) -> None:
    """Regression: the reader thread hands misses to the loop, which drained
    them to empty in one callback; a flood that never let the queue empty
    (random names, ECS: each a miss) kept that callback running as long as
    the flood did, and no other task on the loop (NATS, probes, the stream)
    ran. A task ticking every 50 ms must keep ticking through a 4 s flood."""
    server = await start_dns(
        DnsConfig(port=0, udp_mode=udp_mode), small_view().view, CollectorRegistry()
    )
    script = tmp_path / "flood.py"
    script.write_text(FLOOD)
    loop = asyncio.get_running_loop()
    try:
        flood = await asyncio.create_subprocess_exec(
            sys.executable, str(script), str(server.port), "4"
        )
        started = loop.time()
        latest, late = started, 0.0
        while flood.returncode is None and loop.time() - started < 60:
            await asyncio.sleep(0.05)
            now = loop.time()
            late = max(late, now - latest - 0.05)
            latest = now
        await flood.wait()
        misses = server.engine.stats.misses
        assert misses > 1000, f"the flood did not reach the server ({misses} misses)"
        # On a loaded 2-core machine a tick may be late by a GIL switch or a
        # scheduling delay, never by the length of the flood.
        assert late < 1.5, f"the loop stalled for {late:.2f}s during the flood"
        # And the server still answers once the flood is over (after the
        # backlog in the socket buffer, all misses, is worked off).

        async def answers() -> bool:
            try:
                return values(await udp(server.port, f"web.svc.{ZONE}")) == ["10.0.0.1"]
            except TimeoutError:
                return False

        await wait_until(answers, 60, interval=0.2, what="an answer after the flood")
    finally:
        await server.close()


# -- a real resolver doing 0x20 in front (issue 15) -------------------------------------


def unbound_binary() -> str | None:
    return shutil.which("unbound") or shutil.which("unbound", path="/usr/sbin:/sbin")


# `./run test` installs unbound and says so (SYNCMESH_TOOLS_INSTALLED): there, and under
# CI, a missing binary fails instead of skipping. Only a bare `pytest` on a machine
# without it skips these two tests.
needs_unbound = pytest.mark.skipif(
    unbound_binary() is None
    and not os.environ.get("CI")
    and not os.environ.get("SYNCMESH_TOOLS_INSTALLED"),
    reason="unbound is not installed (apt-get install unbound; ./run test installs it)",
)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def unbound_conf(workdir: Path, port: int, upstream_port: int) -> Path:
    conf = workdir / "unbound.conf"
    conf.write_text(
        f"""server:
    interface: {HOST}
    port: {port}
    do-ip6: no
    do-tcp: yes
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound.pid"
    logfile: ""
    use-syslog: no
    verbosity: 1
    module-config: "iterator"
    do-not-query-localhost: no
    use-caps-for-id: yes
    qname-minimisation: no
    cache-max-ttl: 0
    cache-max-negative-ttl: 0
    prefetch: no
    access-control: 127.0.0.0/8 allow
    domain-insecure: "{ZONE}"
    local-zone: "{ZONE}" nodefault
stub-zone:
    name: "{ZONE}"
    stub-addr: {HOST}@{upstream_port}
    stub-first: no
"""
    )
    return conf


@contextlib.asynccontextmanager
async def unbound(
    workdir: Path, upstream_port: int, first_port: int | None = None
) -> AsyncIterator[int]:
    """Unbound on 127.0.0.1 with ``use-caps-for-id`` (0x20) and no answer cache
    worth the name (TTLs capped at 0), so every query reaches syncmesh.

    Unbound cannot bind port 0 and report what it got, so the port is picked
    here; another process may take it (UDP or TCP) before Unbound binds it. A
    start that fails with "address already in use" is retried on a new port,
    as the harness does for Consul, Nacos and NATS (CI stop 17 failed on it).
    """
    binary = unbound_binary()
    assert binary is not None
    workdir.mkdir(parents=True, exist_ok=True)
    started = await start_unbound(binary, workdir, upstream_port, first_port or free_udp_port())
    for _ in range(4):
        if not isinstance(started, str) or "already in use" not in started:
            break
        started = await start_unbound(binary, workdir, upstream_port, free_udp_port())
    if isinstance(started, str):
        raise RuntimeError("unbound exited: " + started[-2000:])
    process, port = started
    try:
        yield port
    finally:
        stop_popen(process)


async def start_unbound(
    binary: str, workdir: Path, upstream_port: int, port: int
) -> tuple[subprocess.Popen[bytes], int] | str:
    """A running Unbound and its port, or the log of one that exited."""
    conf = unbound_conf(workdir, port, upstream_port)
    log_path = workdir / "unbound.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=log, stderr=log)

    async def answering() -> bool:
        try:
            await udp(port, ZONE, "SOA")
        except Exception:
            return process.poll() is not None  # stop waiting: it died
        return True

    try:
        await wait_until(answering, 15, interval=0.2)
    except BaseException:
        stop_popen(process)
        raise
    if process.poll() is not None:
        return log_path.read_text(errors="replace")
    return process, port


@needs_unbound
async def test_behind_unbound_with_0x20_the_hot_lookup_serves_every_repeat(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    async with registry_serving(nats_peer, "batch") as served:
        async with unbound(tmp_path / "unbound", served.port) as resolver_port:
            name = f"web.svc.{ZONE}"
            first = await udp(resolver_port, name)
            # Unbound checks the echoed case of every answer (use-caps-for-id):
            # a mismatch would be a SERVFAIL here, not an answer.
            assert first.rcode() == dns.rcode.NOERROR and sorted(values(first)) == sorted(EAST)
            before = served.metric("syncmesh_dns_cache_hits_total", level="packet")
            misses = served.metric("syncmesh_dns_cache_misses_total")
            asked = 30
            for _ in range(asked):
                message = await udp(resolver_port, name)
                assert sorted(values(message)) == sorted(EAST)
            reached = served.metric("syncmesh_dns_queries_total", qtype="A", rcode="NOERROR")
            hits = served.metric("syncmesh_dns_cache_hits_total", level="packet") - before
            # Every query reached syncmesh (no caching in Unbound) in random case,
            # and every one after the first was a hot-lookup hit.
            assert reached >= asked + 1
            assert hits >= asked
            assert served.metric("syncmesh_dns_cache_misses_total") == misses


@needs_unbound
async def test_unbound_taken_port_is_retried_on_another(
    nats_peer: NatsPeer, tmp_path: Path
) -> None:
    """Regression (CI stop 17): another process took the port picked for
    Unbound before it bound it; the fixture starts it again on a new port."""
    async with registry_serving(nats_peer, "batch") as served:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
            squatter.bind((HOST, 0))
            taken = int(squatter.getsockname()[1])
            async with unbound(tmp_path / "unbound", served.port, first_port=taken) as port:
                assert port != taken
                answer = await udp(port, f"web.svc.{ZONE}")
                assert sorted(values(answer)) == sorted(EAST)
