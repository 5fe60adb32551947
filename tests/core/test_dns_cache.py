"""The answer cache over the registry's real view: the one hot lookup every UDP
reader calls (``AnswerEngine.hot``), 0x20 case randomisation, invalidation by
view change, bounds, metrics and the rejection hook."""

from __future__ import annotations

import random
import socket
import sys

import dns.message
import dns.rcode
import dns.rdatatype
import dnslib
import msgspec
import pytest
from prometheus_client import CollectorRegistry

from dns_server.config import DnsConfig
from dns_server.core.cache import ipv4_key, packet_key
from dns_server.core.engine import AnswerEngine
from dns_server.core.wire import Reject
from dns_server.io.metrics import DnsMetrics
from global_registry.core.probe_fsm import ProbePhase
from global_registry.core.probes import GatewayStatus
from harness.view_feed import ViewFeed
from syncmesh.schema import Gateway, Instance
from syncmesh.view_api import ServiceKey, ViewChange

pytestmark = pytest.mark.core

ZONE = "syncmesh.internal."
EAST_CLIENT, WEST_CLIENT, NOWHERE = "10.1.2.3", "10.2.2.2", "192.0.2.9"
WEB, API = ServiceKey("default", "web"), ServiceKey("shop", "api")
EAST_GATEWAYS = [Gateway(address="10.0.0.1", port=443), Gateway(address="10.0.0.2", port=443)]


def make_feed() -> ViewFeed:
    """east (unmeasured) and west (3 ms); web in both, api only in west."""
    feed = ViewFeed()
    feed.cluster("east", EAST_GATEWAYS, ["10.1.0.0/16"], region="eu", zone="eu-1")
    feed.cluster(
        "west", [Gateway(address="10.9.0.1", port=8443)], ["10.2.0.0/16"], region="eu", rtt_ms=3.0
    )
    feed.service(WEB, "east", 2)
    feed.service(WEB, "west", 1)
    feed.service(API, "west", 3)
    return feed


def make_engine(feed: ViewFeed | None = None, **config: object) -> AnswerEngine:
    view = (feed or make_feed()).view
    return AnswerEngine(DnsConfig(**config), view, serial=1)  # type: ignore[arg-type]


