"""Fuzz the DNS engine with 100,000 random and mutated packets, straight into
its two entry points as the UDP readers call them, ``hot`` then ``handle``
(the real-UDP variant is in tests/peers/test_dns_server.py)."""

from __future__ import annotations

import random

import dns.edns
import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dns_server.config import DnsConfig
from dns_server.core.engine import AnswerEngine
from global_registry.core.view import RegistryView
from harness.view_feed import ViewFeed
from syncmesh.schema import Gateway
from syncmesh.view_api import ServiceKey

pytestmark = [pytest.mark.core, pytest.mark.security]

ZONE = "syncmesh.internal."
EXAMPLES = 1000
PER_EXAMPLE = 100


def _view() -> RegistryView:
    feed = ViewFeed()
    feed.cluster(
        "east",
        [Gateway(address="10.0.0.1", port=443), Gateway(address="fd00::1", port=443)],
        ["10.1.0.0/16"],
    )
    feed.cluster(
        "west", [Gateway(address=f"10.9.0.{i}", port=80) for i in range(1, 40)], ["10.2.0.0/16"]
    )
    for name in ("web", "api", "db"):
        feed.service(ServiceKey("default", name), "east", 1)
        feed.service(ServiceKey("default", name), "west", 2)
    return feed.view


def _bases() -> list[bytes]:
    ecs = dns.edns.ECSOption("10.2.3.0", 24)
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01\x02\x03\x04\x05\x06\x07\x08")
    names = [
        f"web.svc.{ZONE}",
        f"WeB.sVc.{ZONE.upper()}",
        f"west.api.default.svc.{ZONE}",
        ZONE,
        f"ghost.svc.{ZONE}",
        "example.com.",
    ]
    out = []
    for name in names:
        for rdtype in ("A", "AAAA", "SRV", "TXT", "SOA", "ANY"):
            out.append(dns.message.make_query(name, rdtype).to_wire())
            out.append(
                dns.message.make_query(
                    name, rdtype, use_edns=0, payload=4096, options=[ecs, cookie]
                ).to_wire()
            )
    return out


BASES = _bases()


def _mutate(rng: random.Random, packet: bytes) -> bytes:
    data = bytearray(packet)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1 and data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 2:
            del data[rng.randrange(len(data) + 1) :]
        elif op == 3:
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 4 and len(data) >= 12:
            # header counts: where most parsers go wrong
            i = rng.choice((4, 6, 8, 10))
            data[i : i + 2] = rng.randrange(65536).to_bytes(2, "big")
        elif op == 5 and len(data) > 12:
            i = rng.randrange(12, len(data))
            data[i] = rng.choice((0x00, 0x3F, 0x40, 0xC0, 0xC0 | 12, 0xFF))
    return bytes(data)


def _random_packet(rng: random.Random) -> bytes:
    kind = rng.randrange(3)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 600))
    if kind == 1:
        return rng.randbytes(12) + rng.randbytes(rng.randint(0, 60))
    return _mutate(rng, rng.choice(BASES))


def _check(packet: bytes, response: bytes | None, tcp: bool) -> None:
    if response is None:
        return
    assert len(response) >= 12
    assert response[:2] == packet[:2]
    assert response[2] & 0x80, "QR set"
    assert tcp or len(response) <= 1232
    # Every response must be well-formed DNS.
    dns.message.from_wire(response, ignore_trailing=False, question_only=False)


def test_core_survives_100k_random_and_mutated_packets() -> None:
    engine = AnswerEngine(DnsConfig(), _view(), serial=1)
    sent = [0]
    hits = [0]
    hosts = ["10.1.0.5", "10.2.0.5", "192.0.2.1", "::1"]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        seed=st.integers(0, 2**32 - 1),
        raw=st.binary(max_size=600),
        base=st.sampled_from(BASES),
        edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    )
    def batch(seed: int, raw: bytes, base: bytes, edits: list[tuple[int, int]]) -> None:
        rng = random.Random(seed)
        edited = bytearray(base)
        for position, value in edits:
            if position < len(edited):
                edited[position] = value
        packets = [raw, bytes(edited)] + [_random_packet(rng) for _ in range(PER_EXAMPLE - 2)]
        for i, packet in enumerate(packets):
            host = hosts[i % len(hosts)]
            tcp = i % 10 == 0
            response = None if tcp else engine.hot(packet, host)
            if response is not None:
                # A hit echoes the question (name in the case sent, type, class) as is.
                end = packet.find(0, 12) + 5
                assert response[12:end] == packet[12:end]
                hits[0] += 1
            else:
                response = engine.handle(packet, host, tcp=tcp)
            _check(packet, response, tcp)
        sent[0] += len(packets)

    batch()
    assert sent[0] == EXAMPLES * PER_EXAMPLE == 100_000
    assert hits[0] > 500  # the hot lookup was exercised, 0x20 splices included
    assert "internal_error" not in engine.stats.rejected
    assert "parser_error" not in engine.stats.rejected
    assert sum(engine.stats.rejected.values()) > 10_000  # the fuzz did reach the error paths
    # Still answering a valid query, correctly.
    query = dns.message.make_query(f"web.svc.{ZONE}", "A")
    response = engine.handle(query.to_wire(), "10.1.0.5")
    assert response is not None
    message = dns.message.from_wire(response)
    assert message.rcode() == dns.rcode.NOERROR
    assert [rd.to_text() for rd in message.answer[0]] == ["10.0.0.1"]
