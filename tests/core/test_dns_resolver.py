"""Pure DNS core: every name form, type and error, ranking inputs, cache and
invalidation. Queries are built and answers parsed with dnspython; no sockets."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dnslib
import msgspec
import pytest
from prometheus_client import CollectorRegistry

from dns_server.config import DnsConfig
from dns_server.core.engine import DnsCore
from dns_server.io.metrics import DnsMetrics
from harness.static_view import StaticCluster, StaticView
from syncmesh.schema import Gateway
from syncmesh.view_api import ServiceKey, ViewChange

pytestmark = pytest.mark.core

ZONE = "syncmesh.internal."
EAST_CLIENT, WEST_CLIENT, SOUTH_CLIENT, NOWHERE = "10.1.2.3", "10.2.2.2", "10.3.3.3", "192.0.2.9"
WEB, API, DB = ServiceKey("default", "web"), ServiceKey("shop", "api"), ServiceKey("shop", "db")


def make_view() -> StaticView:
    view = StaticView(
        [
            StaticCluster(
                "east",
                [
                    Gateway(address="10.0.0.1", port=443),
                    Gateway(address="10.0.0.2", port=443, weight=50),
                ],
                ["10.1.0.0/16"],
                region="eu",
                zone="eu-1",
            ),
            StaticCluster(
                "west",
                [Gateway(address="10.9.0.1", port=8443), Gateway(address="fd00::9", port=8443)],
                ["10.2.0.0/16"],
                region="eu",
                zone="eu-2",
                rtt_ms=3.0,
            ),
            StaticCluster(
                "south",
                [Gateway(address="fd00::5", port=443)],
                ["10.3.0.0/16"],
                region="us",
                rtt_ms=50.0,
                stale=True,
            ),
        ]
    )
    for cluster, healthy in (("east", 2), ("west", 1), ("south", 1)):
        view.set_service(WEB, cluster, healthy)
    view.set_service(API, "east", 0)
    view.set_service(API, "west", 3)
    view.set_service(DB, "east", 0)
    return view


def make_core(view: StaticView | None = None, **config: object) -> DnsCore:
    return DnsCore(DnsConfig(**config), view or make_view(), serial=1234)  # type: ignore[arg-type]


def ask(
    core: DnsCore,
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
    response = (None if tcp else core.hot(wire, host)) or core.handle(wire, host, tcp=tcp)
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
    message = ask(make_core(), name)
    assert message.rcode() == dns.rcode.NOERROR
    assert message.flags & dns.flags.AA
    assert sorted(answer_values(message)) == ["10.0.0.1", "10.0.0.2"]
    assert message.answer[0].ttl == 5


def test_pinned_name_overrides_ranking() -> None:
    message = ask(make_core(), f"west.web.default.svc.{ZONE}", "AAAA", host=EAST_CLIENT)
    assert answer_values(message) == ["fd00::9"]


def test_pinned_unknown_cluster_or_service_not_there_is_nxdomain() -> None:
    core = make_core()
    assert ask(core, f"mars.web.default.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    # db exists only in east
    assert ask(core, f"west.db.shop.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN


def test_ranking_follows_client_class() -> None:
    core = make_core()
    assert answer_values(ask(core, f"web.svc.{ZONE}", host=WEST_CLIENT)) == ["10.9.0.1"]
    assert answer_values(ask(core, f"web.svc.{ZONE}", "AAAA", host=SOUTH_CLIENT)) == ["fd00::5"]
    # South's gateway is IPv6 only: the top cluster has no A data.
    south_a = ask(core, f"web.svc.{ZONE}", host=SOUTH_CLIENT)
    assert south_a.rcode() == dns.rcode.NOERROR and not south_a.answer
    # No class: RTT decides (west 3 ms before south 50 ms, east unmeasured last).
    assert answer_values(ask(core, f"web.svc.{ZONE}", host=NOWHERE)) == ["10.9.0.1"]


def test_a_records_rotate_between_queries() -> None:
    core = make_core()
    firsts = {answer_values(ask(core, f"web.svc.{ZONE}"))[0] for _ in range(4)}
    assert firsts == {"10.0.0.1", "10.0.0.2"}


def test_srv_lists_every_candidate_with_rank_priority_and_glue() -> None:
    core = make_core()
    message = ask(core, f"web.svc.{ZONE}", "SRV", use_edns=0)
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
        assert answer_values(ask(core, target, rdtype)) == glue[target]


def test_target_of_unknown_gateway_is_nxdomain_and_wrong_family_nodata() -> None:
    core = make_core()
    assert ask(core, f"10-0-0-7.east.web.default.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    nodata = ask(core, f"10-0-0-1.east.web.default.svc.{ZONE}", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and soa_ttl(nodata) == 5


def test_txt_explains_ranking_reason_and_staleness() -> None:
    texts = [v.strip('"') for v in answer_values(ask(make_core(), f"web.svc.{ZONE}", "TXT"))]
    assert len(texts) == 3
    assert texts[0].startswith("rank=0 cluster=east reason=client-cidr healthy=2")
    assert "rank=1 cluster=west reason=same-region" in texts[1] and "rtt_ms=3.0" in texts[1]
    assert "cluster=south" in texts[2] and texts[2].endswith("stale=yes")


def test_apex_soa_ns_and_minimal_any() -> None:
    core = make_core(
        ns_names=["ns1.syncmesh.internal.", "ns2.example.net."],
        ns_addresses={"ns1.syncmesh.internal.": ["192.0.2.53"]},
    )
    soa = ask(core, ZONE, "SOA")
    (rd,) = soa.answer[0]
    assert (
        rd.mname.to_text() == "ns1.syncmesh.internal."
        and rd.rname.to_text() == "hostmaster.syncmesh.internal."
    )
    assert rd.serial == 1234 and rd.minimum == 5
    ns = ask(core, ZONE, "NS")
    assert sorted(answer_values(ns)) == ["ns1.syncmesh.internal.", "ns2.example.net."]
    assert [r.to_text() for rrset in ns.additional for r in rrset] == ["192.0.2.53"]
    assert answer_values(ask(core, "NS1.syncmesh.internal.")) == ["192.0.2.53"]
    any_apex = ask(core, ZONE, "ANY")
    assert [rrset.rdtype for rrset in any_apex.answer] == [dns.rdatatype.SOA]
    any_web = ask(core, f"web.svc.{ZONE}", "ANY")
    assert [rrset.rdtype for rrset in any_web.answer] == [dns.rdatatype.A]
    apex_mx = ask(core, ZONE, "MX")
    assert apex_mx.rcode() == dns.rcode.NOERROR and not apex_mx.answer


def test_default_ns_is_in_zone_with_the_listen_address_as_glue() -> None:
    ns = ask(make_core(), ZONE, "NS")
    assert answer_values(ns) == ["ns.syncmesh.internal."]
    assert [r.to_text() for rrset in ns.additional for r in rrset] == ["127.0.0.1"]


# -- errors ---------------------------------------------------------------------


def test_unknown_names_are_nxdomain_with_soa_and_negative_ttl() -> None:
    core = make_core(ttl=30, soa_minimum=7)
    for name in (
        f"ghost.svc.{ZONE}",
        f"ghost.shop.svc.{ZONE}",
        f"www.{ZONE}",
        f"a.b.c.d.e.svc.{ZONE}",
    ):
        message = ask(core, name)
        assert message.rcode() == dns.rcode.NXDOMAIN, name
        assert message.flags & dns.flags.AA
        assert soa_ttl(message) == 7


def test_known_name_without_data_or_healthy_cluster_is_nodata_with_soa() -> None:
    core = make_core(soa_minimum=9)
    for name, rdtype in (
        (f"web.svc.{ZONE}", "MX"),
        (f"db.shop.svc.{ZONE}", "A"),
        (f"db.shop.svc.{ZONE}", "SRV"),
        (f"svc.{ZONE}", "A"),
    ):
        message = ask(core, name, rdtype)
        assert message.rcode() == dns.rcode.NOERROR and not message.answer, (name, rdtype)
        assert soa_ttl(message) == 9


def test_unhealthy_cluster_is_skipped() -> None:
    # api: east has 0 healthy, west 3 -> even an east client gets west.
    assert answer_values(ask(make_core(), f"api.shop.svc.{ZONE}")) == ["10.9.0.1"]


def test_namespace_with_services_is_an_empty_non_terminal_not_nxdomain() -> None:
    message = ask(make_core(), f"shop.svc.{ZONE}")
    assert message.rcode() == dns.rcode.NOERROR and not message.answer


def test_outside_zone_other_class_and_transfer_are_refused() -> None:
    core = make_core()
    for name, rdtype in (("example.com.", "A"), ("internal.", "SOA"), (ZONE, "AXFR")):
        message = ask(core, name, rdtype)
        assert message.rcode() == dns.rcode.REFUSED
        assert not message.answer and not message.flags & dns.flags.AA
    chaos = dns.message.make_query("version.bind.", "TXT", "CH")
    response = core.handle(chaos.to_wire(), EAST_CLIENT)
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
    core = make_core()
    cases = {
        "question_count": _raw_query(qdcount=2),
        "trailing_bytes": _raw_query(tail=b"\x00"),
        "question_truncated": _raw_query()[:-2],
        "label_type": _raw_query()[:12] + b"\x50abc\x00\x00\x01\x00\x01",
    }
    for reason, packet in cases.items():
        response = core.handle(packet, EAST_CLIENT)
        assert response is not None, reason
        assert response[:2] == b"\x12\x34"
        assert response[3] & 0x0F == dns.rcode.FORMERR, reason
        assert core.stats.rejected[reason] == 1


def test_unanswerable_packets_are_dropped() -> None:
    core = make_core()
    assert core.handle(b"\x12\x34\x01", EAST_CLIENT) is None
    assert core.handle(_raw_query(flags=0x8100), EAST_CLIENT) is None  # a response: never answer it
    assert core.stats.rejected == {"short_header": 1, "not_a_query": 1}


def test_other_opcode_notimp_and_edns_version_badvers() -> None:
    core = make_core()
    notify = core.handle(_raw_query(flags=0x2000), EAST_CLIENT)
    assert notify is not None and notify[3] & 0x0F == dns.rcode.NOTIMP
    query = dns.message.make_query(f"web.svc.{ZONE}", "A", use_edns=1)
    response = core.handle(query.to_wire(), EAST_CLIENT)
    assert response is not None
    assert dns.message.from_wire(response).rcode() == dns.rcode.BADVERS


def test_compressed_question_names_go_to_the_dnslib_fallback() -> None:
    core = make_core()
    # "web" + pointer to offset 4, where the header's qdcount high byte (0) ends the name: "web."
    legal = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\xc0\x04\x00\x01\x00\x01"
    response = core.handle(legal, EAST_CLIENT)
    assert response is not None
    message = dns.message.from_wire(response)
    assert message.rcode() == dns.rcode.REFUSED and message.question[0].name.to_text() == "web."
    # A pointer back to its own label loops: FORMERR, not a hang.
    looping = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\xc0\x0c\x00\x01\x00\x01"
    response = core.handle(looping, EAST_CLIENT)
    assert response is not None and response[3] & 0x0F == dns.rcode.FORMERR
    assert core.stats.rejected == {"malformed": 1}


def test_case_is_echoed_and_answers_are_case_insensitive() -> None:
    core = make_core()
    for name in (
        "WeB.SvC.SyncMesh.Internal.",
        "web.svc.syncmesh.internal.",
        "WEB.SVC.SYNCMESH.INTERNAL.",
    ):
        message = ask(core, name)
        assert message.question[0].name.to_text() == name
        assert sorted(answer_values(message)) == ["10.0.0.1", "10.0.0.2"]


# -- EDNS, truncation, ECS -------------------------------------------------------


def big_view() -> StaticView:
    view = make_view()
    view.set_cluster(
        StaticCluster(
            "big",
            [Gateway(address=f"10.50.0.{i}", port=443) for i in range(1, 61)],
            ["10.50.0.0/16"],
        )
    )
    view.set_service(WEB, "big", 5)
    return view


def test_truncation_without_edns_then_full_over_edns_and_tcp() -> None:
    core = make_core(big_view())
    host = "10.50.1.1"
    plain = ask(core, f"web.svc.{ZONE}", host=host)
    assert plain.flags & dns.flags.TC
    assert 0 < len(answer_values(plain)) < 60
    assert core.stats.truncated == 1
    # EDNS 4096 advertised, but the server caps at max_udp_payload 1232: 60 A records fit (~1 KB).
    edns = ask(core, f"web.svc.{ZONE}", host=host, use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC and len(answer_values(edns)) == 60
    assert edns.edns == 0 and edns.payload == 1232
    small = ask(core, f"web.svc.{ZONE}", "SRV", host=host, use_edns=0, payload=1232)
    assert small.flags & dns.flags.TC
    full = ask(core, f"web.svc.{ZONE}", "SRV", host=host, tcp=True, use_edns=0)
    assert not full.flags & dns.flags.TC
    assert len(answer_values(full)) == 60 + 2 + 2 + 1


def test_additional_section_dropped_before_setting_tc() -> None:
    view = make_view()
    view.set_cluster(
        StaticCluster(
            "many",
            [Gateway(address=f"10.60.0.{i}", port=443) for i in range(1, 7)],
            ["10.60.0.0/16"],
        )
    )
    view.set_service(WEB, "many", 1)
    message = ask(make_core(view), f"many.web.default.svc.{ZONE}", "SRV", host="10.60.1.1")
    # 6 SRV records fit in 512 bytes, their 6 glue records do not: no TC, no glue.
    assert len(answer_values(message)) == 6
    assert not message.flags & dns.flags.TC and not message.additional


def test_ecs_subnet_ranks_and_is_echoed_with_scope() -> None:
    core = make_core()
    # Sent by a resolver at 127.0.0.1 for a client in west's CIDR.
    ecs = dns.edns.ECSOption("10.2.7.0", 24)
    message = ask(core, f"web.svc.{ZONE}", host="127.0.0.1", use_edns=0, options=[ecs])
    assert answer_values(message) == ["10.9.0.1"]
    (echo,) = message.options
    assert isinstance(echo, dns.edns.ECSOption)
    assert (echo.address, echo.srclen, echo.scopelen) == ("10.2.7.0", 24, 24)
    # A client-independent answer (NXDOMAIN) has scope 0.
    nx = ask(core, f"ghost.svc.{ZONE}", host="127.0.0.1", use_edns=0, options=[ecs])
    assert nx.options[0].scopelen == 0
    # Source prefix 0: the resolver asks not to use client data; ranking uses the sender.
    zero = ask(
        core,
        f"web.svc.{ZONE}",
        host=EAST_CLIENT,
        use_edns=0,
        options=[dns.edns.ECSOption("0.0.0.0", 0)],
    )
    assert sorted(answer_values(zero)) == ["10.0.0.1", "10.0.0.2"] and zero.options[0].scopelen == 0


def test_bad_ecs_is_formerr() -> None:
    core = make_core()
    # family 1, source /24 but 4 address bytes (must be 3)
    bad = dns.edns.GenericOption(dns.edns.OptionType.ECS, b"\x00\x01\x18\x00\x0a\x02\x07\x00")
    query = dns.message.make_query(f"web.svc.{ZONE}", "A", use_edns=0, options=[bad])
    response = core.handle(query.to_wire(), EAST_CLIENT)
    assert response is not None and response[3] & 0x0F == dns.rcode.FORMERR
    assert core.stats.rejected == {"ecs_address_length": 1}


# -- cache ---------------------------------------------------------------------


def test_a_hit_does_no_dnslib_work(monkeypatch: pytest.MonkeyPatch) -> None:
    view = make_view()
    core = make_core(view)
    ask(core, f"web.svc.{ZONE}")
    calls = view.resolve_calls

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("dnslib used on a cache hit")

    monkeypatch.setattr(dnslib.DNSRecord, "pack", forbidden)
    monkeypatch.setattr(dnslib.DNSRecord, "parse", forbidden)
    for name in ("web.svc.syncmesh.internal.", "WEB.svc.syncmesh.internal."):
        assert sorted(answer_values(ask(core, name))) == ["10.0.0.1", "10.0.0.2"]
    assert view.resolve_calls == calls


def test_invalidation_drops_exactly_the_changed_service_for_every_type_and_class() -> None:
    view = make_view()
    core = make_core(view)
    warm = [
        (f"web.svc.{ZONE}", t, h) for t in ("A", "SRV", "TXT") for h in (EAST_CLIENT, WEST_CLIENT)
    ]
    warm += [
        (f"east.web.default.svc.{ZONE}", "A", EAST_CLIENT),
        (f"api.shop.svc.{ZONE}", "A", EAST_CLIENT),
    ]
    for name, rdtype, host in warm:
        ask(core, name, rdtype, host)
    entries = len(core.cache)
    view.remove_service(WEB, "east")
    # Not told yet: the precomputed answer stays.
    assert sorted(answer_values(ask(core, f"web.svc.{ZONE}"))) == ["10.0.0.1", "10.0.0.2"]
    dropped = core.invalidate(ViewChange(services=frozenset({WEB})))
    assert dropped == 7 and len(core.cache) == entries - 7
    assert answer_values(ask(core, f"web.svc.{ZONE}")) == ["10.9.0.1"]
    assert ask(core, f"east.web.default.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    calls = view.resolve_calls
    ask(core, f"api.shop.svc.{ZONE}")
    assert view.resolve_calls == calls  # api untouched
    assert core.invalidate(ViewChange(everything=True)) == len(warm) - 7 + 2
    assert len(core.cache) == 0


def test_new_service_replaces_cached_nxdomain_and_namespace_ent() -> None:
    view = make_view()
    core = make_core(view)
    assert ask(core, f"new.team.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    assert ask(core, f"team.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    core.invalidate(view.set_service(ServiceKey("team", "new"), "west", 1))
    assert answer_values(ask(core, f"new.team.svc.{ZONE}")) == ["10.9.0.1"]
    assert ask(core, f"team.svc.{ZONE}").rcode() == dns.rcode.NOERROR


def test_client_moving_class_after_topology_change() -> None:
    view = make_view()
    core = make_core(view)
    assert answer_values(ask(core, f"web.svc.{ZONE}", host=NOWHERE)) == ["10.9.0.1"]
    core.invalidate(
        view.set_cluster(
            StaticCluster("east", [Gateway(address="10.0.0.1", port=443)], ["192.0.2.0/24"])
        )
    )
    assert answer_values(ask(core, f"web.svc.{ZONE}", host=NOWHERE)) == ["10.0.0.1"]


def test_cache_stays_bounded_under_random_names() -> None:
    core = make_core(cache_max_entries=50)
    for i in range(500):
        ask(core, f"r{i}.svc.{ZONE}")
        ask(core, f"R{i}.SVC.{ZONE}")
    assert len(core.cache) <= 50 and core.cache.packet_count <= 50
    assert sorted(answer_values(ask(core, f"web.svc.{ZONE}"))) == ["10.0.0.1", "10.0.0.2"]


# -- metrics and config ---------------------------------------------------------


def test_metrics_count_queries_by_type_and_rcode_and_cache_hits() -> None:
    registry = CollectorRegistry()
    core = make_core()
    DnsMetrics(registry, lambda: core.stats, lambda: len(core.cache))
    for _ in range(3):
        ask(core, f"web.svc.{ZONE}")
    ask(core, f"ghost.svc.{ZONE}", "AAAA")
    core.handle(_raw_query(qdcount=0), EAST_CLIENT)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("syncmesh_dns_queries_total", qtype="A", rcode="NOERROR") == 3
    assert value("syncmesh_dns_queries_total", qtype="AAAA", rcode="NXDOMAIN") == 1
    assert value("syncmesh_dns_queries_total", qtype="none", rcode="FORMERR") == 1
    assert value("syncmesh_dns_cache_hits_total") == 2
    assert value("syncmesh_dns_cache_misses_total") == 2
    assert value("syncmesh_dns_rejected_total", reason="question_count") == 1
    assert value("syncmesh_dns_cache_entries") == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"port": 70000},
        {"address": "not-an-ip"},
        {"zone": "."},
        {"max_udp_payload": 100},
        {"unknown": 1},
    ],
)
def test_config_rejects_bad_settings(bad: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(bad, DnsConfig)


def test_config_normalises_names() -> None:
    config = msgspec.convert({"zone": "Mesh.Example", "ns_names": ["NS1.mesh.example"]}, DnsConfig)
    assert config.zone == "mesh.example." and config.ns_names == ["ns1.mesh.example."]
    assert config.soa_mname == "ns1.mesh.example." and config.ns_addresses == {
        "ns1.mesh.example.": ["127.0.0.1"]
    }