def count_resolves(feed: ViewFeed, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A counter of ``view.resolve`` calls (the resolver's only way to the view's data)."""
    calls = [0]
    resolve = feed.view.resolve

    def counted(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return resolve(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(feed.view, "resolve", counted)
    return calls


def exchange(engine: AnswerEngine, wire: bytes, host: str = EAST_CLIENT) -> tuple[bytes, bool]:
    """The response as a UDP reader produces it, and whether ``hot`` gave it."""
    response = engine.hot(wire, host)
    if response is not None:
        return response, True
    slow = engine.handle(wire, host)
    assert slow is not None
    return slow, False


def ask(
    engine: AnswerEngine, name: str, rdtype: str = "A", host: str = EAST_CLIENT
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    response, _ = exchange(engine, query.to_wire(), host)
    message = dns.message.from_wire(response)
    assert message.id == query.id
    return message


def answer_values(message: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in message.answer for rd in rrset]


def randomise_case(name: str, rng: random.Random) -> str:
    """What a resolver doing 0x20 (Unbound use-caps-for-id) sends."""
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in name)


# -- the hot lookup --------------------------------------------------------------


def test_a_repeated_query_is_answered_by_the_hot_lookup_without_dnslib(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed = make_feed()
    engine = make_engine(feed)
    calls = count_resolves(feed, monkeypatch)
    wire = dns.message.make_query(f"web.svc.{ZONE}", "A").to_wire()
    assert engine.hot(wire, EAST_CLIENT) is None  # nothing remembered yet
    first, hot = exchange(engine, wire)
    assert not hot and calls[0] == 1

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("dnslib used on a cache hit")

    monkeypatch.setattr(dnslib.DNSRecord, "pack", forbidden)
    monkeypatch.setattr(dnslib.DNSRecord, "parse", forbidden)
    for query_id in (1, 2, 0xFFFF):
        again = query_id.to_bytes(2, "big") + wire[2:]
        response, hot = exchange(engine, again)
        assert hot and response[:2] == again[:2]
        assert sorted(answer_values(dns.message.from_wire(response))) == ["10.0.0.1", "10.0.0.2"]
    assert calls[0] == 1
    assert engine.stats.packet_hits == 3 and engine.stats.misses == 1


def test_the_hot_lookup_knows_clients_only_once_classified() -> None:
    engine = make_engine()
    wire = dns.message.make_query(f"web.svc.{ZONE}", "A").to_wire()
    exchange(engine, wire, EAST_CLIENT)
    # Another client of the same class shares the answers, but only once the
    # slow path has looked its address up.
    assert engine.hot(wire, "10.1.9.9") is None
    assert exchange(engine, wire, "10.1.9.9")[1] is False
    assert exchange(engine, wire, "10.1.9.9")[1] is True
    assert engine.stats.misses == 1  # the class's answer was already there


def test_the_batched_readers_integer_ipv4_key_hits_the_same_answers() -> None:
    """The batched UDP reader looks IPv4 clients up by the word it reads from the
    kernel's sockaddr (``ipv4_key``); it must find what the address string finds,
    and lose it whenever the string loses it (a topology change)."""
    engine = make_engine()
    wire = dns.message.make_query(f"web.svc.{ZONE}", "A").to_wire()
    key = ipv4_key(EAST_CLIENT)
    assert key == int.from_bytes(socket.inet_aton(EAST_CLIENT), sys.byteorder)
    assert ipv4_key("fd00::1") is None and ipv4_key("not an address") is None
    assert engine.hot(wire, key) is None
    exchange(engine, wire, EAST_CLIENT)
    by_word, by_text = engine.hot(wire, key), engine.hot(wire, EAST_CLIENT)
    assert by_word is not None and by_text is not None
    # The same answer (consecutive hits rotate the records: compare the sets).
    assert sorted(answer_values(dns.message.from_wire(by_word))) == sorted(
        answer_values(dns.message.from_wire(by_text))
    )
    engine.invalidate(ViewChange(everything=True))
    assert engine.hot(wire, key) is None and engine.hot(wire, EAST_CLIENT) is None


# -- 0x20 case randomisation (issue 15) ----------------------------------------


def test_randomised_case_hits_the_hot_lookup_and_echoes_the_question() -> None:
    engine = make_engine()
    rng = random.Random(20)
    name = f"web.default.svc.{ZONE}"
    exchange(engine, dns.message.make_query(name, "A").to_wire())
    asked = 200
    for _ in range(asked):
        sent = randomise_case(name, rng)
        query = dns.message.make_query(sent, "A")
        wire = query.to_wire()
        response, hot = exchange(engine, wire)
        assert hot, sent
        # 0x20 needs the question back byte for byte: same case as sent.
        question_end = 12 + len(query.question[0].name.to_wire()) + 4
        assert response[12:question_end] == wire[12:question_end]
        message = dns.message.from_wire(response)
        assert message.question[0].name.to_text() == sent
        assert sorted(answer_values(message)) == ["10.0.0.1", "10.0.0.2"]
    assert engine.stats.packet_hits == asked
    assert engine.stats.misses == 1 and engine.stats.answer_hits == 0


def test_first_query_in_mixed_case_is_remembered_folded() -> None:
    engine = make_engine()
    mixed = dns.message.make_query(f"WeB.sVc.{ZONE.upper()}", "SRV").to_wire()
    response, hot = exchange(engine, mixed)
    assert not hot and response[12 : len(mixed)] == mixed[12:]  # the question as sent
    lower = dns.message.make_query(f"web.svc.{ZONE}", "SRV").to_wire()
    response, hot = exchange(engine, lower)
    assert hot and dns.message.from_wire(response).question[0].name.to_text() == f"web.svc.{ZONE}"
    response, hot = exchange(engine, mixed)
    assert hot and response[12 : len(mixed)] == mixed[12:]
    assert engine.stats.packet_hits == 2


def test_the_key_folds_only_the_question_name() -> None:
    def query(name: bytes, qtype: int) -> bytes:
        return b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + qtype.to_bytes(2, "big")

    name = b"\x03web\x03svc\x08syncmesh\x08internal\x00"
    assert packet_key(query(name.upper(), 1)) == packet_key(query(name, 1))
    # qtype 0x0041 (HTTPS) is the letter "A": never folded into 0x0061.
    assert packet_key(query(name, 0x41)) != packet_key(query(name, 0x61))
    # A zero byte inside a label ends the folding: the rest is kept as sent.
    odd = b"\x03a\x00B\x03svc\x08syncmesh\x08internal\x00"
    assert packet_key(query(odd, 1)) != packet_key(query(odd.replace(b"B", b"b"), 1))


def test_https_and_type_97_queries_are_not_merged() -> None:
    engine = make_engine()
    for qtype in (65, 97, 65, 97):
        query = dns.message.make_query(f"web.svc.{ZONE}", qtype)
        message = dns.message.from_wire(exchange(engine, query.to_wire())[0])
        assert message.question[0].rdtype == qtype


# -- invalidation ---------------------------------------------------------------


def test_invalidation_drops_exactly_the_changed_service_for_every_type_and_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed = make_feed()
    engine = make_engine(feed)
    warm = [
        (f"web.svc.{ZONE}", t, h) for t in ("A", "SRV", "TXT") for h in (EAST_CLIENT, WEST_CLIENT)
    ]
    warm += [
        (f"east.web.default.svc.{ZONE}", "A", EAST_CLIENT),
        (f"api.shop.svc.{ZONE}", "A", EAST_CLIENT),
    ]
    for name, rdtype, host in warm:
        ask(engine, name, rdtype, host)
    entries = len(engine.cache)
    change = feed.delete(WEB, "east")
    assert change == ViewChange(services=frozenset({WEB}))
    # Not told yet: the precomputed answer stays.
    assert sorted(answer_values(ask(engine, f"web.svc.{ZONE}"))) == ["10.0.0.1", "10.0.0.2"]
    assert engine.invalidate(change) == 7 and len(engine.cache) == entries - 7
    assert answer_values(ask(engine, f"web.svc.{ZONE}")) == ["10.9.0.1"]
    assert ask(engine, f"east.web.default.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    calls = count_resolves(feed, monkeypatch)
    ask(engine, f"api.shop.svc.{ZONE}")
    assert calls[0] == 0  # api untouched
    assert engine.invalidate(ViewChange(everything=True)) == len(warm) - 7 + 2
    assert len(engine.cache) == 0 and engine.cache.packet_count == 0


def test_a_count_only_change_drops_only_the_answers_that_show_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Churn is mostly one instance of many flipping health: the cluster stays a
    candidate, so A/AAAA/SRV answers must survive (re-rendering them all after a
    burst of such changes halved the QPS until the cache was warm again); the TXT
    explanation shows the count and must not."""
    feed = make_feed()
    engine = make_engine(feed)
    for rdtype in ("A", "AAAA", "SRV", "TXT"):
        ask(engine, f"web.svc.{ZONE}", rdtype)
    ask(engine, f"web.svc.{ZONE}", "A", WEST_CLIENT)
    assert any("healthy=2" in v for v in answer_values(ask(engine, f"web.svc.{ZONE}", "TXT")))
    change = feed.service(WEB, "east", healthy=1, critical=1)
    assert change == ViewChange(counts=frozenset({WEB}))
    assert engine.invalidate(change) == 1  # the one TXT answer, for the one class that has it
    calls = count_resolves(feed, monkeypatch)
    for rdtype in ("A", "AAAA", "SRV"):
        wire = dns.message.make_query(f"web.svc.{ZONE}", rdtype).to_wire()
        assert exchange(engine, wire)[1], f"{rdtype} fell out of the hot cache"
    assert calls[0] == 0
    txt = answer_values(ask(engine, f"web.svc.{ZONE}", "TXT"))
    assert calls[0] == 1 and any("healthy=1" in v for v in txt)
    # The last healthy instance going is a candidacy change: every answer goes.
    change = feed.service(WEB, "east", healthy=0, critical=2)
    assert change == ViewChange(services=frozenset({WEB}))
    engine.invalidate(change)
    assert answer_values(ask(engine, f"web.svc.{ZONE}")) == ["10.9.0.1"]


@pytest.mark.parametrize("seed", range(8))
def test_after_random_instance_changes_every_cached_answer_is_what_a_fresh_engine_gives(
    seed: int,
) -> None:
    """Attack on the narrow invalidation: random instances (health, versions, tags)
    change service by service; after each change is invalidated, every answer the
    warm engine gives (A, SRV, TXT, version and tag subsets, pinned names, from
    every client class) must be byte for byte what a new engine renders."""
    rng = random.Random(seed)
    feed = ViewFeed()
    clusters = [f"c{i}" for i in range(rng.randint(2, 5))]
    for i, name in enumerate(clusters):
        feed.cluster(name, [Gateway(address=f"10.0.{i}.1", port=443)], [f"10.{i + 1}.0.0/16"])
    keys = [ServiceKey("default", f"s{i}") for i in range(rng.randint(1, 4))]

    def new_instance(n: int) -> Instance:
        return Instance(
            id=f"i{n}",
            address=f"192.0.2.{rng.randint(1, 3)}",
            port=8080,
            health=rng.choice(["passing", "passing", "warning", "critical"]),
            version=rng.choice(["", "v1", "v2"]),
            tags=rng.sample(["blue", "green"], rng.randint(0, 2)),
        )

    def mutate(current: list[Instance]) -> list[Instance]:
        """One change as agents send them: mostly one instance flipping health."""
        out = list(current)
        roll = rng.random()
        if out and roll < 0.6:
            i = rng.randrange(len(out))
            health = rng.choice(["passing", "warning", "critical"])
            out[i] = msgspec.structs.replace(out[i], health=health)
        elif out and roll < 0.7:
            i = rng.randrange(len(out))
            out[i] = msgspec.structs.replace(out[i], address=f"192.0.2.{rng.randint(1, 9)}")
        elif out and roll < 0.8:
            out.pop(rng.randrange(len(out)))
        elif roll < 0.9:
            out.append(new_instance(len(out) + rng.randint(10, 99)))
        else:
            out = [new_instance(n) for n in range(rng.randint(1, 4))]
        return out or [new_instance(0)]

    held: dict[tuple[ServiceKey, str], list[Instance]] = {}
    for key in keys:
        for cluster in clusters:
            if rng.random() < 0.7:
                held[key, cluster] = [new_instance(n) for n in range(rng.randint(1, 4))]
                feed.service(key, cluster, instances=held[key, cluster])
    names = []
    for key in keys:
        base = f"{key.service}.{key.namespace}.svc.{ZONE}"
        names += [base, f"v1.version.{base}", f"v2.version.{base}", f"blue.tag.{base}"]
        names += [f"{c}.{base}" for c in clusters]
    questions = [(n, t) for n in names for t in ("A", "SRV", "TXT")]
    hosts = [NOWHERE] + [f"10.{i + 1}.0.9" for i in range(len(clusters))]
    engine = make_engine(feed)

    def answers(of: AnswerEngine) -> dict[tuple[str, str, str], bytes]:
        out = {}
        for name, rdtype in questions:
            for host in hosts:
                query = dns.message.make_query(name, rdtype)
                query.id = 7
                out[name, rdtype, host] = exchange(of, query.to_wire(), host)[0]
        return out

    answers(engine)  # warm both levels
    for _ in range(10):
        key, cluster = rng.choice(list(held))
        held[key, cluster] = mutate(held[key, cluster])
        engine.invalidate(feed.service(key, cluster, instances=held[key, cluster]))
        fresh = answers(make_engine(feed))
        cached = answers(engine)
        wrong = [q for q in fresh if cached[q] != fresh[q]]
        assert not wrong, wrong[:3]


def test_new_service_replaces_cached_nxdomain_and_namespace_ent() -> None:
    feed = make_feed()
    engine = make_engine(feed)
    assert ask(engine, f"new.team.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    assert ask(engine, f"team.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    engine.invalidate(feed.service(ServiceKey("team", "new"), "west", 1))
    assert answer_values(ask(engine, f"new.team.svc.{ZONE}")) == ["10.9.0.1"]
    assert ask(engine, f"team.svc.{ZONE}").rcode() == dns.rcode.NOERROR


def test_client_moving_class_after_topology_change() -> None:
    feed = make_feed()
    engine = make_engine(feed)
    assert answer_values(ask(engine, f"web.svc.{ZONE}", host=NOWHERE)) == ["10.9.0.1"]
    # east now claims NOWHERE's network (a new beat): every answer and class is dropped.
    change = feed.cluster("east", EAST_GATEWAYS[:1], ["192.0.2.0/24"], region="eu", zone="eu-1")
    assert change.everything
    engine.invalidate(change)
    assert answer_values(ask(engine, f"web.svc.{ZONE}", host=NOWHERE)) == ["10.0.0.1"]


def test_a_gateway_going_down_changes_the_answer_once_invalidated() -> None:
    feed = make_feed()
    engine = make_engine(feed)
    assert sorted(answer_values(ask(engine, f"web.svc.{ZONE}"))) == ["10.0.0.1", "10.0.0.2"]
    down = GatewayStatus(phase=ProbePhase.DOWN, up=False)
    engine.invalidate(feed.probe("east", EAST_GATEWAYS[0], down))
    assert answer_values(ask(engine, f"web.svc.{ZONE}")) == ["10.0.0.2"]


def test_cache_stays_bounded_under_random_names() -> None:
    engine = make_engine(cache_max_entries=50)
    for i in range(500):
        ask(engine, f"r{i}.svc.{ZONE}")
        ask(engine, f"R{i}.SVC.{ZONE}")
    assert len(engine.cache) <= 50 and engine.cache.packet_count <= 50
    assert sorted(answer_values(ask(engine, f"web.svc.{ZONE}"))) == ["10.0.0.1", "10.0.0.2"]


def test_a_full_cache_evicts_its_oldest_packets_not_everything() -> None:
    """Regression: level 1 used to clear itself when full, so a working set just
    over the bound lost every hot packet at each clear (a hit-rate cliff).
    Two packet variants per question (with and without EDNS) fill level 1
    before level 2, whose own FIFO would otherwise evict first."""
    engine = make_engine(cache_max_entries=20)
    wires = []
    for i in range(13):
        name = f"r{i}.svc.{ZONE}"
        wires.append(dns.message.make_query(name, "A").to_wire())
        wires.append(dns.message.make_query(name, "A", use_edns=0).to_wire())
    for wire in wires:
        exchange(engine, wire)
    cache = engine.cache
    assert len(cache) == 13 and cache.packet_count == 20
    # The newest 20 packets stay hot; the oldest 6 went, one per store.
    assert all(engine.hot(wire, EAST_CLIENT) is not None for wire in wires[-20:])
    assert all(engine.hot(wire, EAST_CLIENT) is None for wire in wires[:6])
    exchange(engine, wires[0])
    assert engine.hot(wires[6], EAST_CLIENT) is None
    assert all(engine.hot(wire, EAST_CLIENT) is not None for wire in wires[7:])
    assert engine.hot(wires[0], EAST_CLIENT) is not None


def test_many_new_clients_evict_the_oldest_client_not_every_client() -> None:
    """Regression: 1,000s of new client addresses (many resolvers, a spoofed
    flood) used to throw every known client's class and hot entries away."""
    engine = make_engine(cache_max_entries=10)
    wire = dns.message.make_query(f"web.svc.{ZONE}", "A").to_wire()
    clients = [f"10.1.0.{i}" for i in range(1, 26)]
    for client in clients:
        exchange(engine, wire, client)
    # The last 10 clients are known to the hot lookup, the first 15 are not.
    assert all(engine.hot(wire, client) is not None for client in clients[-10:])
    assert all(engine.hot(wire, client) is None for client in clients[:15])
    # Bounded: aliases included, no more than two keys per remembered client.
    assert len(engine.cache.by_host) <= 20
    response, hot = exchange(engine, wire, clients[0])
    assert not hot and sorted(answer_values(dns.message.from_wire(response))) == [
        "10.0.0.1",
        "10.0.0.2",
    ]
    assert engine.hot(wire, clients[0]) is not None and engine.hot(wire, clients[-10]) is None


def test_eviction_and_invalidation_keep_the_packet_count_true() -> None:
    """Randomised: stores, evictions and view changes in any order leave the
    packet count equal to what the hot lookup can actually find, never above
    the bound, and every hot answer equals the slow path's."""
    rng = random.Random(7)
    feed = make_feed()
    engine = make_engine(feed, cache_max_entries=15)
    names = [f"web.svc.{ZONE}", f"api.shop.svc.{ZONE}"] + [f"n{i}.svc.{ZONE}" for i in range(25)]
    hosts = [EAST_CLIENT, WEST_CLIENT, NOWHERE]
    for step in range(600):
        roll = rng.random()
        if roll < 0.05:
            up = rng.random() < 0.5
            phase = ProbePhase.UP if up else ProbePhase.DOWN
            engine.invalidate(feed.probe("east", EAST_GATEWAYS[0], GatewayStatus(phase, up)))
        elif roll < 0.08:
            engine.invalidate(ViewChange(services=frozenset({WEB})))
        else:
            name = rng.choice(names)
            wire = dns.message.make_query(randomise_case(name, rng), "A").to_wire()
            host = rng.choice(hosts)
            response, hot = exchange(engine, wire, host)
            if hot:
                slow = engine.handle(wire, host)
                assert slow is not None
                hot_answer = dns.message.from_wire(response)
                slow_answer = dns.message.from_wire(slow)
                assert hot_answer.question == slow_answer.question
                assert sorted(answer_values(hot_answer)) == sorted(answer_values(slow_answer))
        cache = engine.cache
        stored = sum(len(packets) for packets in cache._packets.values())
        assert cache.packet_count == stored <= 15, step
        assert len(cache) <= 15


# -- metrics and the rejection hook ------------------------------------------------


def _no_question() -> bytes:
    return b"\x12\x34\x01\x00" + b"\x00" * 8


def test_metrics_count_queries_by_type_and_rcode_and_cache_hits_by_level() -> None:
    registry = CollectorRegistry()
    engine = make_engine()
    DnsMetrics(registry, lambda: engine.stats, lambda: len(engine.cache))
    for _ in range(3):
        ask(engine, f"web.svc.{ZONE}")
    # With an EDNS option the packet is not remembered: a level-2 (answer) hit.
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    query = dns.message.make_query(f"web.svc.{ZONE}", "A", use_edns=0, options=[cookie])
    assert exchange(engine, query.to_wire())[1] is False
    ask(engine, f"ghost.svc.{ZONE}", "AAAA")
    engine.handle(_no_question(), EAST_CLIENT)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("syncmesh_dns_queries_total", qtype="A", rcode="NOERROR") == 4
    assert value("syncmesh_dns_queries_total", qtype="AAAA", rcode="NXDOMAIN") == 1
    assert value("syncmesh_dns_queries_total", qtype="none", rcode="FORMERR") == 1
    assert value("syncmesh_dns_cache_hits_total", level="packet") == 2
    assert value("syncmesh_dns_cache_hits_total", level="answer") == 1
    assert value("syncmesh_dns_cache_misses_total") == 2
    assert value("syncmesh_dns_rejected_total", reason="question_count") == 1
    assert value("syncmesh_dns_cache_entries") == 2


def test_every_rejection_reaches_the_hook_with_its_reason_and_client() -> None:
    seen: list[tuple[Reject, str]] = []
    engine = AnswerEngine(
        DnsConfig(), make_feed().view, serial=1, on_reject=lambda r, h: seen.append((r, h))
    )
    assert engine.handle(b"\x12", "192.0.2.7") is None
    assert engine.handle(_no_question(), "192.0.2.8") is not None
    assert seen == [(Reject.SHORT_HEADER, "192.0.2.7"), (Reject.QUESTION_COUNT, "192.0.2.8")]
    assert engine.stats.rejected == {"short_header": 1, "question_count": 1}
