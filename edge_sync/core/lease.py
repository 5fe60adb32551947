"""Standby agents (pure): when a standby may claim its cluster, and how many stand by.

There is one mechanism, the epoch claim (``edge_sync.core.epoch_claim``): the
last message on ``syncmesh.v2.epoch.<cluster>`` *is* the lease record, its
stream sequence the fencing token. The lease is renewed by the leader's beats:
it holds while the claim, or the latest beat carrying the claim's epoch, was
stored less than ``lease_beats`` beat intervals ago. Ages come from the NATS
server's clock (the stored messages' timestamps against the server's own "now"),
never from an agent's wall clock, so a standby with a wrong clock neither
usurps a live leader nor waits forever.

A standby that finds the lease expired claims with a compare-and-set over the
leader's claim sequence; of two standbys only one write succeeds, and the
other one reads the new claim, finds it live and keeps standing by.

The adapter (``edge_sync.io.standby``) reads the claim and the beat, publishes
the presence messages and makes the claim; this module decides.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["LeaseReading", "Verdict", "LeaseDecision", "judge", "poll_interval", "StandbyRoster"]


class LeaseReading(NamedTuple):
    """One reading of the claim subject and of the cluster's beat.

    Ages are ``server now - stored at``, both on the NATS server's clock
    (None: no such message)."""

    claim_seq: int = 0
    claim_agent: str = ""
    claim_age_s: float | None = None
    beat_epoch: int = 0
    beat_age_s: float | None = None
    beat_interval_s: float | None = None
    beat_retired: bool = False


class Verdict(enum.StrEnum):
    # No claim at all (a new cluster, or the stream lost it): claim.
    FREE = "free"
    # The claimant gave no sign of life for the lease time: claim over it.
    EXPIRED = "expired"
    # A live leader: stand by.
    HELD = "held"
    # The claimant retired the cluster (``syncmesh retire-cluster``): an agent that
    # starts claims it anew, a standby that was running does not revive it.
    RETIRED = "retired"


class LeaseDecision(NamedTuple):
    verdict: Verdict
    lease_s: float
    # Seconds since the claimant's last sign of life (None: no claim).
    silent_s: float | None

    def may_claim(self, starting: bool) -> bool:
        """Whether to claim now; ``starting``: this agent has not stood by yet."""
        if self.verdict is Verdict.RETIRED:
            return starting
        return self.verdict in (Verdict.FREE, Verdict.EXPIRED)

    @property
    def remaining_s(self) -> float:
        """How long the lease still holds (0 when it does not)."""
        if self.verdict is not Verdict.HELD or self.silent_s is None:
            return 0.0
        return max(0.0, self.lease_s - self.silent_s)


def judge(reading: LeaseReading, lease_beats: float, own_interval_s: float) -> LeaseDecision:
    """Does the cluster have a live leader?

    The lease is ``lease_beats`` x the leader's announced beat interval (its beat's
    ``interval_s``; this agent's own interval before its first beat). A beat counts
    only when it carries the current claim's epoch: a deposed agent's beats are
    refused by the server, and an older beat says nothing about the new claimant.
    """
    own_lease = lease_beats * own_interval_s
    if reading.claim_seq == 0:
        return LeaseDecision(Verdict.FREE, own_lease, None)
    signs = [reading.claim_age_s]
    interval = own_interval_s
    beat_of_claim = reading.beat_epoch == reading.claim_seq and reading.beat_age_s is not None
    if beat_of_claim:
        signs.append(reading.beat_age_s)
        interval = reading.beat_interval_s or own_interval_s
    known = [max(0.0, s) for s in signs if s is not None]
    lease_s = lease_beats * interval
    # A claim whose age cannot be read is treated as just made: never usurp on a doubt.
    silent_s = min(known) if known else 0.0
    if beat_of_claim and reading.beat_retired:
        return LeaseDecision(Verdict.RETIRED, lease_s, silent_s)
    if silent_s >= lease_s:
        return LeaseDecision(Verdict.EXPIRED, lease_s, silent_s)
    return LeaseDecision(Verdict.HELD, lease_s, silent_s)


def poll_interval(configured_s: float, beat_interval_s: float) -> float:
    """How often a standby reads the lease: as configured, else half a beat, at most 1 s."""
    if configured_s > 0:
        return configured_s
    return max(0.05, min(1.0, beat_interval_s / 2))


class StandbyRoster:
    """The leader's count of its standbys (``ClusterBeat.standbys``), from their presence
    messages; ``now`` is the leader's loop time when one arrived. A standby is forgotten
    after ``lease_beats`` of its own intervals without a presence."""

    def __init__(self, lease_beats: float) -> None:
        self._lease_beats = lease_beats
        self._until: dict[str, float] = {}

    def heard(self, agent: str, interval_s: float, now: float) -> None:
        self._until[agent] = now + self._lease_beats * interval_s

    def count(self, now: float) -> int:
        for agent in [a for a, until in self._until.items() if until <= now]:
            del self._until[agent]
        return len(self._until)

    def agents(self, now: float) -> list[str]:
        self.count(now)
        return sorted(self._until)

    def clear(self) -> None:
        self._until.clear()
