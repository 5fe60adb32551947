"""Longest-prefix lookup of a client address in every cluster's client CIDRs.

The DNS server asks this for every query (before its cache), so a lookup is a
few dict probes, one per distinct prefix length, not a scan of all networks.
Two clusters claiming the very same network is a conflict: the cluster whose
name sorts first keeps it, and the conflict is reported on the status page.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["CidrIndex", "CidrConflict"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CidrConflict(tuple[str, str, str]):
    """(network, kept cluster, ignored cluster)."""


class CidrIndex:
    def __init__(self, claims: Iterable[tuple[str, Network]] = ()) -> None:
        # version -> prefix length -> network address as int -> cluster
        self._tables: dict[int, dict[int, dict[int, str]]] = {4: {}, 6: {}}
        self.conflicts: list[CidrConflict] = []
        for cluster, network in sorted(claims, key=lambda c: (c[0], str(c[1]))):
            table = self._tables[network.version].setdefault(network.prefixlen, {})
            base = int(network.network_address)
            owner = table.get(base)
            if owner is not None and owner != cluster:
                self.conflicts.append(CidrConflict((str(network), owner, cluster)))
                continue
            table[base] = cluster
        self._lengths = {
            version: sorted(table, reverse=True) for version, table in self._tables.items()
        }

    def lookup(self, address: IPAddress) -> str | None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        version = address.version
        bits = 32 if version == 4 else 128
        value = int(address)
        table = self._tables[version]
        for length in self._lengths[version]:
            mask = ((1 << length) - 1) << (bits - length)
            owner = table[length].get(value & mask)
            if owner is not None:
                return owner
        return None
