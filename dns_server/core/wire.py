"""Parse a DNS query from wire bytes into a ``Query``; no asyncio, no clock.

A hand-written parser covers every query a stub or recursive resolver sends
(one question, optional OPT with EDNS Client Subnet). dnslib parses what it
does not (a compressed question name). Bad input raises ``QueryError`` with a
metric reason and what can still be answered: FORMERR needs at least an id,
and a packet that is not a query (too short, or a response) is dropped.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntEnum, StrEnum

import dnslib

from syncmesh.view_api import IPAddress

__all__ = [
    "Query",
    "Edns",
    "ClientSubnet",
    "QueryError",
    "parse_query",
    "Rcode",
    "Reject",
    "name_text",
]


class Rcode(IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    BADVERS = 16


class Reject(StrEnum):
    """Why a packet was not answered normally: the ``reason`` label of
    ``syncmesh_dns_rejected_total`` and the key of the rejection log gate."""

    # Dropped: nothing to answer to.
    SHORT_HEADER = "short_header"
    NOT_A_QUERY = "not_a_query"
    # NOTIMP / BADVERS.
    OPCODE = "opcode"
    EDNS_VERSION = "edns_version"
    # FORMERR: the header and the question.
    QUESTION_COUNT = "question_count"
    RECORDS_IN_QUERY = "records_in_query"
    NAME_TRUNCATED = "name_truncated"
    LABEL_TYPE = "label_type"
    NAME_TOO_LONG = "name_too_long"
    QUESTION_TRUNCATED = "question_truncated"
    TRAILING_BYTES = "trailing_bytes"
    # What dnslib could not parse either (a compressed question gone wrong).
    MALFORMED = "malformed"
    # FORMERR: the additional section, OPT and its options.
    RECORD_TRUNCATED = "record_truncated"
    OPT_TWICE = "opt_twice"
    OPT_OWNER = "opt_owner"
    EDNS_OPTION_TRUNCATED = "edns_option_truncated"
    ECS_TWICE = "ecs_twice"
    ECS_SHORT = "ecs_short"
    ECS_FAMILY = "ecs_family"
    ECS_PREFIX = "ecs_prefix"
    ECS_ADDRESS_LENGTH = "ecs_address_length"
    ECS_ADDRESS_BITS = "ecs_address_bits"
    # Bugs, never bad input: SERVFAIL (engine) or dropped (parser).
    INTERNAL_ERROR = "internal_error"
    PARSER_ERROR = "parser_error"


OPT = 41
ECS_OPTION = 8
_MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class ClientSubnet:
    """RFC 7871 option as sent; ``address`` holds exactly the prefix bytes."""

    family: int
    source_prefix: int
    # (The scope prefix of a query is 0 and not used, RFC 7871 section 6.)
    address: bytes

    @property
    def ip(self) -> IPAddress:
        width = 4 if self.family == 1 else 16
        raw = self.address + b"\x00" * (width - len(self.address))
        return ipaddress.IPv4Address(raw) if width == 4 else ipaddress.IPv6Address(raw)

    @property
    def class_key(self) -> bytes:
        """Identifies the subnet for the client-class memo."""
        return bytes((self.family, self.source_prefix)) + self.address

    def echo(self, scope_prefix: int) -> bytes:
        """The option (code, length, data) for the response."""
        data = (
            self.family.to_bytes(2, "big")
            + bytes((self.source_prefix, scope_prefix))
            + self.address
        )
        return ECS_OPTION.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


@dataclass(frozen=True, slots=True)
class Edns:
    payload: int
    ecs: ClientSubnet | None = None
    # Any option at all (cookie, ECS, padding...): such a query is not remembered whole.
    options: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    id: int
    flags: int
    # The question name as sent (case kept, uncompressed), echoed in the answer.
    qname_wire: bytes
    qtype: int
    qclass: int
    edns: Edns | None = None

    @property
    def recursion_desired(self) -> bool:
        return bool(self.flags & 0x0100)


class QueryError(Exception):
    """``rcode`` None: drop silently. ``query``: what could be parsed, for the echo."""

    def __init__(
        self,
        reason: Reject,
        rcode: Rcode | None,
        query_id: int = 0,
        flags: int = 0,
        query: Query | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rcode = rcode
        self.query_id = query_id
        self.flags = flags
        self.query = query


class _Unusual(Exception):
    """Legal but outside what the hand-written parser handles: ask dnslib."""


def name_text(wire: bytes) -> str:
    """Text form of an uncompressed wire name, lower case."""
    labels: list[str] = []
    i = 0
    while wire[i]:
        n = wire[i]
        raw = wire[i + 1 : i + 1 + n].lower()
        labels.append(raw.decode("latin-1").replace("\\", "\\\\").replace(".", "\\."))
        i += n + 1
    return ".".join(labels) + "."


def _parse_ecs(data: bytes, query_id: int, flags: int) -> ClientSubnet:
    def bad(reason: Reject) -> QueryError:
        return QueryError(reason, Rcode.FORMERR, query_id, flags)

    if len(data) < 4:
        raise bad(Reject.ECS_SHORT)
    family = int.from_bytes(data[0:2], "big")
    source = data[2]
    address = data[4:]
    if family not in (1, 2):
        raise bad(Reject.ECS_FAMILY)
    if source > (32 if family == 1 else 128):
        raise bad(Reject.ECS_PREFIX)
    if len(address) != (source + 7) // 8:
        raise bad(Reject.ECS_ADDRESS_LENGTH)
    if source % 8 and address[-1] & (0xFF >> (source % 8)):
        raise bad(Reject.ECS_ADDRESS_BITS)
    return ClientSubnet(family, source, bytes(address))


def _parse_options(rdata: bytes, query_id: int, flags: int) -> ClientSubnet | None:
    ecs: ClientSubnet | None = None
    i = 0
    while i < len(rdata):
        if i + 4 > len(rdata):
            raise QueryError(Reject.EDNS_OPTION_TRUNCATED, Rcode.FORMERR, query_id, flags)
        code = int.from_bytes(rdata[i : i + 2], "big")
        length = int.from_bytes(rdata[i + 2 : i + 4], "big")
        if i + 4 + length > len(rdata):
            raise QueryError(Reject.EDNS_OPTION_TRUNCATED, Rcode.FORMERR, query_id, flags)
        if code == ECS_OPTION:
            if ecs is not None:
                raise QueryError(Reject.ECS_TWICE, Rcode.FORMERR, query_id, flags)
            ecs = _parse_ecs(rdata[i + 4 : i + 4 + length], query_id, flags)
        # Other options (cookies, padding, keepalive) are ignored, as RFC 6891 allows.
        i += 4 + length
    return ecs


def _read_name(data: bytes, i: int, query_id: int, flags: int) -> int:
    """Offset after an uncompressed name starting at ``i``."""
    start = i
    while True:
        if i >= len(data):
            raise QueryError(Reject.NAME_TRUNCATED, Rcode.FORMERR, query_id, flags)
        n = data[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0 == 0xC0:
            raise _Unusual()
        if n > 63:
            raise QueryError(Reject.LABEL_TYPE, Rcode.FORMERR, query_id, flags)
        i += n + 1
    if i - start > _MAX_NAME:
        raise QueryError(Reject.NAME_TOO_LONG, Rcode.FORMERR, query_id, flags)
    return i


def _edns_from(
    payload: int, ttl: int, rdata: bytes, query_id: int, flags: int
) -> tuple[Edns, Reject | None]:
    version = (ttl >> 16) & 0xFF
    edns = Edns(
        payload=payload,
        ecs=_parse_options(rdata, query_id, flags) if version == 0 else None,
        options=bool(rdata),
    )
    return edns, (Reject.EDNS_VERSION if version else None)


def _finish(query: Query, problem: Reject | None) -> Query:
    if problem is not None:
        raise QueryError(problem, Rcode.BADVERS, query.id, query.flags, query)
    return query


def parse_query(data: bytes) -> Query:
    if len(data) < 12:
        raise QueryError(Reject.SHORT_HEADER, None)
    query_id = int.from_bytes(data[0:2], "big")
    flags = int.from_bytes(data[2:4], "big")
    if flags & 0x8000:
        raise QueryError(Reject.NOT_A_QUERY, None)
    if (flags >> 11) & 0xF:
        raise QueryError(Reject.OPCODE, Rcode.NOTIMP, query_id, flags)
    qdcount, ancount, nscount, arcount = (
        int.from_bytes(data[k : k + 2], "big") for k in range(4, 12, 2)
    )
    if qdcount != 1:
        raise QueryError(Reject.QUESTION_COUNT, Rcode.FORMERR, query_id, flags)
    if ancount or nscount:
        raise QueryError(Reject.RECORDS_IN_QUERY, Rcode.FORMERR, query_id, flags)
    try:
        return _parse_plain(data, query_id, flags, arcount)
    except _Unusual:
        return _parse_with_dnslib(data, query_id, flags)


def _parse_plain(data: bytes, query_id: int, flags: int, arcount: int) -> Query:
    end = _read_name(data, 12, query_id, flags)
    if end + 4 > len(data):
        raise QueryError(Reject.QUESTION_TRUNCATED, Rcode.FORMERR, query_id, flags)
    qname_wire = data[12:end]
    qtype = int.from_bytes(data[end : end + 2], "big")
    qclass = int.from_bytes(data[end + 2 : end + 4], "big")
    i = end + 4
    edns: Edns | None = None
    problem: Reject | None = None
    for _ in range(arcount):
        owner = i
        i = _read_name(data, i, query_id, flags)
        if i + 10 > len(data):
            raise QueryError(Reject.RECORD_TRUNCATED, Rcode.FORMERR, query_id, flags)
        rtype = int.from_bytes(data[i : i + 2], "big")
        rclass = int.from_bytes(data[i + 2 : i + 4], "big")
        ttl = int.from_bytes(data[i + 4 : i + 8], "big")
        rdlength = int.from_bytes(data[i + 8 : i + 10], "big")
        rdata = data[i + 10 : i + 10 + rdlength]
        if len(rdata) != rdlength:
            raise QueryError(Reject.RECORD_TRUNCATED, Rcode.FORMERR, query_id, flags)
        if rtype == OPT:
            if edns is not None:
                raise QueryError(Reject.OPT_TWICE, Rcode.FORMERR, query_id, flags)
            if i != owner + 1:
                raise QueryError(Reject.OPT_OWNER, Rcode.FORMERR, query_id, flags)
            edns, problem = _edns_from(rclass, ttl, rdata, query_id, flags)
        i += 10 + rdlength
    if i != len(data):
        raise QueryError(Reject.TRAILING_BYTES, Rcode.FORMERR, query_id, flags)
    query = Query(query_id, flags, qname_wire, qtype, qclass, edns)
    return _finish(query, problem)


def _parse_with_dnslib(data: bytes, query_id: int, flags: int) -> Query:
    try:
        record = dnslib.DNSRecord.parse(data)
        question = record.questions[0]
        labels: tuple[bytes, ...] = question.qname.label
        if any(len(label) > 63 or not label for label in labels):
            raise ValueError("label length")
        qname_wire = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
        if len(qname_wire) > _MAX_NAME:
            raise ValueError("name too long")
        opts = [rr for rr in record.ar if rr.rtype == OPT]
        if len(opts) > 1:
            raise ValueError("opt twice")
    except QueryError:
        raise
    except Exception as exc:
        raise QueryError(Reject.MALFORMED, Rcode.FORMERR, query_id, flags) from exc
    edns: Edns | None = None
    problem: Reject | None = None
    if opts:
        opt = opts[0]
        rdata = b"".join(
            o.code.to_bytes(2, "big") + len(o.data).to_bytes(2, "big") + bytes(o.data)
            for o in opt.rdata
        )
        edns, problem = _edns_from(opt.rclass, opt.ttl, rdata, query_id, flags)
    query = Query(query_id, flags, qname_wire, question.qtype, question.qclass, edns)
    return _finish(query, problem)
