"""Query bytes in, response bytes out: the sans-IO heart of the DNS server.

``AnswerEngine.hot`` is the level-1 lookup every UDP reader calls first
(``cache.make_lookup``: two dict lookups and an id patch, or None). ``handle``
answers everything else and never raises: it parses with
``wire.parse_query``, serves level-2 templates (or resolves and renders them
on a miss), fills level 1, and answers bad input with FORMERR/NOTIMP/BADVERS
or drops it, counted by reason. Counters are plain ints, exported by a
collector.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable

from dnslib import QTYPE

from dns_server.config import DnsConfig
from dns_server.core.cache import AnswerCache, HotLookup, packet_key
from dns_server.core.render import PLAIN_UDP_LIMIT, Rendered, header_flags, opt_record, render
from dns_server.core.resolver import Resolver
from dns_server.core.wire import Query, QueryError, Rcode, Reject, parse_query
from syncmesh.view_api import ViewChange, ViewReader

__all__ = ["AnswerEngine", "OnReject", "Stats"]

_TCP_LIMIT = 65535

_QTYPE_LABELS = {
    t: QTYPE.get(t) for t in (1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 41, 64, 65, 251, 252, 255, 257)
}

# (reason, client address): called for every rejected packet, e.g. to log it.
OnReject = Callable[[Reject, str], None]


def _qtype_label(qtype: int | None) -> str:
    """Bounded label set for metrics: a flood of odd types adds no series."""
    if qtype is None:
        return "none"
    return str(_QTYPE_LABELS.get(qtype, "other"))


def _rcode_label(rcode: int) -> str:
    try:
        return Rcode(rcode).name
    except ValueError:
        return str(rcode)


class Stats:
    """Counters the collector exports; a cache hit touches only one cell."""

    def __init__(self) -> None:
        # (qtype label, rcode name) -> [level-1 (whole packet) hits]; shared with Rendered.cell.
        self.cells: dict[tuple[str, str], list[int]] = {}
        # (qtype label, rcode name) -> [level-2 (answer template) hits]; Rendered.answer_cell.
        self.answer_cells: dict[tuple[str, str], list[int]] = {}
        # (qtype label, rcode name) -> answers not served from the cache.
        self.uncached: dict[tuple[str, str], int] = {}
        self.misses = 0
        self.truncated = 0
        # Bad input and internal errors by reason.
        self.rejected: dict[Reject, int] = {}

    def cells_of(self, qtype: int, rcode: int) -> tuple[list[int], list[int]]:
        """The (level-1, level-2) hit counters of one (qtype, rcode)."""
        key = (_qtype_label(qtype), _rcode_label(rcode))
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = [0]
        answer_cell = self.answer_cells.get(key)
        if answer_cell is None:
            answer_cell = self.answer_cells[key] = [0]
        return cell, answer_cell

    def count(self, qtype: int | None, rcode: int | None) -> None:
        key = (_qtype_label(qtype), "dropped" if rcode is None else _rcode_label(rcode))
        self.uncached[key] = self.uncached.get(key, 0) + 1

    def reject(self, reason: Reject) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    # list() first in these sums: a scrape may run on another thread while cells are added.

    @property
    def packet_hits(self) -> int:
        """Answered by ``AnswerEngine.hot``: the whole response was remembered."""
        return sum(c[0] for c in list(self.cells.values()))

    @property
    def answer_hits(self) -> int:
        """Answered by ``handle`` from level-2 templates (ECS, TCP, first packet of a kind)."""
        return sum(c[0] for c in list(self.answer_cells.values()))


def _error_response(error: QueryError) -> bytes | None:
    if error.rcode is None:
        return None
    q = error.query
    flags = header_flags(error.rcode, False) | (error.flags & 0x7900)  # opcode, RD
    question = b""
    opt = b""
    if q is not None:
        question = q.qname_wire + q.qtype.to_bytes(2, "big") + q.qclass.to_bytes(2, "big")
    if error.rcode == Rcode.BADVERS:
        opt = opt_record(PLAIN_UDP_LIMIT, ext_rcode=Rcode.BADVERS >> 4)
    header = (
        error.query_id.to_bytes(2, "big")
        + flags.to_bytes(2, "big")
        + (1 if question else 0).to_bytes(2, "big")
        + b"\x00\x00\x00\x00"
        + (1 if opt else 0).to_bytes(2, "big")
    )
    return header + question + opt


class AnswerEngine:
    """Answers for one zone from one view, through the two-level answer cache.

    ``hot`` and ``cache.by_host`` may be read from a UDP reader thread; every
    other member is for the event loop thread only.
    """

    def __init__(
        self,
        config: DnsConfig,
        view: ViewReader,
        serial: int,
        on_reject: OnReject | None = None,
    ) -> None:
        self._config = config
        self._view = view
        self._resolver = Resolver(config, serial)
        self._on_reject = on_reject
        self.cache = AnswerCache(config.cache_max_entries)
        self.stats = Stats()
        self._max_payload = config.max_udp_payload
        self._opt_plain = opt_record(config.max_udp_payload)
        # The one level-1 lookup, shared by every reader mode and the tests.
        self.hot: HotLookup = self.cache.lookup

    def handle(self, data: bytes, host: str, tcp: bool = False) -> bytes | None:
        """The response to ``data`` from ``host`` (None: send nothing). Never raises."""
        try:
            query = parse_query(data)
        except QueryError as error:
            self._reject(error.reason, host)
            self.stats.count(error.query.qtype if error.query else None, error.rcode)
            return _error_response(error)
        except Exception:
            self._reject(Reject.PARSER_ERROR, host)
            return None
        try:
            return self._answer(query, data, host, tcp)
        except Exception:
            self._reject(Reject.INTERNAL_ERROR, host)
            self.stats.count(query.qtype, Rcode.SERVFAIL)
            return _error_response(
                QueryError(Reject.INTERNAL_ERROR, Rcode.SERVFAIL, query.id, query.flags, query)
            )

    def _reject(self, reason: Reject, host: str) -> None:
        self.stats.reject(reason)
        if self._on_reject is not None:
            self._on_reject(reason, host)

    def _client_class(self, query: Query, host: str) -> str | None:
        ecs = query.edns.ecs if query.edns else None
        client: Hashable = host
        if ecs is not None and ecs.source_prefix > 0:
            client = ecs.class_key
        known, client_class = self.cache.known_class(client)
        if known:
            return client_class
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
        if client is host:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                address = None
        else:
            assert ecs is not None
            address = ecs.ip
        client_class = self._view.client_class(address)
        self.cache.remember_class(client, client_class)
        return client_class

    def _answer(self, query: Query, data: bytes, host: str, tcp: bool) -> bytes:
        client_class = self._client_class(query, host)
        qname = query.qname_wire.lower()
        key = qname + query.qtype.to_bytes(2, "big") + query.qclass.to_bytes(2, "big")
        entry = self.cache.answers(client_class).get(key)
        if entry is not None:
            entry.answer_cell[0] += 1
        else:
            entry = self._miss(query, qname, key, client_class)
        edns = query.edns
        opt = b""
        limit = _TCP_LIMIT if tcp else PLAIN_UDP_LIMIT
        if edns is not None:
            if not tcp:
                limit = max(PLAIN_UDP_LIMIT, min(self._max_payload, edns.payload))
            if edns.ecs is not None:
                ecs = edns.ecs
                scope = ecs.source_prefix if entry.client_dependent and ecs.source_prefix else 0
                opt = opt_record(self._max_payload, ecs.echo(scope))
            else:
                opt = self._opt_plain
        variant = (1 if query.recursion_desired else 0) | (2 if edns is not None else 0)
        if entry.length + len(opt) <= limit:
            headers, bodies = entry.headers, entry.body_list
        else:
            headers, body = entry.fit(limit - len(opt))
            bodies = [body]
            if headers[0][0] & 0x02:
                self.stats.truncated += 1
        name = query.qname_wire
        size = len(name)
        if tcp or (edns is not None and edns.options) or data[12 : 12 + size] != name:
            # Cookies and ECS differ from query to query, and a compressed
            # question (parsed by dnslib) is not where ``packet_key`` reads it:
            # no use remembering the packet.
            body = next(entry.bodies) if len(bodies) > 1 else bodies[0]
            return data[:2] + headers[variant] + name + body + opt
        packet = packet_key(data)
        # Stored with the folded name of the key, so an exact hit echoes it as is.
        prefix = headers[variant] + packet[10 : 10 + size]
        responses = [prefix + body + opt for body in bodies]
        response = self.cache.store_packet(client_class, packet, entry, responses)
        if packet[10 : 10 + size] != name:
            response = response[:10] + name + response[10 + size :]
        return data[:2] + response

    def _miss(self, query: Query, qname: bytes, key: bytes, client_class: str | None) -> Rendered:
        self.stats.misses += 1
        answer = self._resolver.answer(qname, query.qtype, query.qclass, client_class, self._view)
        cells = self.stats.cells_of(query.qtype, answer.rcode)
        rendered = render(
            answer, qname, query.qtype, query.qclass, self._config.max_rotations, cells
        )
        self.cache.store(client_class, key, rendered, answer.tags)
        # Counted as uncached here; hits of later queries go to the cells.
        self.stats.count(query.qtype, answer.rcode)
        return rendered

    def invalidate(self, change: ViewChange) -> int:
        """Drop the answers ``change`` affects; returns how many level-2 entries went."""
        return self.cache.invalidate(change)
