"""Taking the cluster's epoch from NATS, and noticing when it was taken away (pure).

The epoch is the stream sequence at which this agent's ``EpochClaim`` was stored
on ``syncmesh.v2.epoch.<cluster>`` (``syncmesh.schema``, ``syncmesh.epochs``).
The claim is a compare-and-set publish: ``Nats-Expected-Last-Subject-Sequence``
names the claim it replaces, so of two agents racing, one write fails and that
agent reads again and claims over the winner (the newest starter takes over).

Every later message of the run carries the same header, pointed at the claim
subject by ``Nats-Expected-Last-Subject-Sequence-Subject`` (nats-server >= 2.11):
the server itself refuses a state or beat from an agent whose claim is no longer
the last one. A deposed agent (a frozen process resumed, a partitioned twin)
therefore cannot write even once; the registry's fence would drop such a write
anyway, but this way it never reaches the stream.

The adapter (``edge_sync.io.epoch``) does the reads and publishes; this module
decides what to send and what a failed publish means.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from syncmesh import subjects
from syncmesh.schema import SCHEMA_VERSION, EpochClaim

__all__ = [
    "EXPECTED_LAST_SUBJECT_SEQ",
    "EXPECTED_LAST_SUBJECT_SEQ_SUBJECT",
    "LastClaim",
    "ClaimPlan",
    "Ownership",
    "EpochClaimer",
]

EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"


class LastClaim(NamedTuple):
    """The last message on the claim subject: its stream sequence (0: none) and payload."""

    seq: int
    # None when there is no claim, or when its payload does not decode.
    claim: EpochClaim | None = None


NO_CLAIM = LastClaim(0)


class ClaimPlan(NamedTuple):
    """One claim publish: the message and its headers (compare-and-set, de-duplication)."""

    subject: str
    message: EpochClaim
    headers: dict[str, str]


class Ownership(enum.Enum):
    """What a publish refused for a wrong last sequence means, given the claim subject now."""

    # The last claim is ours: the refusal came from something else; retry as usual.
    OWNER = "owner"
    # Another claim is the last one: another agent owns the cluster; stop for good.
    DEPOSED = "deposed"
    # No claim at all: the stream lost its history (recreated, or the subject
    # purged). Nobody took over, so claim again and republish everything.
    LOST = "lost"


class EpochClaimer:
    """The claim of one agent run: what to publish, and the epoch it yielded."""

    def __init__(self, cluster: str, agent: str, nonce: str) -> None:
        self.cluster = cluster
        self.subject = subjects.epoch_subject(cluster)
        # host:pid, for operators; ``nonce`` tells this run's claims apart from a
        # restarted process that got the same pid (pid 1 in every container).
        self.agent = agent
        self.nonce = nonce
        self.epoch = 0
        # Claims made by this run; part of the de-duplication id, so claiming again over
        # the same predecessor (a subject purged twice) is not mistaken for a retry.
        self.claims = 0
        self._sent: EpochClaim | None = None

    def plan(self, last: LastClaim, sent_at: float) -> ClaimPlan:
        """The claim to publish after reading ``last`` off the claim subject."""
        message = EpochClaim(
            schema=SCHEMA_VERSION,
            cluster=self.cluster,
            agent=self.agent,
            previous=last.seq,
            sent_at=sent_at,
        )
        self._sent = message
        headers = {
            EXPECTED_LAST_SUBJECT_SEQ: str(last.seq),
            # Same claim over the same predecessor = same id: a retried publish whose
            # first acknowledgement was lost is de-duplicated, not stored twice.
            "Nats-Msg-Id": f"{self.cluster}:claim:{last.seq}:{self.nonce}:{self.claims}",
        }
        return ClaimPlan(self.subject, message, headers)

    def adopt(self, last: LastClaim) -> bool:
        """After a refused claim: True when the stored claim is the one we sent.

        A claim whose acknowledgement was lost (timeout) is stored all the same;
        claiming again would only depose ourselves.
        """
        if self._sent is None or last.claim is None or last.claim != self._sent:
            return False
        self.claimed(last.seq)
        return True

    def claimed(self, seq: int) -> int:
        """The stream acknowledged our claim at ``seq``: that is the epoch."""
        self.epoch = seq
        self.claims += 1
        self._sent = None
        return seq

    def fence_headers(self, epoch: int) -> dict[str, str]:
        """Headers of a state or beat carrying ``epoch``: the server refuses it unless that
        claim is still the last one. Bound to the message's own epoch, not the current one,
        so a message taken before a new claim can never land after it."""
        return {
            EXPECTED_LAST_SUBJECT_SEQ: str(epoch),
            EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: self.subject,
        }

    def ownership(self, last_seq: int) -> Ownership:
        """What the claim subject's last sequence says after a fenced publish was refused."""
        if last_seq == self.epoch:
            return Ownership.OWNER
        if last_seq == 0:
            return Ownership.LOST
        # Usually a later sequence. A smaller one means the stream was recreated and
        # someone claimed in the new history: that claim is newer than ours too.
        return Ownership.DEPOSED
