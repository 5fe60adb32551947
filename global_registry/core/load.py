"""Gateway load in the ranking (pure): per cluster, the overload flag with its
hysteresis, and the loads the answers use.

Agents send each gateway's load (0-100, ``None`` = unknown) in every beat.
A cluster's load is the mean of its up gateways' loads weighted by gateway
weight (how SRV clients spread over them); if any up gateway's load is
unknown, the cluster's is unknown. Unknown never counts as overloaded: a
broken load source must not move traffic by itself.

``OverloadGate`` is the state machine::

    normal     --load > overloaded_above_pct-->  overloaded
    overloaded --load < recovered_below_pct--->  normal
    any        --load unknown----------------->  normal

Answers (SRV weights, the TXT explanation, ``/v1/resolve``) use a *served*
load per gateway that follows the announced one only when it moved by
``step_pct`` or more (or reached 0 or 100, or the gate flipped), so a load
that wobbles by a point each beat does not invalidate every cached answer of
its cluster each time (the same idea as the sticky RTT buckets).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from global_registry.config import LoadConfig
from syncmesh.schema import Gateway

__all__ = ["OverloadGate", "ClusterLoad", "cluster_load", "served_load"]

GatewayKey = tuple[str, int]


def cluster_load(gateways: Iterable[Gateway]) -> int | None:
    """Mean load weighted by gateway weight (plain mean when every weight is 0);
    None when there is no gateway or any gateway's load is unknown."""
    weighted = weights = plain = count = 0
    for g in gateways:
        if g.load is None:
            return None
        weighted += g.load * g.weight
        weights += g.weight
        plain += g.load
        count += 1
    if not count:
        return None
    return round(weighted / weights) if weights else round(plain / count)


def served_load(previous: int | None, current: int | None, step: int) -> int | None:
    """The load answers use next, given what they used and what was announced."""
    if previous is None or current is None or current in (0, 100):
        return current
    return current if abs(current - previous) >= step else previous


class OverloadGate:
    """Two thresholds, so a load hovering around one does not flip answers every beat."""

    __slots__ = ("overloaded",)

    def __init__(self) -> None:
        self.overloaded = False

    def observe(self, load: int | None, policy: LoadConfig) -> bool:
        """Feed the cluster's current load; True when the flag flipped."""
        if load is None:
            overloaded = False
        elif self.overloaded:
            overloaded = load >= policy.recovered_below_pct
        else:
            overloaded = load > policy.overloaded_above_pct
        flipped = overloaded != self.overloaded
        self.overloaded = overloaded
        return flipped


class ClusterLoad:
    """One cluster's load state in the view: the gate, the served load per gateway,
    and the cluster load answers show."""

    __slots__ = ("gate", "served", "load")

    def __init__(self) -> None:
        self.gate = OverloadGate()
        self.served: dict[GatewayKey, int | None] = {}
        self.load: int | None = None

    @property
    def overloaded(self) -> bool:
        return self.gate.overloaded

    def refresh(
        self, announced: Sequence[Gateway], up: Sequence[Gateway], policy: LoadConfig
    ) -> tuple[tuple[Gateway, ...], bool]:
        """Recompute from the beat's gateways and the ones up now.

        Returns the up gateways carrying their served load (what answers use) and
        whether the overload flag flipped.
        """
        enabled = policy.enabled
        flipped = self.gate.observe(cluster_load(up) if enabled else None, policy)
        served: dict[GatewayKey, int | None] = {}
        for g in announced:
            key = (g.address, g.port)
            current = g.load if enabled else None
            if flipped or key not in self.served:
                served[key] = current
            else:
                served[key] = served_load(self.served[key], current, policy.step_pct)
        self.served = served
        out = tuple(
            g
            if g.load == served[(g.address, g.port)]
            else msgspec.structs.replace(g, load=served[(g.address, g.port)])
            for g in up
        )
        self.load = cluster_load(out)
        return out, flipped
