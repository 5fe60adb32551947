"""Turn an ``Answer`` into wire templates that a cache hit only has to patch.

A response is ``id + header + question name + body (+ OPT)``. The id and the
question name come from the query (the name keeps the client's case; it has
the same length in any case, so the compression pointers in the body, which
point into it, stay valid). The header depends only on the query's RD bit and
on whether an OPT record follows, so all four variants are precomputed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from dnslib import RR, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from dns_server.core.resolver import Answer

__all__ = ["Rendered", "render", "header_flags", "opt_record", "PLAIN_UDP_LIMIT"]

PLAIN_UDP_LIMIT = 512
_QR, _AA, _TC, _RD = 0x8000, 0x0400, 0x0200, 0x0100


def header_flags(rcode: int, authoritative: bool, truncated: bool = False) -> int:
    return _QR | (_AA if authoritative else 0) | (_TC if truncated else 0) | (rcode & 0xF)


def opt_record(payload: int, options: bytes = b"", ext_rcode: int = 0) -> bytes:
    """An OPT pseudo-record (root owner, version 0, DO clear)."""
    return (
        b"\x00\x00\x29"
        + payload.to_bytes(2, "big")
        + bytes((ext_rcode, 0, 0, 0))
        + len(options).to_bytes(2, "big")
        + options
    )


def _headers(flags: int, an: int, ns: int, ar: int) -> tuple[bytes, bytes, bytes, bytes]:
    """Indexed by ``rd | edns << 1``."""
    out: list[bytes] = []
    for edns in (0, 1):
        for rd in (0, 1):
            out.append(
                (flags | (_RD if rd else 0)).to_bytes(2, "big")
                + (1).to_bytes(2, "big")
                + an.to_bytes(2, "big")
                + ns.to_bytes(2, "big")
                + (ar + edns).to_bytes(2, "big")
            )
    return out[0], out[1], out[2], out[3]


class Rendered:
    """Wire templates of one answer. Mutable only in ``hits`` bookkeeping and
    the lazily filled ``truncated`` map."""

    __slots__ = (
        "headers",
        "body_list",
        "bodies",
        "length",
        "cell",
        "answer_cell",
        "client_dependent",
        "answer",
        "truncated",
        "packets",
        "_qname",
        "_qtype",
        "_qclass",
    )

    def __init__(
        self,
        answer: Answer,
        qname_wire: bytes,
        qtype: int,
        qclass: int,
        bodies: list[bytes],
        headers: tuple[bytes, bytes, bytes, bytes],
        cell: list[int],
        answer_cell: list[int],
    ) -> None:
        self.answer = answer
        self.headers = headers
        self.body_list = bodies
        self.bodies: Iterator[bytes] = itertools.cycle(bodies)
        # Whole response without OPT (all rotations have the same length).
        self.length = 12 + len(qname_wire) + len(bodies[0])
        # Shared hit counters of this (qtype, rcode), one per cache level: a
        # hit only adds 1 (Stats.cell, Stats.answer_cell).
        self.cell = cell
        self.answer_cell = answer_cell
        self.client_dependent = answer.client_dependent
        self.truncated: dict[int, tuple[tuple[bytes, bytes, bytes, bytes], bytes]] = {}
        # Level-1 cache keys built from this answer, dropped with it.
        self.packets: set[bytes] = set()
        self._qname = qname_wire
        self._qtype = qtype
        self._qclass = qclass

    def fit(self, budget: int) -> tuple[tuple[bytes, bytes, bytes, bytes], bytes]:
        """Headers and body of a response of at most ``budget`` bytes (OPT excluded).

        The additional section goes first, without TC (RFC 2181 9: it is only a
        help); then answer records from the end, with TC so the client retries
        over TCP.
        """
        cached = self.truncated.get(budget)
        if cached is not None:
            return cached
        a = self.answer
        fixed = 12 + len(self._qname)
        body = _pack(self._qname, self._qtype, self._qclass, a.answers, a.authority, ())
        if fixed + len(body) <= budget:
            result = (
                _headers(
                    header_flags(a.rcode, a.authoritative), len(a.answers), len(a.authority), 0
                ),
                body,
            )
        else:
            keep = len(a.answers)
            while keep > 0:
                keep -= 1
                body = _pack(self._qname, self._qtype, self._qclass, a.answers[:keep], (), ())
                if fixed + len(body) <= budget:
                    break
            flags = header_flags(a.rcode, a.authoritative, truncated=True)
            result = (_headers(flags, keep, 0, 0), body)
        if len(self.truncated) < 16:
            self.truncated[budget] = result
        return result


def _pack(
    qname_wire: bytes,
    qtype: int,
    qclass: int,
    answers: tuple[RR, ...],
    authority: tuple[RR, ...],
    additional: tuple[RR, ...],
) -> bytes:
    """The body (qtype, qclass and the record sections) as dnslib compresses it."""
    labels: list[bytes] = []
    i = 0
    while qname_wire[i]:
        labels.append(qname_wire[i + 1 : i + 1 + qname_wire[i]])
        i += qname_wire[i] + 1
    record = DNSRecord(
        DNSHeader(id=0, qr=1),
        q=DNSQuestion(DNSLabel(tuple(labels)), qtype, qclass),
        rr=list(answers),
        auth=list(authority),
        ar=list(additional),
    )
    return bytes(record.pack()[12 + len(qname_wire) :])


def render(
    answer: Answer,
    qname_wire: bytes,
    qtype: int,
    qclass: int,
    max_rotations: int,
    cells: tuple[list[int], list[int]],
) -> Rendered:
    """``qname_wire`` lower case, as in the cache key."""
    orders: list[tuple[RR, ...]] = [answer.answers]
    if answer.rotate:
        n = min(len(answer.answers), max_rotations)
        orders = [answer.answers[k:] + answer.answers[:k] for k in range(n)]
    bodies = [
        _pack(qname_wire, qtype, qclass, o, answer.authority, answer.additional) for o in orders
    ]
    flags = header_flags(answer.rcode, answer.authoritative)
    headers = _headers(flags, len(answer.answers), len(answer.authority), len(answer.additional))
    return Rendered(answer, qname_wire, qtype, qclass, bodies, headers, *cells)
