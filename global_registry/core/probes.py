"""Which gateway to probe when, and what each outcome means (pure core).

The asyncio adapter (``probe_runner``) asks ``take_due(now)`` for the probes to
start, runs TCP connects, and hands each outcome back to ``record``. Jitter
comes from an injected ``random.Random`` so tests replay exact schedules.

The adapter asks for due probes after every outcome, so with a hundred
gateways scanning them all each time was most of the registry's idle CPU,
taken from the thread that answers DNS (they share the GIL). Due times live
in a heap instead (an entry whose target moved on is dropped when it comes
up), and the gateways still waiting for their first outcome are counted.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from global_registry.config import ProbeConfig
from global_registry.core.probe_fsm import UP_PHASES, ProbePhase, step
from global_registry.core.rtt import RttEstimate, RttScale

__all__ = [
    "GatewayId",
    "GatewayStatus",
    "ProbeResult",
    "ProbeOutcome",
    "ProbeDetail",
    "GatewayProbes",
]


class GatewayId(NamedTuple):
    cluster: str
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """What the view needs of a gateway: up or not, and its RTT bucket."""

    phase: ProbePhase
    up: bool
    rtt_ms: float | None = None
    rtt_bucket: int | None = None


class ProbeResult(StrEnum):
    """How one TCP connect ended; the ``outcome`` label of the probes metric."""

    OK = "ok"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    ERROR = "error"


class ProbeOutcome(NamedTuple):
    ok: bool
    # Connect time in seconds when ok.
    rtt_s: float | None = None
    result: ProbeResult = ProbeResult.OK
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ProbeDetail:
    """Everything known about one gateway's probes, for operators and ProbeReports."""

    phase: ProbePhase
    up: bool
    rtt_ms: float | None
    rtt_bucket: int | None
    consecutive: int
    probes: int
    last_result: ProbeResult | None
    last_detail: str


@dataclass(slots=True)
class _Target:
    next_at: float
    phase: ProbePhase = ProbePhase.UNKNOWN
    count: int = 0
    rtt: RttEstimate = field(default_factory=RttEstimate)
    in_flight: bool = False
    probes: int = 0
    last_result: ProbeResult | None = None
    last_detail: str = ""

    def status(self) -> GatewayStatus:
        return GatewayStatus(
            phase=self.phase,
            up=self.phase in UP_PHASES,
            rtt_ms=self.rtt.average_ms,
            rtt_bucket=self.rtt.bucket,
        )


class GatewayProbes:
    def __init__(self, config: ProbeConfig, rng: random.Random | None = None) -> None:
        self._config = config
        self._rng = rng or random.Random()
        self._scale = RttScale(
            floor_ms=config.rtt_floor_ms, ratio=config.rtt_bucket_ratio, alpha=config.rtt_alpha
        )
        self._targets: dict[GatewayId, _Target] = {}
        self._in_flight = 0
        # (next_at, gateway); an entry is current only while it equals its
        # target's next_at and the target is not in flight.
        self._due: list[tuple[float, GatewayId]] = []
        self._unprobed = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _delay(self) -> float:
        spread = self._config.jitter
        return self._config.interval_s * (1.0 + self._rng.uniform(-spread, spread))

    def set_targets(self, gateways: Iterable[GatewayId], now: float) -> list[GatewayId]:
        """Probe exactly these from now on; returns the ones no longer probed."""
        wanted = set(gateways)
        removed = [gw for gw in self._targets if gw not in wanted]
        for gw in removed:
            target = self._targets.pop(gw)
            if target.in_flight:
                self._in_flight -= 1
            if target.phase is ProbePhase.UNKNOWN:
                self._unprobed -= 1
        for gw in sorted(wanted):
            if gw not in self._targets:
                # New gateways start soon but spread over a jitter window, not all at once.
                first = self._rng.uniform(0.0, self._config.jitter * self._config.interval_s)
                self._targets[gw] = _Target(next_at=now + first)
                self._unprobed += 1
                heapq.heappush(self._due, (now + first, gw))
        return removed

    def _current(self, entry: tuple[float, GatewayId]) -> bool:
        target = self._targets.get(entry[1])
        return target is not None and not target.in_flight and target.next_at == entry[0]

    def take_due(self, now: float) -> list[GatewayId]:
        """Probes to start now, oldest due first, within the concurrency bound."""
        room = self._config.max_concurrent - self._in_flight
        started: list[GatewayId] = []
        due = self._due
        while due and len(started) < room and due[0][0] <= now:
            entry = heapq.heappop(due)
            if self._current(entry):
                self._targets[entry[1]].in_flight = True
                started.append(entry[1])
        self._in_flight += len(started)
        return started

    def next_wakeup(self) -> float | None:
        """When the next probe is due (None: nothing to probe, or no room until one finishes)."""
        if self._in_flight >= self._config.max_concurrent:
            return None
        due = self._due
        while due and not self._current(due[0]):
            heapq.heappop(due)
        return due[0][0] if due else None

    def record(self, gw: GatewayId, outcome: ProbeOutcome, now: float) -> GatewayStatus | None:
        """Fold in one outcome; returns the gateway's new status (None if no longer probed)."""
        target = self._targets.get(gw)
        if target is None or not target.in_flight:
            return None
        target.in_flight = False
        self._in_flight -= 1
        if target.phase is ProbePhase.UNKNOWN:
            self._unprobed -= 1
        target.probes += 1
        target.last_result = outcome.result
        target.last_detail = outcome.detail
        target.phase, target.count = step(
            target.phase, target.count, outcome.ok, self._config.rise, self._config.fall
        )
        if outcome.ok and outcome.rtt_s is not None:
            target.rtt.add(outcome.rtt_s * 1000.0, self._scale)
        target.next_at = now + self._delay()
        heapq.heappush(self._due, (target.next_at, gw))
        return target.status()

    def status(self, gw: GatewayId) -> GatewayStatus | None:
        target = self._targets.get(gw)
        return target.status() if target is not None else None

    def all_probed(self) -> bool:
        """Every target has had at least one outcome (used for readiness)."""
        return self._unprobed == 0

    def details(self) -> dict[GatewayId, ProbeDetail]:
        return {
            gw: ProbeDetail(
                phase=t.phase,
                up=t.phase in UP_PHASES,
                rtt_ms=t.rtt.average_ms,
                rtt_bucket=t.rtt.bucket,
                consecutive=t.count,
                probes=t.probes,
                last_result=t.last_result,
                last_detail=t.last_detail,
            )
            for gw, t in self._targets.items()
        }
