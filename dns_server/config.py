"""Settings of the authoritative DNS server (one zone, UDP and TCP)."""

from __future__ import annotations

import ipaddress
from typing import Literal

import msgspec

__all__ = ["DnsConfig", "absolute"]


def absolute(name: str) -> str:
    """``name`` in lower case with exactly one trailing dot."""
    return name.strip().lower().rstrip(".") + "."


class DnsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    address: str = "127.0.0.1"
    # 53 in production; 0 binds an ephemeral port (tests), see DnsServer.port.
    port: int = 1053
    zone: str = "syncmesh.internal."
    # TTL of positive answers: short, because the nearest healthy cluster moves.
    ttl: int = 5
    # SOA MINIMUM and the TTL of the SOA in negative answers (RFC 2308).
    soa_minimum: int = 5
    # Empty: the first name of ``ns_names``.
    soa_mname: str = ""
    # Empty: ``hostmaster.<zone>``.
    soa_rname: str = ""
    soa_refresh: int = 3600
    soa_retry: int = 600
    soa_expire: int = 86400
    # Empty: ``ns.<zone>``.
    ns_names: list[str] = []
    # Glue for name servers inside the zone. A name server inside the zone with
    # no entry here gets ``address`` when that is a concrete address.
    ns_addresses: dict[str, list[str]] = {}
    # Largest UDP answer whatever the client advertises (1232: DNS flag day 2020).
    max_udp_payload: int = 1232
    tcp_idle_timeout_s: float = 10.0
    tcp_max_connections: int = 512
    # Bound of the answer cache (entries = question x client class) and of the
    # client-address -> ranking-class memo; a random-name flood cannot grow them.
    cache_max_entries: int = 100_000
    # A rotated A/AAAA set is precomputed in at most this many orders.
    max_rotations: int = 8
    # Answer latency is observed for one query in this many (hot-path cost).
    latency_sample_every: int = 64
    udp_socket_buffer_bytes: int = 4 * 1024 * 1024
    # "batch": a reader thread answers cache hits, moving datagrams in batches
    # with recvmmsg/sendmmsg (Linux; else as "thread"); "thread": the same with
    # one recvfrom/sendto per query; "loop": everything on the event loop.
    udp_mode: Literal["batch", "thread", "loop"] = "batch"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"dns port {self.port} outside 0..65535")
        ipaddress.ip_address(self.address)
        self.zone = absolute(self.zone)
        if self.zone == ".":
            raise ValueError("dns zone must not be the root")
        if not 0 <= self.ttl <= 2**31 - 1 or not 0 <= self.soa_minimum <= 2**31 - 1:
            raise ValueError("dns ttl and soa_minimum must be within 0..2^31-1")
        if not 512 <= self.max_udp_payload <= 65535:
            raise ValueError("dns max_udp_payload must be within 512..65535")
        if self.cache_max_entries < 1 or self.max_rotations < 1 or self.latency_sample_every < 1:
            raise ValueError(
                "dns cache_max_entries, max_rotations, latency_sample_every must be >= 1"
            )
        self.ns_names = [absolute(n) for n in self.ns_names] or ["ns." + self.zone]
        glue: dict[str, list[str]] = {}
        for name, addresses in self.ns_addresses.items():
            glue[absolute(name)] = [str(ipaddress.ip_address(a)) for a in addresses]
        concrete = not ipaddress.ip_address(self.address).is_unspecified
        for name in self.ns_names:
            if name.endswith("." + self.zone) and name not in glue and concrete:
                glue[name] = [self.address]
        self.ns_addresses = glue
        self.soa_mname = absolute(self.soa_mname) if self.soa_mname else self.ns_names[0]
        self.soa_rname = absolute(self.soa_rname) if self.soa_rname else "hostmaster." + self.zone
