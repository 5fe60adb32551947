"""The pure resolver: one question, the client's ranking class and the view in,
the records of the answer out. No asyncio, no clock, no wire format.

``Answer.tags`` names what the answer depends on in the view, so the cache
drops exactly the answers a ``ViewChange`` affects.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from dnslib import AAAA, NS, QTYPE, RR, SOA, SRV, TXT, A, DNSLabel

from dns_server.config import DnsConfig
from dns_server.core.names import NameKind, NameRef, classify, gateway_label, gateway_target
from dns_server.core.wire import Rcode, name_text
from syncmesh.schema import Gateway, RankedCluster
from syncmesh.view_api import ServiceKey, ViewReader

__all__ = ["Answer", "CountsTag", "Resolver", "NamespaceTag", "Tag", "srv_weight"]

_A, _AAAA, _SRV, _TXT, _SOA, _NS, _ANY = (
    QTYPE.A,
    QTYPE.AAAA,
    QTYPE.SRV,
    QTYPE.TXT,
    QTYPE.SOA,
    QTYPE.NS,
    QTYPE.ANY,
)
_TRANSFER = (QTYPE.AXFR, QTYPE.IXFR)
_CLASS_IN = 1


@dataclass(frozen=True, slots=True)
class NamespaceTag:
    """Answers that change when any service of ``namespace`` appears or goes."""

    namespace: str


@dataclass(frozen=True, slots=True)
class CountsTag:
    """Answers that show ``key``'s healthy-instance counts (the TXT explanation): they
    change with a count, while A/AAAA/SRV change only with the candidates
    (``ViewChange.counts``)."""

    key: ServiceKey


Tag = ServiceKey | NamespaceTag | CountsTag


@dataclass(frozen=True, slots=True)
class Answer:
    rcode: int
    authoritative: bool = True
    answers: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()
    # ``answers`` is one address set whose order rotates from query to query.
    rotate: bool = False
    # Depends on the client's ranking class: ECS scope is the source prefix.
    client_dependent: bool = False
    tags: frozenset[Tag] = field(default_factory=frozenset)


def _txt(text: str) -> TXT:
    return TXT([text.encode("utf-8", "replace")[:255]])


def _explain(cluster: RankedCluster) -> str:
    rtt = "none" if cluster.rtt_ms is None else f"{cluster.rtt_ms:.1f}"
    load = "unknown" if cluster.load is None else str(cluster.load)
    return (
        f"rank={cluster.rank} cluster={cluster.cluster} reason={cluster.reason} "
        f"healthy={cluster.healthy_instances} gateways={len(cluster.gateways)} "
        f"rtt_ms={rtt} load={load} stale={'yes' if cluster.stale else 'no'}"
    )


def srv_weight(gateway: Gateway) -> int:
    """SRV weight: the gateway's weight scaled by its headroom (100 - load).

    An unknown load leaves the weight as configured. A loaded gateway keeps at
    least 1 (RFC 2782 gives weight 0 "a very small chance"); only a gateway at
    100 % or configured with weight 0 gets 0.
    """
    weight, load = gateway.weight, gateway.load
    if load is None or weight == 0:
        return weight
    if load >= 100:
        return 0
    return max(1, round(weight * (100 - load) / 100))


def _family(address: str) -> int | None:
    """QTYPE of the address record for ``address``; None for a host name."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return _A if ip.version == 4 else _AAAA


def _address_rr(owner: DNSLabel, address: str, ttl: int) -> RR:
    rtype = _family(address)
    rdata = A(address) if rtype == _A else AAAA(str(ipaddress.ip_address(address)))
    return RR(owner, rtype, ttl=ttl, rdata=rdata)


