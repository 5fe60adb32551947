"""What the view keeps per cluster and per service, and what applying a message did (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from syncmesh.labels import subset_label
from syncmesh.schema import ClusterBeat, ServiceState, decode_service_state
from syncmesh.validate import Network
from syncmesh.view_api import ServiceKey, Subset, SubsetCounts, ViewChange

__all__ = ["Key", "Outcome", "Applied", "ServiceEntry", "Tombstone", "ClusterRecord", "replaced"]

_NO_CHANGE = ViewChange()

# (namespace, service): a plain tuple inside the view because it hashes in C;
# ServiceKey (a dataclass) is built only for what leaves the view.
Key = tuple[str, str]


class Outcome(StrEnum):
    """What became of one stream message; the ``outcome`` label of the messages metric."""

    # Accepted, and the view holds something new (``Applied.change`` names the answers
    # that may differ: possibly none, when only addresses, ports or metadata moved).
    APPLIED = "applied"
    # Accepted (or already known), and no answer can differ.
    SAME = "same"
    # Not newer than what the view holds for its key: a replay or a duplicate.
    STALE_REVISION = "stale-revision"
    # Invalid or fenced; changed nothing (only ``Ingest`` reports it: the view raises).
    REJECTED = "rejected"


class Applied(NamedTuple):
    outcome: Outcome
    # What changed beyond ``key`` (a cluster's services, or everything).
    wide: ViewChange = _NO_CHANGE
    gateways_changed: bool = False
    # The one service an applied service message changed; kept as a tuple and
    # turned into a ViewChange only when asked, so catching up builds none.
    key: Key | None = None
    # ``key``'s candidates stayed the same; only its healthy counts moved
    # (``ViewChange.counts``).
    counts_only: bool = False

    @property
    def change(self) -> ViewChange:
        if self.key is None:
            return self.wide
        keys = frozenset((ServiceKey(*self.key),))
        return self.wide.merge(
            ViewChange(counts=keys) if self.counts_only else ViewChange(services=keys)
        )


# (version, tags) of healthy instances, in label form (``subset_label``).
Profile = tuple[str, frozenset[str]]


def _profile(version: str, tags: list[str]) -> Profile:
    labels = frozenset(label for label in map(subset_label, tags) if label is not None)
    return (subset_label(version) or "") if version else "", labels


class ServiceEntry:
    """One service's state in one cluster.

    Kept as the validated message bytes as received, plus what ranking needs
    (the healthy count, and per (version, tag set) the healthy count when any
    instance has a version or tags): a decoded state is about five times
    larger, and allocating it for every service made cold starts slower.
    ``state`` decodes on demand (inventory, comparisons).

    A service has few distinct (version, tag set) pairs, however many
    instances, so a subset's healthy count is a sum over a handful of profiles
    (any version/tag combination, as the resolve API asks) and services without
    versions or tags carry nothing extra.
    """

    __slots__ = ("raw", "epoch", "revision", "healthy", "instances", "profiles")

    def __init__(self, raw: bytes, state: ServiceState) -> None:
        self.raw = raw
        self.epoch = state.epoch
        self.revision = state.revision
        healthy = 0
        profiles: dict[Profile, int] | None = None
        for instance in state.instances:
            if instance.health != "critical" and instance.weight > 0:
                healthy += 1
                if instance.version or instance.tags:
                    if profiles is None:
                        profiles = {}
                    profile = _profile(instance.version, instance.tags)
                    profiles[profile] = profiles.get(profile, 0) + 1
        self.healthy = healthy
        self.instances = len(state.instances)
        self.profiles = profiles

    def healthy_in(self, subset: Subset) -> int:
        """Healthy instances of ``subset`` (labels); the whole service for an empty one."""
        if not subset:
            return self.healthy
        if self.profiles is None:
            return 0
        version, tags = subset.version, subset.tags
        return sum(
            count
            for (v, t), count in self.profiles.items()
            if (version is None or v == version) and tags <= t
        )

    def subset_counts(self) -> SubsetCounts:
        counts = SubsetCounts()
        for (version, tags), count in (self.profiles or {}).items():
            if version:
                counts.versions[version] = counts.versions.get(version, 0) + count
            for tag in tags:
                counts.tags[tag] = counts.tags.get(tag, 0) + count
        return counts

    @property
    def state(self) -> ServiceState:
        return decode_service_state(self.raw)

    def same_candidacy(self, other: ServiceEntry) -> bool:
        """Whether ``other`` makes its cluster a candidate for exactly the same subsets
        (the whole service and every version/tag combination) as this entry: only
        "any healthy instance" counts for that, not how many (``view.resolve``)."""
        if (self.healthy > 0) != (other.healthy > 0):
            return False
        # Every profile kept has a healthy instance, so the key sets decide.
        mine, theirs = self.profiles, other.profiles
        if mine is None or theirs is None:
            return mine is theirs
        return mine.keys() == theirs.keys()

    def same_counts(self, other: ServiceEntry) -> bool:
        return self.healthy == other.healthy and self.profiles == other.profiles


def replaced(old: ServiceEntry, fresh: ServiceEntry, wide: ViewChange, key: Key) -> Applied:
    """What replacing ``old`` by ``fresh`` (other instances) changed: the service when
    its candidacy moved, only its counts when they alone did, else nothing an answer
    shows (addresses, ports, metadata, which instance is the healthy one)."""
    if not old.same_candidacy(fresh):
        return Applied(Outcome.APPLIED, wide, key=key)
    if old.same_counts(fresh):
        return Applied(Outcome.APPLIED, wide)
    return Applied(Outcome.APPLIED, wide, key=key, counts_only=True)


class Tombstone(NamedTuple):
    """A deleted service's ``(epoch, revision)``, so an older state of it stays deleted,
    until ``expires_at`` (view clock): by then the tombstone has left the stream too."""

    epoch: int
    revision: int
    expires_at: float


@dataclass(slots=True)
class ClusterRecord:
    name: str
    beat: ClusterBeat | None = None
    # Local-clock time the last beat was sent (arrival minus its age in the stream).
    beat_at: float = 0.0
    stale: bool = True
    networks: tuple[Network, ...] = ()
    services: dict[Key, ServiceEntry] = field(default_factory=dict)
    tombstones: dict[Key, Tombstone] = field(default_factory=dict)
    # syncmesh.digest of the live services, computed on demand (anti-entropy compares it
    # with every beat's); None whenever a service message changed the set.
    set_digest: tuple[int, str] | None = None

    def service_keys(self) -> frozenset[ServiceKey]:
        return frozenset(ServiceKey(ns, svc) for ns, svc in self.services)
