"""Nearest ranking of candidate clusters (DESIGN.md, "Nearest"), a pure function.

Order, most significant first:
0. a fresh agent before a stale one (stale candidates exist only under the
   ``serve`` stale policy; each of them gets the reason ``stale``);
   then a cluster that is not overloaded before one that is (``overloaded``:
   its gateways' load crossed the threshold, ``global_registry.core.load``);
1. the cluster whose client CIDRs contain the client (``client-cidr``);
2. same zone as the reference locality (``same-zone``; zone and region equal);
3. same region (``same-region``);
4. lower RTT bucket measured from this replica (``rtt``);
5. cluster name (``order``).

The reference locality is the client's cluster's, or this replica's own when
the client is in no cluster's CIDRs. An overloaded fresh cluster's ``reason``
is ``overloaded`` whatever else places it among the overloaded. Any other
fresh cluster's ``reason`` is the first criterion that places it: its tier
(1-3) when it has one; otherwise ``rtt`` when its RTT bucket is known and no
other tier-less fresh candidate shares it, else ``order`` (its place among
equals was decided by name alone).

``rank`` numbers the places, but clusters that tie on criteria 0-4 (and differ
only by name) share one: the DNS server uses it as SRV priority, so resolvers
spread load over equals by gateway weight (RFC 2782). A/AAAA answer the first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from syncmesh.schema import Gateway, Locality, RankedCluster

__all__ = ["Candidate", "REASONS", "rank"]

REASONS = ("client-cidr", "same-zone", "same-region", "rtt", "order", "stale", "overloaded")
_NO_RTT = 1 << 30
_NO_TIER = 3


@dataclass(frozen=True, slots=True)
class Candidate:
    """A cluster that passed the candidate rules for one service."""

    cluster: str
    locality: Locality
    gateways: tuple[Gateway, ...]
    healthy_instances: int
    rtt_bucket: int | None = None
    rtt_ms: float | None = None
    stale: bool = False
    # Over the load threshold (with hysteresis): ranked after every cluster that is not.
    overloaded: bool = False
    # The cluster's load as answers show it (None: unknown).
    load: int | None = None


def _tier(candidate: Candidate, client_cluster: str | None, reference: Locality) -> int:
    if client_cluster is not None and candidate.cluster == client_cluster:
        return 0
    loc = candidate.locality
    if reference.zone and loc.zone == reference.zone and loc.region == reference.region:
        return 1
    if reference.region and loc.region == reference.region:
        return 2
    return _NO_TIER


def rank(
    candidates: Iterable[Candidate], client_cluster: str | None, reference: Locality
) -> tuple[RankedCluster, ...]:
    # Place = everything but the name: equal places share a rank.
    keyed = []
    for c in candidates:
        bucket = c.rtt_bucket if c.rtt_bucket is not None else _NO_RTT
        keyed.append(((c.stale, c.overloaded, _tier(c, client_cluster, reference), bucket), c))
    keyed.sort(key=lambda item: (item[0], item[1].cluster))
    shared = Counter(place for place, _c in keyed)
    ranked = []
    position = -1
    previous = None
    for place, c in keyed:
        if place != previous:
            position += 1
            previous = place
        stale, overloaded, tier, _bucket = place
        if stale:
            reason = "stale"
        elif overloaded:
            reason = "overloaded"
        elif tier < _NO_TIER:
            reason = REASONS[tier]
        elif c.rtt_bucket is not None and shared[place] == 1:
            reason = "rtt"
        else:
            reason = "order"
        ranked.append(
            RankedCluster(
                cluster=c.cluster,
                rank=position,
                reason=reason,
                gateways=list(c.gateways),
                healthy_instances=c.healthy_instances,
                rtt_ms=None if c.rtt_ms is None else round(c.rtt_ms, 3),
                stale=c.stale,
                load=c.load,
            )
        )
    return tuple(ranked)
