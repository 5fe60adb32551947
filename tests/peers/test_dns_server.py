"""The DNS server over real UDP and TCP on 127.0.0.1, with dnspython as the client,
in both UDP modes (reader thread and event loop)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from prometheus_client import CollectorRegistry

from dns_server.config import DnsConfig
from dns_server.io.server import DnsServer, start_dns
from harness.static_view import StaticCluster, StaticView
from syncmesh.schema import Gateway
from syncmesh.view_api import ServiceKey, ViewChange

pytestmark = pytest.mark.peers

ZONE = "syncmesh.internal."
HOST = "127.0.0.1"
WEB = ServiceKey("default", "web")


def make_view() -> StaticView:
    view = StaticView(
        [
            # The test client (127.0.0.1) is in east.
            StaticCluster(
                "east",
                [
                    Gateway(address="10.0.0.1", port=443),
                    Gateway(address="10.0.0.2", port=443, weight=50),
                ],
                ["127.0.0.0/8"],
                region="eu",
            ),
            StaticCluster(
                "west",
                [Gateway(address="10.9.0.1", port=8443), Gateway(address="fd00::9", port=8443)],
                ["10.2.0.0/16"],
                region="eu",
            ),
            StaticCluster(
                "big",
                [Gateway(address=f"10.50.0.{i}", port=443) for i in range(1, 61)],
                ["10.50.0.0/16"],
            ),
        ]
    )
    view.set_service(WEB, "east", 2)
    view.set_service(WEB, "west", 1)
    view.set_service(ServiceKey("default", "wide"), "big", 3)
    view.set_service(ServiceKey("shop", "db"), "east", 0)
    return view


@pytest.fixture(params=["batch", "thread", "loop"])
async def served(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[DnsServer, StaticView, CollectorRegistry]]:
    view = make_view()
    registry = CollectorRegistry()
    config = DnsConfig(
        port=0, udp_mode=request.param, latency_sample_every=1, tcp_idle_timeout_s=0.5
    )
    server = await start_dns(config, view, registry)
    try:
        yield server, view, registry
    finally:
        await server.close()


async def udp(server: DnsServer, name: str, rdtype: str = "A", **kw: object) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    response = await dns.asyncquery.udp(
        query, HOST, port=server.port, timeout=3, ignore_trailing=False
    )
    assert response.id == query.id
    return response


def values(message: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in message.answer for rd in rrset]


async def test_answers_over_udp(served: tuple[DnsServer, StaticView, CollectorRegistry]) -> None:
    server, _, _ = served
    assert server.port > 0
    a = await udp(server, f"web.svc.{ZONE}")
    assert a.flags & dns.flags.AA and sorted(values(a)) == ["10.0.0.1", "10.0.0.2"]
    firsts = {values(await udp(server, f"web.default.svc.{ZONE}"))[0] for _ in range(4)}
    assert firsts == {"10.0.0.1", "10.0.0.2"}  # rotation, also from the cache
    assert values(await udp(server, f"west.web.default.svc.{ZONE}", "AAAA")) == ["fd00::9"]
    srv = await udp(server, f"web.svc.{ZONE}", "SRV", use_edns=0)
    assert sorted(rd.priority for rd in srv.answer[0]) == [0, 0, 1, 1]
    assert len(srv.additional) == 4
    txt = values(await udp(server, f"web.svc.{ZONE}", "TXT"))
    assert txt[0].startswith('"rank=0 cluster=east reason=client-cidr')
    assert values(await udp(server, ZONE, "NS")) == ["ns.syncmesh.internal."]
    assert (await udp(server, ZONE, "SOA")).answer[0].rdtype == dns.rdatatype.SOA
    assert [r.rdtype for r in (await udp(server, f"web.svc.{ZONE}", "ANY")).answer] == [
        dns.rdatatype.A
    ]


async def test_errors_over_udp(served: tuple[DnsServer, StaticView, CollectorRegistry]) -> None:
    server, _, _ = served
    nx = await udp(server, f"ghost.svc.{ZONE}")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].rdtype == dns.rdatatype.SOA
    nodata = await udp(server, f"db.shop.svc.{ZONE}")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    refused = await udp(server, "example.com.")
    assert refused.rcode() == dns.rcode.REFUSED and not refused.answer
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(b"\xbe\xef\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00", (HOST, server.port))
        formerr = await asyncio.to_thread(s.recv, 512)  # the loop must keep running
    assert formerr[:2] == b"\xbe\xef" and formerr[3] & 0x0F == dns.rcode.FORMERR


async def test_case_is_echoed_over_udp(
    served: tuple[DnsServer, StaticView, CollectorRegistry],
) -> None:
    server, _, _ = served
    for name in (
        "WeB.sVc.SYNCMESH.internal.",
        "WeB.sVc.SYNCMESH.internal.",
        "web.svc.syncmesh.internal.",
    ):
        message = await udp(server, name)
        assert message.question[0].name.to_text() == name
        assert len(values(message)) == 2


async def test_truncation_and_tcp_fallback(
    served: tuple[DnsServer, StaticView, CollectorRegistry],
) -> None:
    server, view, _ = served
    # Pin to the big cluster: 60 A records do not fit 512 bytes.
    name = f"big.wide.default.svc.{ZONE}"
    plain = await udp(server, name)
    assert plain.flags & dns.flags.TC and 0 < len(values(plain)) < 60
    edns = await udp(server, name, use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC and len(values(edns)) == 60 and edns.payload == 1232
    query = dns.message.make_query(name, "SRV", use_edns=0, payload=1232)
    response, used_tcp = await dns.asyncquery.udp_with_fallback(
        query, HOST, port=server.port, timeout=3
    )
    assert used_tcp and not response.flags & dns.flags.TC and len(values(response)) == 60


async def test_ecs_is_used_for_ranking_and_echoed(
    served: tuple[DnsServer, StaticView, CollectorRegistry],
) -> None:
    server, _, _ = served
    ecs = dns.edns.ECSOption("10.2.9.0", 24)
    message = await udp(server, f"web.svc.{ZONE}", use_edns=0, options=[ecs])
    assert values(message) == ["10.9.0.1"]
    (echo,) = message.options
    assert isinstance(echo, dns.edns.ECSOption) and (echo.address, echo.srclen, echo.scopelen) == (
        "10.2.9.0",
        24,
        24,
    )


async def test_tcp_pipelining_idle_timeout_and_bad_framing(
    served: tuple[DnsServer, StaticView, CollectorRegistry],
) -> None:
    server, _, registry = served
    reader, writer = await asyncio.open_connection(HOST, server.port)
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
    reader, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(b"\x00\x00")
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    writer.close()
    assert (
        registry.get_sample_value(
            "syncmesh_dns_transport_errors_total", {"reason": "tcp_empty_message"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "syncmesh_dns_transport_errors_total", {"reason": "tcp_idle_timeout"}
        )
        == 1
    )


async def test_invalidate_changes_the_answer(
    served: tuple[DnsServer, StaticView, CollectorRegistry],
) -> None:
    server, view, _ = served
    assert sorted(values(await udp(server, f"web.svc.{ZONE}"))) == ["10.0.0.1", "10.0.0.2"]
    server.invalidate(view.remove_service(WEB, "east"))
    assert values(await udp(server, f"web.svc.{ZONE}")) == ["10.9.0.1"]
    server.invalidate(view.remove_service(WEB, "west"))
    assert (await udp(server, f"web.svc.{ZONE}")).rcode() == dns.rcode.NXDOMAIN
    server.invalidate(ViewChange())  # empty change: nothing to do


async def test_metrics_on_the_given_registry(
    served: tuple[DnsServer, StaticView, CollectorRegistry],
) -> None:
    server, _, registry = served
    for _ in range(5):
        await udp(server, f"web.svc.{ZONE}")
    await udp(server, f"ghost.svc.{ZONE}")
    assert (
        registry.get_sample_value("syncmesh_dns_queries_total", {"qtype": "A", "rcode": "NOERROR"})
        == 5
    )
    assert (
        registry.get_sample_value("syncmesh_dns_queries_total", {"qtype": "A", "rcode": "NXDOMAIN"})
        == 1
    )
    assert registry.get_sample_value("syncmesh_dns_cache_hits_total") == 4
    assert registry.get_sample_value("syncmesh_dns_cache_misses_total") == 2
    latency = registry.get_sample_value(
        "syncmesh_dns_answer_latency_seconds_count", {"transport": "udp"}
    )
    assert latency is not None and latency >= 6


async def test_disabled_binds_nothing() -> None:
    server = await start_dns(DnsConfig(enabled=False), make_view(), CollectorRegistry())
    assert server.port == 0
    server.invalidate(ViewChange(everything=True))
    await server.close()


async def test_close_frees_the_port() -> None:
    server = await start_dns(DnsConfig(port=0), make_view(), CollectorRegistry())
    port = server.port
    await udp(server, f"web.svc.{ZONE}")
    await server.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, port))


@pytest.mark.security
async def test_udp_fuzz_then_still_answers(
    served: tuple[DnsServer, StaticView, CollectorRegistry],
) -> None:
    server, _, _ = served
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
                s.sendto(packet, (HOST, server.port))
            except BlockingIOError:
                await asyncio.sleep(0.01)
            if i % 200 == 0:
                await asyncio.sleep(0)  # let the loop thread drain misses
    message = await udp(server, f"web.svc.{ZONE}")
    assert sorted(values(message)) == ["10.0.0.1", "10.0.0.2"]
    assert "internal_error" not in server.core.stats.rejected
    assert sum(server.core.stats.rejected.values()) > 100
