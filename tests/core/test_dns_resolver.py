"""Pure DNS answers over the registry's real view: every name form, type and
error, ranking inputs, EDNS, truncation, IPv6. Queries are built and answers
parsed with dnspython and go through the engine's two entry points exactly as
the UDP readers call them (``hot``, then ``handle``); no sockets. Cache and
hot-path tests are in test_dns_cache.py."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from dns_server.config import DnsConfig
from dns_server.core.engine import AnswerEngine
from harness.view_feed import ViewFeed
from syncmesh.schema import Gateway, Locality
from syncmesh.view_api import ServiceKey

pytestmark = pytest.mark.core

ZONE = "syncmesh.internal."
EAST_CLIENT, WEST_CLIENT, SOUTH_CLIENT, NOWHERE = "10.1.2.3", "10.2.2.2", "10.3.3.3", "192.0.2.9"
WEB, API, DB = ServiceKey("default", "web"), ServiceKey("shop", "api"), ServiceKey("shop", "db")


def make_feed() -> ViewFeed:
    """east (eu-1, unmeasured), west (eu-2, 3 ms, dual stack), south (us, 50 ms, IPv6 only,
    stale agent); web everywhere, api healthy only in west, db nowhere healthy."""
    feed = ViewFeed()
    feed.cluster(
        "east",
        [Gateway(address="10.0.0.1", port=443), Gateway(address="10.0.0.2", port=443, weight=50)],
        ["10.1.0.0/16"],
        region="eu",
        zone="eu-1",
    )
    feed.cluster(
        "west",
        [Gateway(address="10.9.0.1", port=8443), Gateway(address="fd00::9", port=8443)],
        ["10.2.0.0/16"],
        region="eu",
        zone="eu-2",
        rtt_ms=3.0,
    )
    feed.cluster(
        "south",
        [Gateway(address="fd00::5", port=443)],
        ["10.3.0.0/16"],
        region="us",
        rtt_ms=50.0,
        stale=True,
    )
    for cluster, healthy in (("east", 2), ("west", 1), ("south", 1)):
        feed.service(WEB, cluster, healthy)
    feed.service(API, "east", 0, critical=2)
    feed.service(API, "west", 3)
    feed.service(DB, "east", 0, critical=1)
    return feed


def make_engine(feed: ViewFeed | None = None, **config: object) -> AnswerEngine:
    view = (feed or make_feed()).view
    return AnswerEngine(DnsConfig(**config), view, serial=1234)  # type: ignore[arg-type]


def ask(
    engine: AnswerEngine,
    name: str,
    rdtype: str = "A",
    host: str = EAST_CLIENT,
    *,
    tcp: bool = False,
    use_edns: int | None = None,
    payload: int = 1232,
    options: list[dns.edns.Option] | None = None,
) -> dns.message.Message:
    if use_edns is None:
        query = dns.message.make_query(name, rdtype)
    else:
        query = dns.message.make_query(
            name, rdtype, use_edns=use_edns, payload=payload, options=options
        )
    wire = query.to_wire()
    # As every UDP reader does: the level-1 lookup, then the full path.
    response = (None if tcp else engine.hot(wire, host)) or engine.handle(wire, host, tcp=tcp)
    assert response is not None
    message = dns.message.from_wire(response)
    assert message.id == query.id
    assert message.flags & dns.flags.QR
    return message


def answer_values(message: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in message.answer for rd in rrset]


def soa_ttl(message: dns.message.Message) -> int:
    (rrset,) = message.authority
    assert rrset.rdtype == dns.rdatatype.SOA
    return rrset.ttl


# -- name forms ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [f"web.svc.{ZONE}", f"web.default.svc.{ZONE}", f"east.web.default.svc.{ZONE}"],
)
def test_service_name_forms_answer_east_gateways_for_east_client(name: str) -> None:
    message = ask(make_engine(), name)
    assert message.rcode() == dns.rcode.NOERROR
    assert message.flags & dns.flags.AA
    assert sorted(answer_values(message)) == ["10.0.0.1", "10.0.0.2"]
    assert message.answer[0].ttl == 5


def test_pinned_name_overrides_ranking() -> None:
    message = ask(make_engine(), f"west.web.default.svc.{ZONE}", "AAAA", host=EAST_CLIENT)
    assert answer_values(message) == ["fd00::9"]


def test_pinned_unknown_cluster_or_service_not_there_is_nxdomain() -> None:
    engine = make_engine()
    assert ask(engine, f"mars.web.default.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    # db exists only in east
    assert ask(engine, f"west.db.shop.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN


def test_ranking_follows_client_class() -> None:
    engine = make_engine()
    assert answer_values(ask(engine, f"web.svc.{ZONE}", host=WEST_CLIENT)) == ["10.9.0.1"]
    # South's agent is stale: under the serve policy it ranks after every fresh cluster,
    # even for its own clients, so they get west (same region as no one, 3 ms).
    assert answer_values(ask(engine, f"web.svc.{ZONE}", "AAAA", host=SOUTH_CLIENT)) == ["fd00::9"]
    assert answer_values(ask(engine, f"web.svc.{ZONE}", host=SOUTH_CLIENT)) == ["10.9.0.1"]
    # Fresh again, south is first for its clients; its gateway is IPv6 only, so the
    # top cluster has no A data.
    feed = make_feed()
    feed.cluster(
        "south", [Gateway(address="fd00::5", port=443)], ["10.3.0.0/16"], region="us", rtt_ms=50.0
    )
    fresh = make_engine(feed)
    assert answer_values(ask(fresh, f"web.svc.{ZONE}", "AAAA", host=SOUTH_CLIENT)) == ["fd00::5"]
    south_a = ask(fresh, f"web.svc.{ZONE}", host=SOUTH_CLIENT)
    assert south_a.rcode() == dns.rcode.NOERROR and not south_a.answer
    # No class: RTT decides (west 3 ms before south 50 ms, east unmeasured last).
    assert answer_values(ask(engine, f"web.svc.{ZONE}", host=NOWHERE)) == ["10.9.0.1"]


def test_a_records_rotate_between_queries() -> None:
    engine = make_engine()
    firsts = {answer_values(ask(engine, f"web.svc.{ZONE}"))[0] for _ in range(4)}
    assert firsts == {"10.0.0.1", "10.0.0.2"}


def test_srv_lists_every_candidate_with_rank_priority_and_glue() -> None:
    engine = make_engine()
    message = ask(engine, f"web.svc.{ZONE}", "SRV", use_edns=0)
    records = sorted(
        (rd.priority, rd.weight, rd.port, rd.target.to_text()) for rd in message.answer[0]
    )
    base = f"web.default.svc.{ZONE}"
    assert records == [
        (0, 50, 443, f"10-0-0-2.east.{base}"),
        (0, 100, 443, f"10-0-0-1.east.{base}"),
        (1, 100, 8443, f"10-9-0-1.west.{base}"),
        (1, 100, 8443, f"fd00-0-0-0-0-0-0-9.west.{base}"),
        (2, 100, 443, f"fd00-0-0-0-0-0-0-5.south.{base}"),
    ]
    glue = {
        rrset.name.to_text().lower(): [rd.to_text() for rd in rrset] for rrset in message.additional
    }
    assert glue[f"10-0-0-2.east.{base}"] == ["10.0.0.2"]
    assert glue[f"fd00-0-0-0-0-0-0-5.south.{base}"] == ["fd00::5"]
    # Every target resolves in the zone to its one gateway.
    for _, _, _, target in records:
        rdtype = "AAAA" if target.startswith("fd00") else "A"
        assert answer_values(ask(engine, target, rdtype)) == glue[target]


def test_target_of_unknown_gateway_is_nxdomain_and_wrong_family_nodata() -> None:
    engine = make_engine()
    assert ask(engine, f"10-0-0-7.east.web.default.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    nodata = ask(engine, f"10-0-0-1.east.web.default.svc.{ZONE}", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and soa_ttl(nodata) == 5


def test_txt_explains_ranking_reason_and_staleness() -> None:
    texts = [v.strip('"') for v in answer_values(ask(make_engine(), f"web.svc.{ZONE}", "TXT"))]
    assert len(texts) == 3
    assert texts[0].startswith("rank=0 cluster=east reason=client-cidr healthy=2")
    assert "rank=1 cluster=west reason=same-region" in texts[1] and "rtt_ms=3.0" in texts[1]
    assert "cluster=south" in texts[2] and texts[2].endswith("stale=yes")


def test_apex_soa_ns_and_minimal_any() -> None:
    engine = make_engine(
        ns_names=["ns1.syncmesh.internal.", "ns2.example.net."],
        ns_addresses={"ns1.syncmesh.internal.": ["192.0.2.53"]},
    )
    soa = ask(engine, ZONE, "SOA")
    (rd,) = soa.answer[0]
    assert (
        rd.mname.to_text() == "ns1.syncmesh.internal."
        and rd.rname.to_text() == "hostmaster.syncmesh.internal."
    )
    assert rd.serial == 1234 and rd.minimum == 5
    ns = ask(engine, ZONE, "NS")
    assert sorted(answer_values(ns)) == ["ns1.syncmesh.internal.", "ns2.example.net."]
    assert [r.to_text() for rrset in ns.additional for r in rrset] == ["192.0.2.53"]
    assert answer_values(ask(engine, "NS1.syncmesh.internal.")) == ["192.0.2.53"]
    any_apex = ask(engine, ZONE, "ANY")
    assert [rrset.rdtype for rrset in any_apex.answer] == [dns.rdatatype.SOA]
    any_web = ask(engine, f"web.svc.{ZONE}", "ANY")
    assert [rrset.rdtype for rrset in any_web.answer] == [dns.rdatatype.A]
    apex_mx = ask(engine, ZONE, "MX")
    assert apex_mx.rcode() == dns.rcode.NOERROR and not apex_mx.answer


def test_default_ns_is_in_zone_with_the_listen_address_as_glue() -> None:
    ns = ask(make_engine(), ZONE, "NS")
    assert answer_values(ns) == ["ns.syncmesh.internal."]
    assert [r.to_text() for rrset in ns.additional for r in rrset] == ["127.0.0.1"]


# -- IPv6 and SRV priority ------------------------------------------------------


def v6_feed() -> ViewFeed:
    """Cluster "v6": one gateway on ::1 (also announced as 0:0::1, the same address)."""
    feed = make_feed()
    feed.cluster(
        "v6",
        [Gateway(address="::1", port=443), Gateway(address="0:0::1", port=8443)],
        ["10.6.0.0/16"],
    )
    feed.service(WEB, "v6", 1)
    return feed


def test_ipv6_gateways_answer_aaaa_and_a_is_nodata() -> None:
    engine = make_engine(v6_feed())
    client = "10.6.1.1"
    aaaa = ask(engine, f"web.svc.{ZONE}", "AAAA", host=client)
    assert aaaa.rcode() == dns.rcode.NOERROR and answer_values(aaaa) == ["::1"]
    assert aaaa.answer[0].rdtype == dns.rdatatype.AAAA
    a = ask(engine, f"web.svc.{ZONE}", "A", host=client)
    assert a.rcode() == dns.rcode.NOERROR and not a.answer and soa_ttl(a) == 5
    any_ = ask(engine, f"web.svc.{ZONE}", "ANY", host=client)
    assert [rrset.rdtype for rrset in any_.answer] == [dns.rdatatype.AAAA]
    # Pinned, from a client elsewhere: the same rules.
    pinned = ask(engine, f"v6.web.default.svc.{ZONE}", "AAAA", host=EAST_CLIENT)
    assert answer_values(pinned) == ["::1"]


def test_ipv6_srv_targets_have_aaaa_glue_and_resolve() -> None:
    engine = make_engine(v6_feed())
    message = ask(engine, f"v6.web.default.svc.{ZONE}", "SRV", use_edns=0)
    base = f"v6.web.default.svc.{ZONE}"
    target = f"0-0-0-0-0-0-0-1.{base}"
    assert sorted((rd.port, rd.target.to_text()) for rd in message.answer[0]) == [
        (443, target),
        (8443, target),
    ]
    (glue,) = message.additional
    assert glue.rdtype == dns.rdatatype.AAAA and [rd.to_text() for rd in glue] == ["::1"]
    assert answer_values(ask(engine, target, "AAAA")) == ["::1"]
    assert not ask(engine, target, "A").answer


def test_dual_stack_cluster_answers_each_family_from_its_gateways() -> None:
    engine = make_engine()
    assert answer_values(ask(engine, f"web.svc.{ZONE}", "A", host=WEST_CLIENT)) == ["10.9.0.1"]
    assert answer_values(ask(engine, f"web.svc.{ZONE}", "AAAA", host=WEST_CLIENT)) == ["fd00::9"]


def tie_feed() -> ViewFeed:
    """a and b tie (same region as this replica, same RTT bucket); far is farther."""
    feed = ViewFeed(Locality(region="eu"))
    for name, address, region in (
        ("a", "10.7.0.1", "eu"),
        ("b", "10.8.0.1", "eu"),
        ("far", "10.9.0.1", "us"),
    ):
        feed.cluster(name, [Gateway(address=address, port=443)], region=region, rtt_ms=3.0)
        feed.service(WEB, name)
    return feed


def srv_priorities(message: dns.message.Message) -> dict[str, int]:
    """Cluster (second label of the target) -> SRV priority."""
    return {rd.target.labels[1].decode(): rd.priority for rd in message.answer[0]}


def test_srv_priority_is_the_rank_of_the_cluster() -> None:
    feed = tie_feed()
    ranks = {c.cluster: c.rank for c in feed.view.resolve(WEB, None).clusters}
    message = ask(make_engine(feed), f"web.svc.{ZONE}", "SRV", host=NOWHERE)
    assert srv_priorities(message) == ranks


def test_clusters_that_tie_share_one_srv_priority() -> None:
    feed = tie_feed()
    ranks = {c.cluster: c.rank for c in feed.view.resolve(WEB, None).clusters}
    assert ranks["a"] == ranks["b"], "the registry gives tied clusters one rank"
    priorities = srv_priorities(ask(make_engine(feed), f"web.svc.{ZONE}", "SRV", host=NOWHERE))
    assert priorities["a"] == priorities["b"] < priorities["far"]


# -- errors ---------------------------------------------------------------------


def test_unknown_names_are_nxdomain_with_soa_and_negative_ttl() -> None:
    engine = make_engine(ttl=30, soa_minimum=7)
    for name in (
        f"ghost.svc.{ZONE}",
        f"ghost.shop.svc.{ZONE}",
        f"www.{ZONE}",
        f"a.b.c.d.e.svc.{ZONE}",
    ):
        message = ask(engine, name)
        assert message.rcode() == dns.rcode.NXDOMAIN, name
        assert message.flags & dns.flags.AA
        assert soa_ttl(message) == 7


def test_known_name_without_data_or_healthy_cluster_is_nodata_with_soa() -> None:
    engine = make_engine(soa_minimum=9)
    for name, rdtype in (
        (f"web.svc.{ZONE}", "MX"),
        (f"db.shop.svc.{ZONE}", "A"),
        (f"db.shop.svc.{ZONE}", "SRV"),
        (f"svc.{ZONE}", "A"),
    ):
        message = ask(engine, name, rdtype)
        assert message.rcode() == dns.rcode.NOERROR and not message.answer, (name, rdtype)
        assert soa_ttl(message) == 9


def test_unhealthy_cluster_is_skipped() -> None:
    # api: east has 0 healthy, west 3 -> even an east client gets west.
    assert answer_values(ask(make_engine(), f"api.shop.svc.{ZONE}")) == ["10.9.0.1"]


def test_namespace_with_services_is_an_empty_non_terminal_not_nxdomain() -> None:
    message = ask(make_engine(), f"shop.svc.{ZONE}")
    assert message.rcode() == dns.rcode.NOERROR and not message.answer


def test_outside_zone_other_class_and_transfer_are_refused() -> None:
    engine = make_engine()
    for name, rdtype in (("example.com.", "A"), ("internal.", "SOA"), (ZONE, "AXFR")):
        message = ask(engine, name, rdtype)
        assert message.rcode() == dns.rcode.REFUSED
        assert not message.answer and not message.flags & dns.flags.AA
    chaos = dns.message.make_query("version.bind.", "TXT", "CH")
    response = engine.handle(chaos.to_wire(), EAST_CLIENT)
    assert response is not None and dns.message.from_wire(response).rcode() == dns.rcode.REFUSED


def _raw_query(qdcount: int = 1, flags: int = 0x0100, tail: bytes = b"") -> bytes:
    question = b"\x03web\x03svc\x08syncmesh\x08internal\x00\x00\x01\x00\x01"
    return (
        b"\x12\x34"
        + flags.to_bytes(2, "big")
        + qdcount.to_bytes(2, "big")
        + b"\x00" * 6
        + question
        + tail
    )


def test_malformed_answerable_queries_get_formerr_and_are_counted() -> None:
    engine = make_engine()
    cases = {
        "question_count": _raw_query(qdcount=2),
        "trailing_bytes": _raw_query(tail=b"\x00"),
        "question_truncated": _raw_query()[:-2],
        "label_type": _raw_query()[:12] + b"\x50abc\x00\x00\x01\x00\x01",
    }
    for reason, packet in cases.items():
        response = engine.handle(packet, EAST_CLIENT)
        assert response is not None, reason
        assert response[:2] == b"\x12\x34"
        assert response[3] & 0x0F == dns.rcode.FORMERR, reason
        assert engine.stats.rejected[reason] == 1


def test_unanswerable_packets_are_dropped() -> None:
    engine = make_engine()
    assert engine.handle(b"\x12\x34\x01", EAST_CLIENT) is None
    assert (
        engine.handle(_raw_query(flags=0x8100), EAST_CLIENT) is None
    )  # a response: never answer it
    assert engine.stats.rejected == {"short_header": 1, "not_a_query": 1}


def test_other_opcode_notimp_and_edns_version_badvers() -> None:
    engine = make_engine()
    notify = engine.handle(_raw_query(flags=0x2000), EAST_CLIENT)
    assert notify is not None and notify[3] & 0x0F == dns.rcode.NOTIMP
    query = dns.message.make_query(f"web.svc.{ZONE}", "A", use_edns=1)
    response = engine.handle(query.to_wire(), EAST_CLIENT)
    assert response is not None
    assert dns.message.from_wire(response).rcode() == dns.rcode.BADVERS


def test_compressed_question_names_go_to_the_dnslib_fallback() -> None:
    engine = make_engine()
    # "web" + pointer to offset 4, where the header's qdcount high byte (0) ends the name: "web."
    legal = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\xc0\x04\x00\x01\x00\x01"
    response = engine.handle(legal, EAST_CLIENT)
    assert response is not None
    message = dns.message.from_wire(response)
    assert message.rcode() == dns.rcode.REFUSED and message.question[0].name.to_text() == "web."
    # A pointer back to its own label loops: FORMERR, not a hang.
    looping = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\xc0\x0c\x00\x01\x00\x01"
    response = engine.handle(looping, EAST_CLIENT)
    assert response is not None and response[3] & 0x0F == dns.rcode.FORMERR
    assert engine.stats.rejected == {"malformed": 1}


def test_case_is_echoed_and_answers_are_case_insensitive() -> None:
    engine = make_engine()
    for name in (
        "WeB.SvC.SyncMesh.Internal.",
        "web.svc.syncmesh.internal.",
        "WEB.SVC.SYNCMESH.INTERNAL.",
    ):
        message = ask(engine, name)
        assert message.question[0].name.to_text() == name
        assert sorted(answer_values(message)) == ["10.0.0.1", "10.0.0.2"]


# -- EDNS, truncation, ECS -------------------------------------------------------


def big_feed() -> ViewFeed:
    feed = make_feed()
    feed.cluster(
        "big", [Gateway(address=f"10.50.0.{i}", port=443) for i in range(1, 61)], ["10.50.0.0/16"]
    )
    feed.service(WEB, "big", 5)
    return feed


def test_truncation_without_edns_then_full_over_edns_and_tcp() -> None:
    engine = make_engine(big_feed())
    host = "10.50.1.1"
    plain = ask(engine, f"web.svc.{ZONE}", host=host)
    assert plain.flags & dns.flags.TC
    assert 0 < len(answer_values(plain)) < 60
    assert engine.stats.truncated == 1
    # EDNS 4096 advertised, but the server caps at max_udp_payload 1232: 60 A records fit (~1 KB).
    edns = ask(engine, f"web.svc.{ZONE}", host=host, use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC and len(answer_values(edns)) == 60
    assert edns.edns == 0 and edns.payload == 1232
    small = ask(engine, f"web.svc.{ZONE}", "SRV", host=host, use_edns=0, payload=1232)
    assert small.flags & dns.flags.TC
    full = ask(engine, f"web.svc.{ZONE}", "SRV", host=host, tcp=True, use_edns=0)
    assert not full.flags & dns.flags.TC
    assert len(answer_values(full)) == 60 + 2 + 2 + 1


def test_additional_section_dropped_before_setting_tc() -> None:
    feed = make_feed()
    feed.cluster(
        "many", [Gateway(address=f"10.60.0.{i}", port=443) for i in range(1, 7)], ["10.60.0.0/16"]
    )
    feed.service(WEB, "many", 1)
    message = ask(make_engine(feed), f"many.web.default.svc.{ZONE}", "SRV", host="10.60.1.1")
    # 6 SRV records fit in 512 bytes, their 6 glue records do not: no TC, no glue.
    assert len(answer_values(message)) == 6
    assert not message.flags & dns.flags.TC and not message.additional


def test_ecs_subnet_ranks_and_is_echoed_with_scope() -> None:
    engine = make_engine()
    # Sent by a resolver at 127.0.0.1 for a client in west's CIDR.
    ecs = dns.edns.ECSOption("10.2.7.0", 24)
    message = ask(engine, f"web.svc.{ZONE}", host="127.0.0.1", use_edns=0, options=[ecs])
    assert answer_values(message) == ["10.9.0.1"]
    (echo,) = message.options
    assert isinstance(echo, dns.edns.ECSOption)
    assert (echo.address, echo.srclen, echo.scopelen) == ("10.2.7.0", 24, 24)
    # A client-independent answer (NXDOMAIN) has scope 0.
    nx = ask(engine, f"ghost.svc.{ZONE}", host="127.0.0.1", use_edns=0, options=[ecs])
    assert nx.options[0].scopelen == 0
    # Source prefix 0: the resolver asks not to use client data; ranking uses the sender.
    zero = ask(
        engine,
        f"web.svc.{ZONE}",
        host=EAST_CLIENT,
        use_edns=0,
        options=[dns.edns.ECSOption("0.0.0.0", 0)],
    )
    assert sorted(answer_values(zero)) == ["10.0.0.1", "10.0.0.2"] and zero.options[0].scopelen == 0


def test_bad_ecs_is_formerr() -> None:
    engine = make_engine()
    # family 1, source /24 but 4 address bytes (must be 3)
    bad = dns.edns.GenericOption(dns.edns.OptionType.ECS, b"\x00\x01\x18\x00\x0a\x02\x07\x00")
    query = dns.message.make_query(f"web.svc.{ZONE}", "A", use_edns=0, options=[bad])
    response = engine.handle(query.to_wire(), EAST_CLIENT)
    assert response is not None and response[3] & 0x0F == dns.rcode.FORMERR
    assert engine.stats.rejected == {"ecs_address_length": 1}
