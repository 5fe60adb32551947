"""The nemesis, pure part: the seeded fault schedule, the expected answers, the diff.

Everything here is deterministic given the seed, so a failing campaign is
replayed exactly with ``./run nemesis --seed N`` and the schedule is printed
before it runs.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "FaultKind",
    "Fault",
    "plan",
    "CLUSTERS",
    "GATEWAY_ADDRESS",
    "STANDBY_CLUSTER",
    "NEAREST_ORDER",
    "Truth",
    "InstanceView",
    "expected_cluster",
    "diff",
    "percentile",
]

# Cluster -> its source; the registry's client 127.0.0.1 is in east's CIDRs,
# west shares the replicas' zone, north only their region: the nearest order.
CLUSTERS = {"east": "consul", "west": "nacos", "north": "file"}
NEAREST_ORDER = ("east", "west", "north")
GATEWAY_ADDRESS = {"east": "127.0.0.2", "west": "127.0.0.3", "north": "127.0.0.4"}
# This cluster runs two agents in a standby group ([ha] standby = true): one
# publishes, the other takes over when the leader's lease runs out.
STANDBY_CLUSTER = "north"

# (address, port, health)
InstanceView = tuple[str, int, str]
# (cluster, namespace, service) -> instances; services with no instance are absent.
Truth = Mapping[tuple[str, str, str], frozenset[InstanceView]]


class FaultKind(enum.Enum):
    KILL_NATS_NODE = "kill-nats-node"
    FREEZE_NATS_NODE = "freeze-nats-node"
    KILL_AGENT = "kill-agent"
    FREEZE_AGENT = "freeze-agent"
    KILL_REGISTRY = "kill-registry"
    FREEZE_REGISTRY = "freeze-registry"
    RESTART_CONSUL = "restart-consul"
    WIPE_CONSUL = "wipe-consul"
    RESTART_NACOS = "restart-nacos"
    FLAP_GATEWAY = "flap-gateway"
    CLOCK_AHEAD_AGENT = "clock-ahead-agent"
    CLOCK_BEHIND_AGENT = "clock-behind-agent"
    # The standby group's current leader (whichever agent holds the claim).
    KILL_LEADER = "kill-leader"
    FREEZE_LEADER = "freeze-leader"


# Which targets each fault picks from.
_TARGETS: dict[FaultKind, tuple[str, ...]] = {
    FaultKind.KILL_NATS_NODE: ("n1", "n2", "n3"),
    FaultKind.FREEZE_NATS_NODE: ("n1", "n2", "n3"),
    FaultKind.KILL_AGENT: tuple(CLUSTERS),
    FaultKind.FREEZE_AGENT: tuple(CLUSTERS),
    FaultKind.KILL_REGISTRY: ("r1", "r2"),
    FaultKind.FREEZE_REGISTRY: ("r1", "r2"),
    FaultKind.RESTART_CONSUL: ("consul",),
    FaultKind.WIPE_CONSUL: ("consul",),
    FaultKind.RESTART_NACOS: ("nacos",),
    FaultKind.FLAP_GATEWAY: tuple(CLUSTERS),
    FaultKind.CLOCK_AHEAD_AGENT: tuple(CLUSTERS),
    FaultKind.CLOCK_BEHIND_AGENT: tuple(CLUSTERS),
    FaultKind.KILL_LEADER: (STANDBY_CLUSTER,),
    FaultKind.FREEZE_LEADER: (STANDBY_CLUSTER,),
}


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    target: str
    hold_s: float

    def __str__(self) -> str:
        return f"{self.kind.value}({self.target}, {self.hold_s:.1f}s)"


def plan(seed: int, count: int, kinds: Iterable[FaultKind] | None = None) -> list[Fault]:
    """``count`` faults drawn from ``kinds`` (all by default), each kind at least once
    when ``count`` allows, in a seeded order."""
    rng = random.Random(seed)
    pool = list(kinds or FaultKind)
    chosen = rng.sample(pool, min(count, len(pool)))
    chosen += [rng.choice(pool) for _ in range(count - len(chosen))]
    rng.shuffle(chosen)
    return [
        Fault(kind, rng.choice(_TARGETS[kind]), round(rng.uniform(3.0, 10.0), 1)) for kind in chosen
    ]


def expected_cluster(truth: Truth, namespace: str, service: str) -> str | None:
    """The cluster DNS must answer for a client in east's CIDRs once all is healed."""
    for cluster in NEAREST_ORDER:
        instances = truth.get((cluster, namespace, service), frozenset())
        if any(health != "critical" for _, _, health in instances):
            return cluster
    return None


def diff(truth: Truth, seen: Truth) -> list[str]:
    """Human-readable differences: lost, extra (resurrected) and changed services."""
    problems = []
    for key in sorted(set(truth) | set(seen)):
        want, got = truth.get(key, frozenset()), seen.get(key, frozenset())
        if want == got:
            continue
        name = "/".join(key)
        if not got:
            problems.append(f"lost {name}: {sorted(want)}")
        elif not want:
            problems.append(f"resurrected {name}: {sorted(got)}")
        else:
            problems.append(f"differs {name}: want {sorted(want)}, got {sorted(got)}")
    return problems


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]
