"""DNS answers that know versions, tags and gateway load (issue 14), over the
registry's real view: subset names (``<version>.version.<service>...``,
``<tag>.tag.<service>...``), their empty non-terminals, SRV weights scaled by
headroom, overloaded clusters demoted (TXT says why), and the cache dropping
those answers when loads or instances change."""

from __future__ import annotations

import dns.message
import dns.rcode
import pytest

from dns_server.config import DnsConfig
from dns_server.core.engine import AnswerEngine
from dns_server.core.names import NameKind, classify, subset_name
from dns_server.core.resolver import srv_weight
from harness.samples import instance
from harness.view_feed import ViewFeed
from syncmesh.schema import Gateway, Instance
from syncmesh.view_api import ServiceKey, Subset

pytestmark = pytest.mark.core

ZONE = "syncmesh.internal."
EAST_CLIENT, WEST_CLIENT = "10.1.2.3", "10.2.2.2"
PAY = ServiceKey("shop", "payments")
BASE = f"payments.shop.svc.{ZONE}"
EAST_GW, WEST_GW = Gateway(address="10.0.0.1", port=443), Gateway(address="10.9.0.1", port=443)


def inst(
    n: int, version: str = "", tags: list[str] | None = None, health: str = "passing"
) -> Instance:
    return instance(
        id=f"i{n}", address=f"192.0.2.{n}", version=version, tags=tags or [], health=health
    )


def make_feed() -> ViewFeed:
    """payments: east runs 1.2.3 (one canary) and a critical 2.0.0; west runs 2.0.0."""
    feed = ViewFeed()
    feed.cluster("east", [EAST_GW], ["10.1.0.0/16"], rtt_ms=1.0)
    feed.cluster("west", [WEST_GW], ["10.2.0.0/16"], rtt_ms=20.0)
    feed.service(
        PAY,
        "east",
        instances=[
            inst(1, "1.2.3", ["blue"]),
            inst(2, "1.2.3", ["blue", "Canary"]),
            inst(3, "2.0.0", health="critical"),
        ],
    )
    feed.service(PAY, "west", instances=[inst(4, "2.0.0", ["green"]), inst(5, "2.0.0")])
    return feed


