"""Epoch fencing: which messages of a cluster a consumer may believe.

An agent's epoch is the stream sequence at which its ``EpochClaim`` was stored
(``syncmesh.v2.epoch.<cluster>``, a compare-and-set publish). Claims and the
messages they order live in one stream that keeps only the newest claim per
cluster, so a consumer reads every stored claim first (``Ingest.prime``) and then
judges each message by three rules, none of which reads a clock:

- ``epoch >= seq`` (the message's own stream sequence): ``future-epoch``. No
  real agent can carry an epoch claimed at or after the point its message was
  stored; a forged or corrupted epoch "a year ahead" is caught here, without
  poisoning the cluster for everyone after it.
- ``epoch > latest claim seen``, or 0: ``unclaimed-epoch``. Nobody claimed it.
- ``epoch < latest claim`` and ``seq > latest claim``: ``deposed``. Written by an
  agent after a newer one took over (a frozen process resumed, a partitioned
  twin); older messages stored *before* the takeover remain valid.

Within the accepted messages, per subject, the largest ``(epoch, revision)``
wins as before. Pure: used by the registry's view and by ``watch_inventory``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = ["EpochVerdict", "EpochFence"]


class EpochVerdict(enum.Enum):
    OK = "ok"
    FUTURE = "future-epoch"
    UNCLAIMED = "unclaimed-epoch"
    DEPOSED = "deposed"

    def detail(self, epoch: int, seq: int, claimed: int) -> str:
        """Why a message with ``epoch`` stored at ``seq`` got this verdict (the latest
        claim of its cluster: ``claimed``)."""
        if self is EpochVerdict.FUTURE:
            return f"epoch {epoch} is not below the message's own stream sequence {seq}"
        if self is EpochVerdict.UNCLAIMED:
            return f"epoch {epoch} was never claimed (latest claim: {claimed or 'none'})"
        return f"epoch {epoch} was deposed by the claim at {claimed}; message stored at {seq}"


class EpochFence:
    """The latest claim per cluster, and the verdict on each message."""

    __slots__ = ("_claims",)

    def __init__(self) -> None:
        self._claims: dict[str, int] = {}

    @property
    def claims(self) -> Mapping[str, int]:
        """The latest claim per cluster (live: it changes as claims come)."""
        return self._claims

    def claim(self, cluster: str, seq: int) -> bool:
        """A claim stored at ``seq``; True when it is the newest for its cluster."""
        if seq <= self._claims.get(cluster, 0):
            return False
        self._claims[cluster] = seq
        return True

    def current(self, cluster: str) -> int:
        """The epoch of the cluster's current owner (0: never claimed)."""
        return self._claims.get(cluster, 0)

    def judge(self, cluster: str, epoch: int, seq: int) -> EpochVerdict:
        """The verdict on a message of ``cluster`` with ``epoch``, stored at stream ``seq``."""
        if epoch >= seq:
            return EpochVerdict.FUTURE
        claimed = self._claims.get(cluster, 0)
        if epoch > claimed or epoch == 0:
            return EpochVerdict.UNCLAIMED
        if epoch < claimed < seq:
            return EpochVerdict.DEPOSED
        return EpochVerdict.OK

    def forget(self, cluster: str) -> None:
        self._claims.pop(cluster, None)

    def __len__(self) -> int:
        return len(self._claims)
