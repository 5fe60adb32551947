"""The global view (pure core): every cluster's services, beats and gateway states.

Fed with validated messages, probe statuses and the current time; returns what
each event changed (``ViewChange``) and never reads a clock. Implements
``syncmesh.view_api.ViewReader`` for the DNS server and the resolve API.

Ordering: per (cluster, service) the largest ``(epoch, revision)`` wins,
tombstones included, so replays and duplicates change nothing. Per cluster,
once a message of boot epoch E was accepted, any later message of an older
epoch comes from a superseded agent (a zombie after a restart) and is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from global_registry.config import StaleConfig
from global_registry.core.cidr_index import CidrIndex
from global_registry.core.probes import GatewayId, GatewayStatus
from global_registry.core.ranking import Candidate, rank
from syncmesh.limits import LimitsConfig
from syncmesh.schema import (
    ClusterBeat,
    Gateway,
    Locality,
    ServiceState,
    decode_service_state,
    encode,
)
from syncmesh.validate import Network, Rejected, StreamMessage, parse_cidr
from syncmesh.view_api import IPAddress, Resolution, ServiceKey, ViewChange

__all__ = ["Key", "ServiceEntry", "ClusterRecord", "Applied", "RegistryView"]

_NO_CHANGE = ViewChange()
_EVERYTHING = ViewChange(everything=True)
_INF = float("inf")
# A change touching more clusters than this is reported as "everything".
_MAX_NAMED_CLUSTERS = 8

# (namespace, service): a plain tuple inside the view because it hashes in C;
# ServiceKey (a dataclass) is built only for what leaves the view.
Key = tuple[str, str]


class ServiceEntry:
    """One service's state in one cluster.

    Kept as the validated message bytes as received, plus what ranking needs
    (the healthy count): a decoded state is about five times larger, and
    allocating it for every service made cold starts slower. ``state``
    decodes on demand (inventory, comparisons).
    """

    __slots__ = ("raw", "epoch", "revision", "healthy", "instances")

    def __init__(self, raw: bytes, state: ServiceState) -> None:
        self.raw = raw
        self.epoch = state.epoch
        self.revision = state.revision
        healthy = 0
        for instance in state.instances:
            if instance.health != "critical" and instance.weight > 0:
                healthy += 1
        self.healthy = healthy
        self.instances = len(state.instances)

    @property
    def state(self) -> ServiceState:
        return decode_service_state(self.raw)


@dataclass(slots=True)
class ClusterRecord:
    name: str
    max_epoch: int = 0
    beat: ClusterBeat | None = None
    # Local-clock time the last beat was sent (arrival minus its age in the stream).
    beat_at: float = 0.0
    stale: bool = True
    networks: tuple[Network, ...] = ()
    services: dict[Key, ServiceEntry] = field(default_factory=dict)
    # (epoch, revision) of tombstones, so an older state of a deleted service stays deleted.
    tombstones: dict[Key, tuple[int, int]] = field(default_factory=dict)

    def service_keys(self) -> frozenset[ServiceKey]:
        return frozenset(ServiceKey(ns, svc) for ns, svc in self.services)


class Applied(NamedTuple):
    # "applied": answers may differ; "same": accepted, answers cannot differ;
    # "stale-revision" / "stale-epoch": dropped as older than what the view holds.
    outcome: str
    # What changed beyond ``key`` (a cluster's services, or everything).
    wide: ViewChange = _NO_CHANGE
    gateways_changed: bool = False
    # The one service an applied service message changed; kept as a tuple and
    # turned into a ViewChange only when asked, so catching up builds none.
    key: Key | None = None

    @property
    def change(self) -> ViewChange:
        if self.key is None:
            return self.wide
        return self.wide.merge(ViewChange(services=frozenset((ServiceKey(*self.key),))))


class RegistryView:
    def __init__(
        self,
        stale: StaleConfig,
        limits: LimitsConfig,
        locality: Locality,
        probes_required: bool = True,
    ) -> None:
        self._stale = stale
        self._limits = limits
        self._locality = locality
        # Without probes every announced gateway counts as up.
        self._probes_required = probes_required
        self._clusters: dict[str, ClusterRecord] = {}
        self._by_key: dict[Key, dict[str, ServiceEntry]] = {}
        # Services per namespace, so DNS can tell an empty non-terminal from NXDOMAIN
        # in O(1) even under a flood of random names.
        self._namespace_services: dict[str, int] = {}
        self._cidrs = CidrIndex()
        self._gw_status: dict[GatewayId, GatewayStatus] = {}
        self._up: dict[str, tuple[Gateway, ...]] = {}
        self._rtt: dict[str, tuple[int | None, float | None]] = {}
        self.instance_count = 0
        # True while a first full read runs: nobody is served yet and the end of it
        # invalidates everything, so cluster-wide changes are not worked out.
        self.quiet = False

    # -- ViewReader ---------------------------------------------------------

    def client_class(self, client: IPAddress | None) -> str | None:
        return None if client is None else self._cidrs.lookup(client)

    def cluster_known(self, cluster: str) -> bool:
        return cluster in self._clusters

    def namespace_known(self, namespace: str) -> bool:
        return namespace in self._namespace_services

    def resolve(
        self, key: ServiceKey, client_class: str | None, pinned: str | None = None
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
        candidates = []
        for cluster, entry in items:
            if entry.healthy == 0:
                continue
            rec = self._clusters[cluster]
            if rec.beat is None or (rec.stale and drop_stale):
                continue
            up = self._up.get(cluster)
            if not up:
                continue
            bucket, rtt_ms = self._rtt.get(cluster, (None, None))
            candidates.append(
                Candidate(
                    cluster=cluster,
                    locality=rec.beat.locality,
                    gateways=up,
                    healthy_instances=entry.healthy,
                    rtt_bucket=bucket,
                    rtt_ms=rtt_ms,
                    stale=rec.stale,
                )
            )
        return Resolution(
            key=key,
            known=True,
            clusters=rank(candidates, client_class, self.reference(client_class)),
        )

    def reference(self, client_class: str | None) -> Locality:
        """The locality ranking compares against for clients of ``client_class``."""
        if client_class is not None:
            rec = self._clusters.get(client_class)
            if rec is not None and rec.beat is not None:
                return rec.beat.locality
        return self._locality

    # -- events ---------------------------------------------------------------

    def apply(
        self, message: StreamMessage, now: float, age_s: float = 0.0, raw: bytes | None = None
    ) -> Applied:
        """``raw``: the message's bytes as received (kept instead of the decoded state)."""
        if isinstance(message, ServiceState):
            return self.apply_service(message, raw)
        return self.apply_beat(message, now, age_s)

    def _record(self, cluster: str) -> tuple[ClusterRecord, bool]:
        rec = self._clusters.get(cluster)
        if rec is not None:
            return rec, False
        if len(self._clusters) >= self._limits.max_clusters:
            raise Rejected("too-many-clusters", cluster, f"already {len(self._clusters)} clusters")
        rec = ClusterRecord(name=cluster)
        self._clusters[cluster] = rec
        return rec, True

    def apply_service(self, state: ServiceState, raw: bytes | None = None) -> Applied:
        rec = self._clusters.get(state.cluster)
        base = _NO_CHANGE
        if rec is None:
            rec, _ = self._record(state.cluster)
            # A new cluster name changes cluster_known(), which the DNS layer caches.
            base = _EVERYTHING
        if state.epoch < rec.max_epoch:
            return Applied("stale-epoch", base)
        key = (state.namespace, state.service)
        entry = rec.services.get(key)
        if entry is not None:
            previous: tuple[int, int] | None = (entry.epoch, entry.revision)
        else:
            previous = rec.tombstones.get(key)
        if previous is not None and (state.epoch, state.revision) <= previous:
            return Applied("stale-revision", base)
        if not state.deleted and entry is None:
            if len(rec.services) >= self._limits.max_services_per_cluster:
                raise Rejected(
                    "too-many-services",
                    state.cluster,
                    f"cluster already has {len(rec.services)} services",
                )
        if state.epoch > rec.max_epoch:
            rec.max_epoch = state.epoch
        if state.deleted:
            rec.tombstones[key] = (state.epoch, state.revision)
            if entry is None:
                return Applied("same", base)
            del rec.services[key]
            self.instance_count -= entry.instances
            by_cluster = self._by_key[key]
            del by_cluster[state.cluster]
            if not by_cluster:
                del self._by_key[key]
                left = self._namespace_services[key[0]] - 1
                if left:
                    self._namespace_services[key[0]] = left
                else:
                    del self._namespace_services[key[0]]
            return Applied("applied", base, key=key)
        if previous is not None and entry is None:
            del rec.tombstones[key]
        instances = state.instances
        fresh = ServiceEntry(encode(state) if raw is None else raw, state)
        rec.services[key] = fresh
        holders = self._by_key.get(key)
        if holders is None:
            holders = self._by_key[key] = {}
            self._namespace_services[key[0]] = self._namespace_services.get(key[0], 0) + 1
        holders[state.cluster] = fresh
        if entry is None:
            self.instance_count += len(instances)
            return Applied("applied", base, key=key)
        self.instance_count += len(instances) - entry.instances
        if entry.instances == len(instances) and entry.state.instances == instances:
            return Applied("same", base)
        return Applied("applied", base, key=key)

    def apply_beat(self, beat: ClusterBeat, now: float, age_s: float = 0.0) -> Applied:
        rec, created = self._record(beat.cluster)
        if beat.epoch < rec.max_epoch:
            return Applied("stale-epoch", _EVERYTHING if created else _NO_CHANGE)
        old = rec.beat
        if old is not None and (beat.epoch, beat.revision) <= (old.epoch, old.revision):
            return Applied("stale-revision")
        was_stale = rec.stale
        rec.beat = beat
        rec.max_epoch = max(rec.max_epoch, beat.epoch)
        rec.beat_at = now - max(0.0, age_s)
        rec.stale = self._is_stale(rec, now)
        everything = old is None or old.locality != beat.locality
        if old is None or old.client_cidrs != beat.client_cidrs:
            rec.networks = tuple(parse_cidr(c) for c in beat.client_cidrs)
            self._rebuild_cidrs()
            everything = True
        gateways_changed = old is None or old.gateways != beat.gateways
        if gateways_changed:
            wanted = {GatewayId(beat.cluster, g.address, g.port) for g in beat.gateways}
            for gw in [g for g in self._gw_status if g.cluster == beat.cluster and g not in wanted]:
                del self._gw_status[gw]
            self._refresh_cluster(beat.cluster)
        if everything:
            return Applied("applied", _EVERYTHING, gateways_changed)
        if gateways_changed or was_stale != rec.stale:
            return Applied("applied", self._cluster_change(rec), gateways_changed)
        return Applied("same")

    def set_gateway_status(self, gw: GatewayId, status: GatewayStatus) -> ViewChange:
        """Record a probe status; a change only when up-ness or the RTT order moves."""
        rec = self._clusters.get(gw.cluster)
        if rec is None or rec.beat is None:
            return _NO_CHANGE
        if not any(g.address == gw.address and g.port == gw.port for g in rec.beat.gateways):
            return _NO_CHANGE
        up_before = self._up.get(gw.cluster, ())
        bucket_before = self._rtt.get(gw.cluster, (None, None))[0]
        self._gw_status[gw] = status
        self._refresh_cluster(gw.cluster)
        bucket_after = self._rtt[gw.cluster][0]
        change = _NO_CHANGE
        if self._up[gw.cluster] != up_before:
            change = self._cluster_change(rec)
        if bucket_after != bucket_before:
            change = change.merge(self._reorder_change(gw.cluster, bucket_before, bucket_after))
        return change

    def tick(self, now: float) -> ViewChange:
        """Mark agents whose beat is older than their TTL stale."""
        change = _NO_CHANGE
        for rec in self._clusters.values():
            if rec.beat is not None and not rec.stale and self._is_stale(rec, now):
                rec.stale = True
                change = change.merge(self._cluster_change(rec))
        return change

    def next_deadline(self) -> float | None:
        """The earliest time a fresh agent turns stale, if nothing arrives before."""
        deadlines = [
            rec.beat_at + self.ttl(rec.beat)
            for rec in self._clusters.values()
            if rec.beat is not None and not rec.stale
        ]
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
        return list(self._cidrs.conflicts)

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
        return self._gw_status.get(gw)

    def up_gateways(self, cluster: str) -> tuple[Gateway, ...]:
        return self._up.get(cluster, ())

    def service_count(self) -> int:
        return sum(len(rec.services) for rec in self._clusters.values())

    def service_keys(self) -> list[ServiceKey]:
        return [ServiceKey(ns, svc) for ns, svc in self._by_key]

    # -- internals ----------------------------------------------------------------

    def _is_stale(self, rec: ClusterRecord, now: float) -> bool:
        return rec.beat is None or now - rec.beat_at > self.ttl(rec.beat)

    def _rebuild_cidrs(self) -> None:
        self._cidrs = CidrIndex(
            (rec.name, net) for rec in self._clusters.values() for net in rec.networks
        )

    def _cluster_change(self, rec: ClusterRecord) -> ViewChange:
        if not rec.services or self.quiet:
            return _NO_CHANGE
        return ViewChange(services=rec.service_keys())

    def _refresh_cluster(self, cluster: str) -> None:
        """Recompute the cluster's up gateways and its RTT (best of its up gateways)."""
        rec = self._clusters[cluster]
        up: list[Gateway] = []
        best: tuple[int | None, float | None] = (None, None)
        for g in rec.beat.gateways if rec.beat is not None else ():
            if not self._probes_required:
                up.append(g)
                continue
            status = self._gw_status.get(GatewayId(cluster, g.address, g.port))
            if status is None or not status.up:
                continue
            up.append(g)
            if status.rtt_bucket is not None and status.rtt_ms is not None:
                if best[0] is None or (status.rtt_bucket, status.rtt_ms) < (
                    best[0],
                    best[1] or 0.0,
                ):
                    best = (status.rtt_bucket, status.rtt_ms)
        self._up[cluster] = tuple(up)
        self._rtt[cluster] = best

    def _reorder_change(self, cluster: str, before: int | None, after: int | None) -> ViewChange:
        """Services whose RTT order or RTT ties may differ after ``cluster`` moved buckets.

        Only clusters whose bucket lies between the old and the new one (both
        included) can swap places or stop/start tying with it.
        """
        low = min(_INF if before is None else before, _INF if after is None else after)
        high = max(_INF if before is None else before, _INF if after is None else after)
        moved = [
            name
            for name, (bucket, _) in self._rtt.items()
            if name != cluster and low <= (_INF if bucket is None else bucket) <= high
        ]
        if not moved or self.quiet:
            return _NO_CHANGE
        if len(moved) > _MAX_NAMED_CLUSTERS:
            # Naming every service of many clusters costs more than rebuilding the cache.
            return _EVERYTHING
        keys: set[Key] = set(self._clusters[cluster].services)
        for name in moved:
            keys.update(self._clusters[name].services)
        if not keys:
            return _NO_CHANGE
        return ViewChange(services=frozenset(ServiceKey(ns, svc) for ns, svc in keys))
