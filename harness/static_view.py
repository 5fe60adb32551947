"""A fixed, in-memory ``ViewReader``: for the DNS tests, the DNS benchmark and
serving a hand-written topology without the registry.

Ranking follows the design (own cluster by client CIDR, then same zone, then
same region, then RTT, then name) but without probes or staleness tracking:
what the clusters say is what it serves.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from syncmesh.schema import Gateway, RankedCluster
from syncmesh.view_api import IPAddress, Resolution, ServiceKey, ViewChange

__all__ = ["StaticCluster", "StaticView"]


@dataclass(slots=True)
class StaticCluster:
    name: str
    gateways: list[Gateway] = field(default_factory=list)
    client_cidrs: list[str] = field(default_factory=list)
    region: str = ""
    zone: str = ""
    rtt_ms: float | None = None
    stale: bool = False


class StaticView:
    def __init__(self, clusters: list[StaticCluster] | None = None) -> None:
        self._clusters: dict[str, StaticCluster] = {c.name: c for c in clusters or []}
        # service -> cluster -> healthy instance count (0: known, nothing healthy)
        self._services: dict[ServiceKey, dict[str, int]] = {}
        self.resolve_calls = 0

    # -- edits, each returning what it changed ----------------------------

    def set_cluster(self, cluster: StaticCluster) -> ViewChange:
        self._clusters[cluster.name] = cluster
        return ViewChange(everything=True)

    def set_service(self, key: ServiceKey, cluster: str, healthy: int = 1) -> ViewChange:
        self._services.setdefault(key, {})[cluster] = healthy
        return ViewChange(services=frozenset({key}))

    def remove_service(self, key: ServiceKey, cluster: str) -> ViewChange:
        in_clusters = self._services.get(key, {})
        in_clusters.pop(cluster, None)
        if not in_clusters:
            self._services.pop(key, None)
        return ViewChange(services=frozenset({key}))

    # -- ViewReader ---------------------------------------------------------

    def client_class(self, client: IPAddress | None) -> str | None:
        if client is None:
            return None
        best: tuple[int, str] | None = None
        for cluster in self._clusters.values():
            for cidr in cluster.client_cidrs:
                network = ipaddress.ip_network(cidr, strict=False)
                if client.version == network.version and client in network:
                    if best is None or network.prefixlen > best[0]:
                        best = (network.prefixlen, cluster.name)
        return best[1] if best else None

    def cluster_known(self, cluster: str) -> bool:
        return cluster in self._clusters

    def namespace_known(self, namespace: str) -> bool:
        return any(key.namespace == namespace for key in self._services)

    def resolve(
        self, key: ServiceKey, client_class: str | None, pinned: str | None = None
    ) -> Resolution:
        self.resolve_calls += 1
        in_clusters = self._services.get(key, {})
        if pinned is not None:
            in_clusters = {c: n for c, n in in_clusters.items() if c == pinned}
        if not in_clusters:
            return Resolution(key=key, known=False)
        home = self._clusters.get(client_class) if client_class else None
        scored: list[tuple[tuple[int, float, str], str, StaticCluster, int]] = []
        for name, healthy in in_clusters.items():
            cluster = self._clusters.get(name)
            if cluster is None or healthy <= 0 or not cluster.gateways:
                continue
            tier, reason = 4, "rtt"
            if home is not None and name == home.name:
                tier, reason = 0, "client-cidr"
            elif home is not None and home.zone and cluster.zone == home.zone:
                tier, reason = 1, "same-zone"
            elif home is not None and home.region and cluster.region == home.region:
                tier, reason = 2, "same-region"
            rtt = cluster.rtt_ms if cluster.rtt_ms is not None else float("inf")
            scored.append(((tier, rtt, name), reason, cluster, healthy))
        scored.sort(key=lambda s: s[0])
        ranked = tuple(
            RankedCluster(
                cluster=cluster.name,
                rank=rank,
                reason=reason,
                gateways=list(cluster.gateways),
                healthy_instances=healthy,
                rtt_ms=cluster.rtt_ms,
                stale=cluster.stale,
            )
            for rank, (_, reason, cluster, healthy) in enumerate(scored)
        )
        return Resolution(key=key, known=True, clusters=ranked)
