"""How each cluster can be reached from this replica (pure core): its gateways
that pass their probes, the best RTT among them, and its load.

``RegistryView`` owns one ``ClusterReach`` and asks it to ``refresh`` a
cluster whenever a probe status or the cluster's announced gateways change;
the answer says whether what DNS serves for the cluster moved. Resolution
reads the three maps directly (``up``, ``rtt``, ``load``): that runs for
every cache miss.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from global_registry.config import LoadConfig
from global_registry.core.load import ClusterLoad
from global_registry.core.probes import GatewayId, GatewayStatus
from syncmesh.schema import Gateway

__all__ = ["ClusterReach", "NO_RTT"]

# (RTT bucket, RTT in ms) of a cluster with no measured up gateway.
NO_RTT: tuple[int | None, float | None] = (None, None)
_INF = float("inf")


def _bucket_or_inf(rtt: tuple[int | None, float | None] | None) -> float:
    bucket = None if rtt is None else rtt[0]
    return _INF if bucket is None else bucket


class ClusterReach:
    def __init__(self, probes_required: bool, load_policy: LoadConfig) -> None:
        # Without probes every announced gateway counts as up.
        self._probes_required = probes_required
        self._load_policy = load_policy
        self.statuses: dict[GatewayId, GatewayStatus] = {}
        # Per cluster: the up gateways as answers use them (served loads included),
        self.up: dict[str, tuple[Gateway, ...]] = {}
        # the (bucket, ms) of its best up gateway,
        self.rtt: dict[str, tuple[int | None, float | None]] = {}
        # and its load with the overload hysteresis.
        self.load: dict[str, ClusterLoad] = {}

    def bucket(self, cluster: str) -> int | None:
        return self.rtt.get(cluster, NO_RTT)[0]

    def keep_only(self, cluster: str, announced: Collection[GatewayId]) -> None:
        """Forget the probe statuses of the cluster's gateways no longer announced."""
        for gw in [g for g in self.statuses if g.cluster == cluster and g not in announced]:
            del self.statuses[gw]

    def forget(self, cluster: str) -> None:
        self.keep_only(cluster, ())
        self.up.pop(cluster, None)
        self.rtt.pop(cluster, None)
        self.load.pop(cluster, None)

    def refresh(self, cluster: str, gateways: Sequence[Gateway]) -> bool:
        """Recompute the cluster's up gateways, its RTT (best of its up gateways)
        and its load from its announced ``gateways``; True when the up gateways as
        answers use them, or the overload flag, changed."""
        up: list[Gateway] = []
        best = NO_RTT
        for g in gateways:
            if not self._probes_required:
                up.append(g)
                continue
            status = self.statuses.get(GatewayId(cluster, g.address, g.port))
            if status is None or not status.up:
                continue
            up.append(g)
            if status.rtt_bucket is not None and status.rtt_ms is not None:
                if best[0] is None or (status.rtt_bucket, status.rtt_ms) < (
                    best[0],
                    best[1] or 0.0,
                ):
                    best = (status.rtt_bucket, status.rtt_ms)
        load = self.load.get(cluster)
        if load is None:
            load = self.load[cluster] = ClusterLoad()
        served, flipped = load.refresh(gateways, up, self._load_policy)
        changed = flipped or served != self.up.get(cluster, ())
        self.up[cluster] = served
        self.rtt[cluster] = best
        return changed

    def shared_between(
        self,
        cluster: str,
        keys: Iterable[tuple[str, str]],
        holders: Mapping[tuple[str, str], Collection[str]],
        before: int,
        after: int,
    ) -> list[tuple[str, str]]:
        """Which of ``keys`` (services of ``cluster``) another of their ``holders`` offers
        from an RTT bucket between ``before`` and ``after``, both included."""
        low, high = min(before, after), max(before, after)
        rtt = self.rtt
        return [
            key
            for key in keys
            if any(
                other != cluster and low <= _bucket_or_inf(rtt.get(other)) <= high
                for other in holders.get(key, ())
            )
        ]