def ask(
    engine: AnswerEngine, name: str, rdtype: str = "A", host: str = EAST_CLIENT
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    wire = query.to_wire()
    response = engine.hot(wire, host) or engine.handle(wire, host, tcp=False)
    assert response is not None
    return dns.message.from_wire(response)


def values(message: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in message.answer for rd in rrset]


def engine_for(feed: ViewFeed) -> AnswerEngine:
    return AnswerEngine(DnsConfig(), feed.view, serial=1)


# -- names ----------------------------------------------------------------------


def test_subset_names_classify_apart_from_pinned_and_target_names() -> None:
    ns = frozenset({f"ns.{ZONE}"})
    ref = classify(f"1-2-3.version.{BASE}", ZONE, ns)
    assert ref.kind is NameKind.SERVICE and ref.key == PAY and ref.subset == Subset(version="1-2-3")
    ref = classify(f"canary.tag.{BASE}", ZONE, ns)
    assert ref.subset == Subset(tags=frozenset({"canary"}))
    assert classify(f"version.{BASE}", ZONE, ns).kind is NameKind.SUBSET_PARENT
    assert classify(f"tag.{BASE}", ZONE, ns).kind is NameKind.SUBSET_PARENT
    assert classify(f"east.{BASE}", ZONE, ns).kind is NameKind.PINNED
    assert classify(f"10-0-0-1.east.{BASE}", ZONE, ns).kind is NameKind.TARGET
    assert subset_name(PAY, ZONE, version="1.2.3") == f"1-2-3.version.{BASE}"
    assert subset_name(PAY, ZONE, tag="Canary") == f"canary.tag.{BASE}"


# -- subsets --------------------------------------------------------------------


def test_version_subset_answers_the_nearest_cluster_running_it() -> None:
    engine = engine_for(make_feed())
    # East's clients: east runs 1.2.3; 2.0.0 is healthy only in west.
    assert values(ask(engine, f"1-2-3.version.{BASE}")) == ["10.0.0.1"]
    assert values(ask(engine, f"2-0-0.version.{BASE}")) == ["10.9.0.1"]
    assert values(ask(engine, f"payments.shop.svc.{ZONE}")) == ["10.0.0.1"]
    # West's clients for 1.2.3 go east.
    assert values(ask(engine, f"1-2-3.version.{BASE}", host=WEST_CLIENT)) == ["10.0.0.1"]


def test_tag_subset_and_case_folding_of_values() -> None:
    engine = engine_for(make_feed())
    assert values(ask(engine, f"CANARY.tag.{BASE}")) == ["10.0.0.1"]
    assert values(ask(engine, f"green.tag.{BASE}")) == ["10.9.0.1"]
    texts = values(ask(engine, f"blue.tag.{BASE}", "TXT"))
    assert len(texts) == 1 and "cluster=east" in texts[0] and "healthy=2" in texts[0]
    srv = ask(engine, f"2-0-0.version.{BASE}", "SRV")
    assert [(rd.priority, rd.target.to_text()) for rd in srv.answer[0]] == [
        (0, f"10-9-0-1.west.{BASE}")
    ]


def test_unknown_subset_of_a_known_service_is_nodata_and_unknown_service_nxdomain() -> None:
    engine = engine_for(make_feed())
    nodata = ask(engine, f"9-9.version.{BASE}")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
    assert ask(engine, f"1-2-3.version.ghost.shop.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN


def test_marker_labels_are_empty_non_terminals_of_a_known_service() -> None:
    engine = engine_for(make_feed())
    for name in (f"version.{BASE}", f"tag.{BASE}"):
        message = ask(engine, name)
        assert message.rcode() == dns.rcode.NOERROR and not message.answer
    assert ask(engine, f"version.ghost.shop.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN


def test_subset_answers_follow_instance_changes() -> None:
    feed = make_feed()
    engine = engine_for(feed)
    assert values(ask(engine, f"1-2-3.version.{BASE}", host=WEST_CLIENT)) == ["10.0.0.1"]
    change = feed.service(PAY, "west", instances=[inst(4, "1.2.3"), inst(5, "2.0.0")])
    engine.invalidate(change)
    assert values(ask(engine, f"1-2-3.version.{BASE}", host=WEST_CLIENT)) == ["10.9.0.1"]


def test_view_counts_healthy_instances_per_version_and_tag() -> None:
    view = make_feed().view
    counts = view.subset_counts(PAY, "east")
    assert counts is not None
    assert counts.versions == {"1-2-3": 2}  # the critical 2.0.0 does not count
    assert counts.tags == {"blue": 2, "canary": 1}
    assert view.subset_counts(PAY, "nowhere") is None
    both = view.resolve(PAY, None, subset=Subset(version="1-2-3", tags=frozenset({"canary"})))
    assert [(c.cluster, c.healthy_instances) for c in both.clusters] == [("east", 1)]
    none = view.resolve(PAY, None, subset=Subset(version="1-2-3", tags=frozenset({"green"})))
    assert none.known and not none.clusters


# -- load -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "load", "expected"),
    [
        (100, None, 100),
        (100, 0, 100),
        (100, 40, 60),
        (50, 90, 5),
        (100, 99, 1),
        (3, 90, 1),
        (100, 100, 0),
        (0, 10, 0),
    ],
)
def test_srv_weight_is_scaled_by_headroom(weight: int, load: int | None, expected: int) -> None:
    assert srv_weight(Gateway(address="10.0.0.1", port=1, weight=weight, load=load)) == expected


def test_overloaded_cluster_moves_answers_away_and_back_with_txt_reason() -> None:
    feed = make_feed()
    engine = engine_for(feed)
    assert values(ask(engine, BASE)) == ["10.0.0.1"]
    hot = Gateway(address="10.0.0.1", port=443, load=90)
    engine.invalidate(feed.beat("east", [hot]))
    assert values(ask(engine, BASE)) == ["10.9.0.1"]
    texts = values(ask(engine, BASE, "TXT"))
    assert "cluster=west reason=rtt" in texts[0] and "load=unknown" in texts[0]
    assert "rank=1 cluster=east reason=overloaded" in texts[1] and "load=90" in texts[1]
    srv = ask(engine, BASE, "SRV")
    assert sorted((rd.priority, rd.weight, rd.port) for rd in srv.answer[0]) == [
        (0, 100, 443),
        (1, 10, 443),
    ]
    cool = Gateway(address="10.0.0.1", port=443, load=50)
    engine.invalidate(feed.beat("east", [cool]))
    assert values(ask(engine, BASE)) == ["10.0.0.1"]
    assert "reason=client-cidr" in values(ask(engine, BASE, "TXT"))[0]
