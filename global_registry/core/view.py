"""The global view (pure core): every cluster's services, beats and gateway states.

Fed with validated messages, the stream sequence each was stored at, probe
statuses and the current time; returns what each event changed
(``ViewChange``) and never reads a clock. Implements
``syncmesh.view_api.ViewReader`` for the DNS server and the resolve API.

What a message must pass before it changes anything:

1. Epoch fencing (``syncmesh.epochs``): the cluster's ``EpochClaim`` messages
   tell which epochs are real. A ServiceState or ClusterBeat whose epoch is not
   below its own stream sequence (forged), was never claimed, or belongs to an
   agent deposed before the message was stored raises ``Rejected`` with the
   verdict as its reason. A fenced message never moves any per-cluster state,
   so one stray message cannot freeze a cluster.
2. Per (cluster, service) the largest ``(epoch, revision)`` wins, tombstones
   included, so replays and duplicates change nothing (``stale-revision``).

A beat with ``retired: true`` removes its cluster and every service of it; the
cluster's claim stays, so messages of older epochs stay fenced. The view
remembers a tombstone for ``stale.tombstone_ttl_s`` (``tick`` forgets it).

Gateway loads in beats feed each cluster's ``ClusterLoad``
(``global_registry.core.load``): a beat whose gateways differ only in load
keeps the probes as they are and changes answers only when the overload flag
flips or a served load moves.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from global_registry.config import LoadConfig, StaleConfig
from global_registry.core.cidr_index import CidrIndex
from global_registry.core.load import ClusterLoad
from global_registry.core.probes import GatewayId, GatewayStatus
from global_registry.core.ranking import Candidate, rank
from global_registry.core.reach import NO_RTT, ClusterReach
from global_registry.core.records import (
    Applied,
    ClusterRecord,
    Key,
    Outcome,
    ServiceEntry,
    Tombstone,
    replaced,
)
from syncmesh.epochs import EpochFence, EpochVerdict
from syncmesh.limits import LimitsConfig
from syncmesh.schema import (
    ClusterBeat,
    EpochClaim,
    Gateway,
    Locality,
    ServiceState,
    encode,
)
from syncmesh.validate import Rejected, StreamMessage, parse_cidr
from syncmesh.view_api import (
    IPAddress,
    Resolution,
    ServiceKey,
    Subset,
    SubsetCounts,
    ViewChange,
)

__all__ = ["RegistryView"]

_NO_CHANGE = ViewChange()
_EVERYTHING = ViewChange(everything=True)
# Looked up once: this runs for every message.
_OK = EpochVerdict.OK
_APPLIED, _SAME, _STALE = Outcome.APPLIED, Outcome.SAME, Outcome.STALE_REVISION
_APPLIED_QUIETLY = Applied(_APPLIED)


def _topology(gateways: Iterable[Gateway]) -> list[tuple[str, int, int]]:
    """What of the gateways the probes and SRV targets depend on: all but the load."""
    return [(g.address, g.port, g.weight) for g in gateways]


class RegistryView:
    def __init__(
        self,
        stale: StaleConfig,
        limits: LimitsConfig,
        locality: Locality,
        probes_required: bool = True,
        load: LoadConfig | None = None,
    ) -> None:
        self._stale = stale
        self._limits = limits
        self._locality = locality
        self._clusters: dict[str, ClusterRecord] = {}
        self._fence = EpochFence()
        self._claims = self._fence.claims
        self._by_key: dict[Key, dict[str, ServiceEntry]] = {}
        # Services per namespace, so DNS can tell an empty non-terminal from NXDOMAIN
        # in O(1) even under a flood of random names.
        self._namespace_services: dict[str, int] = {}
        self._cidrs = CidrIndex()
        self._reach = ClusterReach(probes_required, load or LoadConfig())
        # (expires_at, cluster, key) of every tombstone recorded, earliest first. An
        # entry whose tombstone was replaced meanwhile is skipped when it comes up.
        self._tombstone_expiry: list[tuple[float, str, Key]] = []
        self.instance_count = 0
        self._quiet = False
        # Client CIDRs changed while quiet: the index is rebuilt once, when it ends.
        self._cidrs_outdated = False

    @property
    def quiet(self) -> bool:
        """True while a first full read runs: nobody is served yet and its end changes
        everything, so what a message changed is not worked out (nor the CIDR index)."""
        return self._quiet

    @quiet.setter
    def quiet(self, quiet: bool) -> None:
        self._quiet = quiet
        if not quiet and self._cidrs_outdated:
            self._rebuild_cidrs()

    # -- ViewReader ---------------------------------------------------------

    def client_class(self, client: IPAddress | None) -> str | None:
        return None if client is None else self._cidrs.lookup(client)

    def cluster_known(self, cluster: str) -> bool:
        return cluster in self._clusters

    def namespace_known(self, namespace: str) -> bool:
        return namespace in self._namespace_services

    def resolve(
        self,
        key: ServiceKey,
        client_class: str | None,
        pinned: str | None = None,
        subset: Subset | None = None,
    ) -> Resolution:
        entries = self._by_key.get((key.namespace, key.service))
        if not entries:
            return Resolution(key=key, known=False)
        if pinned is not None:
            entry = entries.get(pinned)
            if entry is None:
                return Resolution(key=key, known=False)
            items: Iterable[tuple[str, ServiceEntry]] = ((pinned, entry),)
        else:
            items = entries.items()
        drop_stale = self._stale.policy == "drop"
        reach_up, reach_rtt, reach_load = self._reach.up, self._reach.rtt, self._reach.load
        candidates = []
        for cluster, entry in items:
            healthy = entry.healthy if not subset else entry.healthy_in(subset)
            if healthy == 0:
                continue
            rec = self._clusters[cluster]
            if rec.beat is None or (rec.stale and drop_stale):
                continue
            up = reach_up.get(cluster)
            if not up:
                continue
            bucket, rtt_ms = reach_rtt.get(cluster, NO_RTT)
            load = reach_load.get(cluster)
            candidates.append(
                Candidate(
                    cluster=cluster,
                    locality=rec.beat.locality,
                    gateways=up,
                    healthy_instances=healthy,
                    rtt_bucket=bucket,
                    rtt_ms=rtt_ms,
                    stale=rec.stale,
                    overloaded=load is not None and load.overloaded,
                    load=None if load is None else load.load,
                )
            )
        return Resolution(
            key=key,
            known=True,
            clusters=rank(candidates, client_class, self.reference(client_class)),
        )

    def subset_counts(self, key: ServiceKey, cluster: str) -> SubsetCounts | None:
        entry = self._by_key.get((key.namespace, key.service), {}).get(cluster)
        return None if entry is None else entry.subset_counts()

    def reference(self, client_class: str | None) -> Locality:
        """The locality ranking compares against for clients of ``client_class``."""
        if client_class is not None:
            rec = self._clusters.get(client_class)
            if rec is not None and rec.beat is not None:
                return rec.beat.locality
        return self._locality

    # -- events ---------------------------------------------------------------

    def apply(
        self,
        message: StreamMessage,
        seq: int,
        now: float,
        age_s: float = 0.0,
        raw: bytes | None = None,
    ) -> Applied:
        """One validated stream message, stored at stream sequence ``seq``, ``age_s``
        seconds before ``now``; ``raw``: its bytes as received (kept instead of the
        decoded state). Raises ``Rejected`` for a fenced epoch or a limit."""
        if isinstance(message, ServiceState):
            return self.apply_service(message, seq, now, age_s, raw)
        if isinstance(message, ClusterBeat):
            return self.apply_beat(message, seq, now, age_s)
        return self.apply_claim(message, seq)

    def apply_claim(self, claim: EpochClaim, seq: int) -> Applied:
        """An agent took over ``claim.cluster`` at ``seq``: its epoch. Changes no answer:
        what the deposed agent stored before ``seq`` stays valid."""
        cluster = claim.cluster
        current = self._fence.current(cluster)
        if not current and len(self._fence) >= self._limits.max_clusters:
            raise Rejected("too-many-clusters", cluster, f"already {len(self._fence)} claims")
        if self._fence.claim(cluster, seq):
            return Applied(_APPLIED)
        # Read twice (primed before the full read, then in it) or replayed.
        return Applied(_SAME if seq == current else _STALE)

    def _judge(self, cluster: str, epoch: int, seq: int) -> None:
        verdict = self._fence.judge(cluster, epoch, seq)
        if verdict is not _OK:
            claimed = self._fence.current(cluster)
            raise Rejected(verdict.value, cluster, verdict.detail(epoch, seq, claimed))

    def _record(self, cluster: str) -> ClusterRecord:
        if len(self._clusters) >= self._limits.max_clusters:
            raise Rejected("too-many-clusters", cluster, f"already {len(self._clusters)} clusters")
        rec = ClusterRecord(name=cluster)
        self._clusters[cluster] = rec
        return rec

    def apply_service(
        self,
        state: ServiceState,
        seq: int,
        now: float,
        age_s: float = 0.0,
        raw: bytes | None = None,
    ) -> Applied:
        cluster = state.cluster
        epoch = state.epoch
        # The current agent's message is the common case: the fence's verdict is OK
        # without asking it (see EpochFence.judge).
        if epoch != self._claims.get(cluster) or not 0 < epoch < seq:
            self._judge(cluster, epoch, seq)
        rec = self._clusters.get(cluster)
        base = _NO_CHANGE
        if rec is None:
            rec = self._record(cluster)
            # A new cluster name changes cluster_known(), which the DNS layer caches.
            base = _EVERYTHING
        key = (state.namespace, state.service)
        services = rec.services
        entry = services.get(key)
        tombstone = None
        if entry is not None:
            if (epoch, state.revision) <= (entry.epoch, entry.revision):
                return Applied(_STALE, base)
        else:
            tombstone = rec.tombstones.get(key)
            if tombstone is not None and (epoch, state.revision) <= tombstone[:2]:
                return Applied(_STALE, base)
            if not state.deleted and len(services) >= self._limits.max_services_per_cluster:
                raise Rejected(
                    "too-many-services",
                    cluster,
                    f"cluster already has {len(services)} services",
                )
        rec.set_digest = None  # a newer message for the key: the service set's digest moves
        if state.deleted:
            expires_at = now - max(0.0, age_s) + self._stale.tombstone_ttl_s
            rec.tombstones[key] = Tombstone(epoch, state.revision, expires_at)
            heapq.heappush(self._tombstone_expiry, (expires_at, cluster, key))
            if entry is None:
                return Applied(_SAME, base)
            del services[key]
            self._unindex(cluster, key, entry)
            return Applied(_APPLIED, base, key=key)
        if tombstone is not None:
            del rec.tombstones[key]
        instances = state.instances
        fresh = ServiceEntry(encode(state) if raw is None else raw, state)
        services[key] = fresh
        holders = self._by_key.get(key)
        if holders is None:
            holders = self._by_key[key] = {}
            self._namespace_services[key[0]] = self._namespace_services.get(key[0], 0) + 1
        holders[cluster] = fresh
        if entry is None:
            self.instance_count += fresh.instances
            if self._quiet:
                # Nobody asks what a message of the first full read changed.
                return _APPLIED_QUIETLY
            # Applied(_APPLIED, base, key=key) without the NamedTuple's Python-level
            # __new__.
            return tuple.__new__(Applied, (_APPLIED, base, False, key, False))
        self.instance_count += len(instances) - entry.instances
        if entry.instances == len(instances) and entry.state.instances == instances:
            return Applied(_SAME, base)
        return replaced(entry, fresh, base, key)

    def _unindex(self, cluster: str, key: Key, entry: ServiceEntry) -> None:
        """Take a service entry (already out of its record) out of the lookups."""
        self.instance_count -= entry.instances
        by_cluster = self._by_key[key]
        del by_cluster[cluster]
        if not by_cluster:
            del self._by_key[key]
            left = self._namespace_services[key[0]] - 1
            if left:
                self._namespace_services[key[0]] = left
            else:
                del self._namespace_services[key[0]]

    def apply_beat(self, beat: ClusterBeat, seq: int, now: float, age_s: float = 0.0) -> Applied:
        self._judge(beat.cluster, beat.epoch, seq)
        if beat.retired:
            return self._retire(beat)
        rec = self._clusters.get(beat.cluster)
        old = None
        if rec is None:
            rec = self._record(beat.cluster)
        else:
            old = rec.beat
            if old is not None and (beat.epoch, beat.revision) <= (old.epoch, old.revision):
                return Applied(_STALE)
        was_stale = rec.stale
        rec.beat = beat
        rec.beat_at = now - max(0.0, age_s)
        rec.stale = self._is_stale(rec, now)
        everything = old is None or old.locality != beat.locality
        if old is None or old.client_cidrs != beat.client_cidrs:
            rec.networks = tuple(parse_cidr(c) for c in beat.client_cidrs)
            self._rebuild_cidrs()
            everything = True
        gateways_changed = old is None or _topology(old.gateways) != _topology(beat.gateways)
        served_changed = False
        if gateways_changed:
            wanted = {GatewayId(beat.cluster, g.address, g.port) for g in beat.gateways}
            self._reach.keep_only(beat.cluster, wanted)
            self._reach.refresh(beat.cluster, beat.gateways)
        elif old is not None and old.gateways != beat.gateways:
            # Only loads moved: the probes stay; answers change if what they use did.
            served_changed = self._reach.refresh(beat.cluster, beat.gateways)
        if everything:
            return Applied(_APPLIED, _EVERYTHING, gateways_changed)
        if gateways_changed or served_changed or was_stale != rec.stale:
            return Applied(_APPLIED, self._cluster_change(rec), gateways_changed)
        return Applied(_SAME)

    def _retire(self, beat: ClusterBeat) -> Applied:
        """Forget the cluster and every service of it (its claim stays in the fence)."""
        name = beat.cluster
        rec = self._clusters.get(name)
        if rec is None:
            return Applied(_SAME)
        old = rec.beat
        if old is not None and (beat.epoch, beat.revision) <= (old.epoch, old.revision):
            return Applied(_STALE)
        del self._clusters[name]
        for key, entry in rec.services.items():
            self._unindex(name, key, entry)
        self._reach.forget(name)
        if rec.networks:
            self._rebuild_cidrs()
        # cluster_known() and the CIDR classes change: every cached answer may.
        return Applied(_APPLIED, _EVERYTHING, gateways_changed=True)

    def set_gateway_status(self, gw: GatewayId, status: GatewayStatus) -> ViewChange:
        """Record a probe status; a change only when up-ness or the RTT order moves."""
        rec = self._clusters.get(gw.cluster)
        if rec is None or rec.beat is None:
            return _NO_CHANGE
        if not any(g.address == gw.address and g.port == gw.port for g in rec.beat.gateways):
            return _NO_CHANGE
        reach = self._reach
        bucket_before = reach.bucket(gw.cluster)
        reach.statuses[gw] = status
        served_changed = reach.refresh(gw.cluster, rec.beat.gateways)
        bucket_after = reach.bucket(gw.cluster)
        change = _NO_CHANGE
        if served_changed:
            change = self._cluster_change(rec)
        if bucket_after != bucket_before:
            change = change.merge(self._reorder_change(gw.cluster, bucket_before, bucket_after))
        return change

    def tick(self, now: float) -> ViewChange:
        """Mark agents whose beat is older than their TTL stale; forget expired tombstones."""
        change = _NO_CHANGE
        for rec in self._clusters.values():
            if rec.beat is not None and not rec.stale and self._is_stale(rec, now):
                rec.stale = True
                change = change.merge(self._cluster_change(rec))
        self.expire_tombstones(now)
        return change

    def expire_tombstones(self, now: float) -> int:
        """Forget tombstones recorded ``tombstone_ttl_s`` ago; returns how many.

        Changes no answer: a tombstone only keeps older states of a deleted
        service out, and those have left the stream by now.
        """
        heap = self._tombstone_expiry
        forgotten = 0
        while heap and heap[0][0] <= now:
            _, cluster, key = heapq.heappop(heap)
            rec = self._clusters.get(cluster)
            tombstone = None if rec is None else rec.tombstones.get(key)
            if rec is not None and tombstone is not None and tombstone.expires_at <= now:
                del rec.tombstones[key]
                forgotten += 1
        return forgotten

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work if nothing arrives before: the earliest time a
        fresh agent turns stale or a tombstone expires."""
        deadlines = [
            rec.beat_at + self.ttl(rec.beat)
            for rec in self._clusters.values()
            if rec.beat is not None and not rec.stale
        ]
        if self._tombstone_expiry:
            deadlines.append(self._tombstone_expiry[0][0])
        return min(deadlines) if deadlines else None

    # -- reading ----------------------------------------------------------------

    @property
    def clusters(self) -> Mapping[str, ClusterRecord]:
        return self._clusters

    @property
    def stale_policy(self) -> str:
        return self._stale.policy

    @property
    def cidr_conflicts(self) -> list[tuple[str, str, str]]:
        if self._cidrs_outdated:
            self._rebuild_cidrs(even_if_quiet=True)
        return list(self._cidrs.conflicts)

    def epoch(self, cluster: str) -> int:
        """The epoch of the cluster's current agent: its latest claim (0: none read)."""
        return self._fence.current(cluster)

    def ttl(self, beat: ClusterBeat) -> float:
        return self._stale.after_beats * beat.interval_s

    def gateway_ids(self) -> list[GatewayId]:
        return [
            GatewayId(rec.name, g.address, g.port)
            for rec in self._clusters.values()
            if rec.beat is not None
            for g in rec.beat.gateways
        ]

    def gateway_status(self, gw: GatewayId) -> GatewayStatus | None:
        return self._reach.statuses.get(gw)

    def up_gateways(self, cluster: str) -> tuple[Gateway, ...]:
        """The cluster's gateways that pass their probes, with the loads answers use."""
        return self._reach.up.get(cluster, ())

    def cluster_load(self, cluster: str) -> ClusterLoad | None:
        return self._reach.load.get(cluster)

    def service_count(self) -> int:
        return sum(len(rec.services) for rec in self._clusters.values())

    # -- internals ----------------------------------------------------------------

    def _is_stale(self, rec: ClusterRecord, now: float) -> bool:
        return rec.beat is None or now - rec.beat_at > self.ttl(rec.beat)

    def _rebuild_cidrs(self, even_if_quiet: bool = False) -> None:
        if self._quiet and not even_if_quiet:
            self._cidrs_outdated = True
            return
        self._cidrs_outdated = False
        self._cidrs = CidrIndex(
            (rec.name, net) for rec in self._clusters.values() for net in rec.networks
        )

    def _cluster_change(self, rec: ClusterRecord) -> ViewChange:
        if not rec.services or self._quiet:
            return _NO_CHANGE
        return ViewChange(services=rec.service_keys())

    def _reorder_change(self, cluster: str, before: int | None, after: int | None) -> ViewChange:
        """Services whose answers may differ after ``cluster`` moved RTT buckets.

        ``rank`` is a function of one service's candidates only, so a move can
        change the answer of a service that ``cluster`` offers, and only if
        another cluster offering it sits in a bucket between the old and the new
        one (both included: it can swap places, or start or stop tying). The
        answers of every other service keep their order, however many clusters
        share a bucket. A move from or to "no RTT" changes the reason shown
        even for a service of one cluster, so it names all of them.
        """
        if self._quiet:
            return _NO_CHANGE
        services = self._clusters[cluster].services
        if before is None or after is None:
            keys: Iterable[Key] = services
        else:
            keys = self._reach.shared_between(cluster, services, self._by_key, before, after)
        if not keys:
            return _NO_CHANGE
        return ViewChange(services=frozenset(ServiceKey(ns, svc) for ns, svc in keys))