class Resolver:
    """Answers for one zone; ``serial`` is the SOA serial (the adapter's start time)."""

    def __init__(self, config: DnsConfig, serial: int) -> None:
        self._config = config
        self._zone = config.zone
        self._ttl = config.ttl
        self._ns_names = frozenset(config.ns_names)
        apex = DNSLabel(config.zone)
        soa = SOA(
            config.soa_mname,
            config.soa_rname,
            (
                serial % 2**32,
                config.soa_refresh,
                config.soa_retry,
                config.soa_expire,
                config.soa_minimum,
            ),
        )
        self._soa = RR(apex, _SOA, ttl=config.ttl, rdata=soa)
        self._negative_soa = RR(apex, _SOA, ttl=config.soa_minimum, rdata=soa)
        self._ns = tuple(RR(apex, _NS, ttl=config.ttl, rdata=NS(n)) for n in config.ns_names)
        self._glue = {
            name: tuple(_address_rr(DNSLabel(name), a, config.ttl) for a in addresses)
            for name, addresses in config.ns_addresses.items()
        }

    # -- outcomes shared by every name kind ---------------------------------

    def _nodata(self, tags: frozenset[Tag] = frozenset()) -> Answer:
        return Answer(Rcode.NOERROR, authority=(self._negative_soa,), tags=tags)

    def _nxdomain(self, tags: frozenset[Tag] = frozenset()) -> Answer:
        return Answer(Rcode.NXDOMAIN, authority=(self._negative_soa,), tags=tags)

    # -- entry point ----------------------------------------------------------

    def answer(
        self, qname_wire: bytes, qtype: int, qclass: int, client_class: str | None, view: ViewReader
    ) -> Answer:
        """``qname_wire``: the question name in wire form, lower case."""
        qname = name_text(qname_wire)
        ref = classify(qname, self._zone, self._ns_names)
        if ref.kind is NameKind.OUTSIDE or qclass != _CLASS_IN:
            return Answer(Rcode.REFUSED, authoritative=False)
        if qtype in _TRANSFER:
            return Answer(Rcode.REFUSED, authoritative=False)
        if qtype == QTYPE.OPT or qtype == 0:
            return Answer(Rcode.FORMERR, authoritative=False)
        owner = DNSLabel(tuple(qname_wire[i + 1 : i + 1 + n] for i, n in _labels(qname_wire)))
        if ref.kind is NameKind.APEX:
            return self._apex(qtype)
        if ref.kind is NameKind.NAME_SERVER:
            return self._name_server(qname, qtype)
        if ref.kind is NameKind.EMPTY_NON_TERMINAL:
            return self._nodata()
        if ref.kind is NameKind.UNKNOWN:
            return self._nxdomain()
        return self._service(ref, owner, qtype, client_class, view)

    def _apex(self, qtype: int) -> Answer:
        if qtype in (_SOA, _ANY):
            return Answer(Rcode.NOERROR, answers=(self._soa,))
        if qtype == _NS:
            glue = tuple(rr for n in self._config.ns_names for rr in self._glue.get(n, ()))
            return Answer(Rcode.NOERROR, answers=self._ns, additional=glue)
        return self._nodata()

    def _name_server(self, qname: str, qtype: int) -> Answer:
        glue = self._glue.get(qname, ())
        if qtype == _ANY and glue:
            qtype = glue[0].rtype
        records = tuple(rr for rr in glue if rr.rtype == qtype)
        return Answer(Rcode.NOERROR, answers=records) if records else self._nodata()

    # -- service names --------------------------------------------------------

    def _service(
        self, ref: NameRef, owner: DNSLabel, qtype: int, client_class: str | None, view: ViewReader
    ) -> Answer:
        assert ref.key is not None
        key = ref.key
        tags: frozenset[Tag] = frozenset({key})
        if ref.short_form:
            # ``<x>.svc.<zone>`` is also the namespace ``x``.
            tags = tags | {NamespaceTag(key.service)}
        if ref.cluster is not None and not view.cluster_known(ref.cluster):
            return self._nxdomain(tags)
        resolution = view.resolve(key, client_class, ref.cluster, ref.subset)
        if ref.kind is NameKind.SUBSET_PARENT:
            # Exists while the service does (RFC 8020: not NXDOMAIN above subset names).
            return self._nodata(tags) if resolution.known else self._nxdomain(tags)
        if not resolution.known:
            if ref.short_form and view.namespace_known(key.service):
                return self._nodata(tags)
            return self._nxdomain(tags)
        candidates = resolution.clusters
        if ref.kind is NameKind.TARGET:
            return self._target(ref, owner, qtype, candidates, tags)
        if not candidates:
            return self._nodata(tags)
        if qtype in (_A, _AAAA, _ANY):
            return self._addresses(owner, qtype, candidates[0].gateways, tags)
        if qtype == _SRV:
            return self._srv(owner, key, candidates, tags)
        if qtype == _TXT:
            records = tuple(
                RR(owner, _TXT, ttl=self._ttl, rdata=_txt(_explain(c))) for c in candidates
            )
            return Answer(
                Rcode.NOERROR,
                answers=records,
                client_dependent=True,
                tags=tags | {CountsTag(key)},
            )
        return self._nodata(tags)

    def _addresses(
        self, owner: DNSLabel, qtype: int, gateways: Sequence[Gateway], tags: frozenset[Tag]
    ) -> Answer:
        """The top cluster's gateways of the asked family: A for IPv4, AAAA for IPv6."""
        # Canonical text per family: ``fd00::9`` and ``FD00:0::9`` are one record.
        by_family: dict[int, dict[str, None]] = {_A: {}, _AAAA: {}}
        for gateway in gateways:
            try:
                ip = ipaddress.ip_address(gateway.address)
            except ValueError:
                continue  # a host name: only an SRV target can name it
            by_family[_A if ip.version == 4 else _AAAA][str(ip)] = None
        if qtype == _ANY:
            # RFC 8482: one RRset is enough; the A set, or AAAA when there is none.
            qtype = _A if by_family[_A] else _AAAA
        records = tuple(_address_rr(owner, a, self._ttl) for a in by_family[qtype])
        if not records:
            return self._nodata(tags)
        return Answer(
            Rcode.NOERROR,
            answers=records,
            rotate=len(records) > 1,
            client_dependent=True,
            tags=tags,
        )

    def _srv(
        self,
        owner: DNSLabel,
        key: ServiceKey,
        candidates: tuple[RankedCluster, ...],
        tags: frozenset[Tag],
    ) -> Answer:
        records: list[RR] = []
        glue: dict[str, RR] = {}
        for cluster in candidates:
            for gateway in cluster.gateways:
                target = gateway_target(gateway.address, cluster.cluster, key, self._zone)
                # Priority is the rank itself, not the position in the list:
                # clusters that rank equal share a rank, hence one priority,
                # and clients spread over them by weight (RFC 2782).
                rdata = SRV(
                    priority=max(0, min(cluster.rank, 65535)),
                    weight=srv_weight(gateway),
                    port=gateway.port,
                    target=DNSLabel(target),
                )
                records.append(RR(owner, _SRV, ttl=self._ttl, rdata=rdata))
                if _family(gateway.address) is not None and target not in glue:
                    glue[target] = _address_rr(DNSLabel(target), gateway.address, self._ttl)
        if not records:
            return self._nodata(tags)
        return Answer(
            Rcode.NOERROR,
            answers=tuple(records),
            additional=tuple(glue.values()),
            client_dependent=True,
            tags=tags,
        )

    def _target(
        self,
        ref: NameRef,
        owner: DNSLabel,
        qtype: int,
        candidates: tuple[RankedCluster, ...],
        tags: frozenset[Tag],
    ) -> Answer:
        for cluster in candidates:
            if cluster.cluster != ref.cluster:
                continue
            for gateway in cluster.gateways:
                if gateway_label(gateway.address) == ref.gateway:
                    family = _family(gateway.address)
                    if qtype in (family, _ANY):
                        return Answer(
                            Rcode.NOERROR,
                            answers=(_address_rr(owner, gateway.address, self._ttl),),
                            client_dependent=True,
                            tags=tags,
                        )
                    return self._nodata(tags)
        return self._nxdomain(tags)


def _labels(wire: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each label of an uncompressed wire name."""
    out: list[tuple[int, int]] = []
    i = 0
    while wire[i]:
        out.append((i, wire[i]))
        i += wire[i] + 1
    return out
