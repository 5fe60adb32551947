"""What the DNS resolver (and the NATS ``resolve`` API) needs from the registry view.

The registry's pure view implements ``ViewReader``; the DNS resolver depends
only on this protocol, so either side is tested without the other.

Ranking class: the answer for a name depends on the client only through the
cluster whose client CIDRs contain the client address (longest prefix wins) —
or none. DNS answers are therefore precomputed and cached per
``(qname, qtype, client_class)``, and a view change names exactly the keys it
affects (``ViewChange``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

from syncmesh.schema import RankedCluster

__all__ = [
    "ServiceKey",
    "Subset",
    "SubsetCounts",
    "Resolution",
    "ViewChange",
    "ViewReader",
    "IPAddress",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ServiceKey:
    namespace: str
    service: str


@dataclass(frozen=True, slots=True)
class Subset:
    """Only instances of ``version`` that carry every tag of ``tags`` count.

    Values are in their DNS label form (``syncmesh.labels.subset_label``:
    ``1.2.3`` is ``1-2-3``), the form the view indexes them by, so a DNS name,
    the NATS API and the CLI all match the same instances. An empty subset is
    the whole service.
    """

    version: str | None = None
    tags: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return self.version is not None or bool(self.tags)


@dataclass(frozen=True, slots=True)
class SubsetCounts:
    """Healthy instances of one service in one cluster, per version and per tag
    (label forms); an instance with a version and two tags counts in three places."""

    versions: dict[str, int] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Resolution:
    """Ranked candidate clusters for one service, best first.

    ``known`` is true when any cluster (healthy or not) has the service, so the
    DNS layer can tell NXDOMAIN (unknown) from NOERROR/NODATA (known, nothing
    healthy). ``clusters`` holds only candidates: at least one healthy instance,
    at least one gateway up, and an agent that is fresh or served under the
    stale policy; each candidate's ``gateways`` are only those that are up.
    """

    key: ServiceKey
    known: bool
    clusters: tuple[RankedCluster, ...] = ()


@dataclass(frozen=True, slots=True)
class ViewChange:
    """What one applied event or probe transition changed.

    ``services``: the service keys whose resolution may differ now (which
    clusters are candidates, or whether the service exists).
    ``counts``: keys whose candidates are the same but whose healthy-instance
    counts moved; only what shows a count (``Resolution`` clusters'
    ``healthy_instances``, the DNS TXT explanation) differs. An instance that
    flips health while others stay healthy is the common change under churn,
    and A/AAAA/SRV answers survive it.
    ``everything``: topology changed (client CIDRs, localities, cluster set):
    every cached answer is invalid.
    """

    services: frozenset[ServiceKey] = field(default_factory=frozenset)
    everything: bool = False
    counts: frozenset[ServiceKey] = field(default_factory=frozenset)

    def __bool__(self) -> bool:
        return self.everything or bool(self.services) or bool(self.counts)

    def merge(self, other: ViewChange) -> ViewChange:
        if self.everything or other.everything:
            return ViewChange(everything=True)
        return ViewChange(
            services=self.services | other.services, counts=self.counts | other.counts
        )


class ViewReader(Protocol):
    def client_class(self, client: IPAddress | None) -> str | None:
        """The cluster whose client CIDRs contain ``client`` (longest prefix), or None."""
        ...

    def resolve(
        self,
        key: ServiceKey,
        client_class: str | None,
        pinned: str | None = None,
        subset: Subset | None = None,
    ) -> Resolution:
        """Candidates for ``key`` ranked for clients of ``client_class``.

        With ``pinned``, only that cluster is considered (``known`` still tells
        whether the service exists in that cluster). With ``subset``, a cluster is
        a candidate only with a healthy instance in the subset, and
        ``healthy_instances`` counts those (``known`` is still about the service).
        """
        ...

    def subset_counts(self, key: ServiceKey, cluster: str) -> SubsetCounts | None:
        """Healthy instances of ``key`` in ``cluster`` per version and tag; None when the
        cluster does not have the service."""
        ...

    def cluster_known(self, cluster: str) -> bool: ...

    def namespace_known(self, namespace: str) -> bool:
        """Whether any service lives in ``namespace``: ``<namespace>.svc.<zone>`` is then
        an empty non-terminal (NOERROR, RFC 8020), not NXDOMAIN."""
        ...
