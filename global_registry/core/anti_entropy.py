"""Anti-entropy (pure): does this replica hold what the agent says the stream holds?

Every beat carries ``services`` and ``digest`` (``syncmesh.digest``) of the live
services the agent knows the stream holds for its cluster. The replica computes
the same pair from its own view of that cluster. The agent publishes a beat only
while no publish is in flight, and the stream is read in order, so when the
replica applies a beat it holds every message the agent counted: a difference
means the replica missed or rejected something (a message deleted behind its
back before a cold start, a forged message it accepted, a limit it applies).

A difference that persists for ``grace_s`` makes this replica send the agent a
``ResyncRequest`` (everything is republished with new revisions), then again
after ``min_interval_s``, doubling up to ``max_interval_s`` while it persists.
A matching beat ends the episode. Only live beats are compared: during the
first full read the view is still incomplete.

The adapter (``global_registry.io.anti_entropy``) sends the requests, counts and
logs them; this module decides.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from global_registry.config import AntiEntropyConfig
from global_registry.core.records import ClusterRecord
from syncmesh.digest import service_set_digest
from syncmesh.schema import ClusterBeat

__all__ = ["view_digest", "SyncEventKind", "SyncEvent", "ClusterSync", "AntiEntropy"]


def view_digest(rec: ClusterRecord) -> tuple[int, str]:
    """The digest of the live services the view holds for ``rec`` (cached in the record)."""
    if rec.set_digest is None:
        rec.set_digest = service_set_digest(
            (key[0], key[1], entry.epoch, entry.revision) for key, entry in rec.services.items()
        )
    return rec.set_digest


class SyncEventKind(enum.StrEnum):
    # Send a ResyncRequest to the cluster's agent now.
    RESYNC = "resync"
    # The view agrees with the agent again after a mismatch.
    HEALED = "healed"


class SyncEvent(NamedTuple):
    kind: SyncEventKind
    cluster: str
    # For people: what differs, or how long it took.
    detail: str
    # The first request of this mismatch (log it; later ones are only counted).
    first: bool = False
    # Seconds since the mismatch was first seen (HEALED: how long healing took).
    mismatch_s: float = 0.0


@dataclass(slots=True)
class ClusterSync:
    """One cluster's comparison state."""

    # None: never compared (no digest in its beats yet).
    in_sync: bool | None = None
    mismatch_since: float | None = None
    next_request_at: float = 0.0
    interval_s: float = 0.0
    # Requests sent in this episode, and in this replica's life.
    episode_requests: int = 0
    requests: int = 0


class AntiEntropy:
    def __init__(self, config: AntiEntropyConfig) -> None:
        self.config = config
        self._clusters: dict[str, ClusterSync] = {}

    def on_beat(self, beat: ClusterBeat, rec: ClusterRecord, now: float) -> SyncEvent | None:
        """A fresh beat just applied to ``rec`` (live, not during catch-up)."""
        cfg = self.config
        if not cfg.enabled or not beat.digest or beat.retired:
            return None
        sync = self._clusters.setdefault(beat.cluster, ClusterSync())
        count, digest = view_digest(rec)
        if (count, digest) == (beat.services, beat.digest):
            since, requests = sync.mismatch_since, sync.episode_requests
            sync.in_sync, sync.mismatch_since, sync.episode_requests = True, None, 0
            if since is None:
                return None
            return SyncEvent(
                SyncEventKind.HEALED,
                beat.cluster,
                f"{count} services agree with the agent's digest again "
                f"after {requests} resync request(s)",
                mismatch_s=now - since,
            )
        sync.in_sync = False
        if sync.mismatch_since is None:
            sync.mismatch_since = now
            sync.next_request_at = now + cfg.grace_s
            sync.interval_s = cfg.min_interval_s
        if now < sync.next_request_at:
            return None
        first = sync.episode_requests == 0
        sync.episode_requests += 1
        sync.requests += 1
        sync.next_request_at = now + sync.interval_s
        sync.interval_s = min(cfg.max_interval_s, sync.interval_s * 2)
        return SyncEvent(
            SyncEventKind.RESYNC,
            beat.cluster,
            f"agent (epoch {beat.epoch}) has {beat.services} services, digest "
            f"{beat.digest[:12]}; this replica has {count}, digest {digest[:12]}",
            first=first,
            mismatch_s=now - sync.mismatch_since,
        )

    def status(self, cluster: str) -> ClusterSync | None:
        return self._clusters.get(cluster)

    def forget(self, cluster: str) -> None:
        """The cluster was retired."""
        self._clusters.pop(cluster, None)
