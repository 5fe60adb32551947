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

from global_registry.cidr_index import CidrIndex
from global_registry.config import LimitsConfig, StaleConfig
from global_registry.probes import GatewayId, GatewayStatus
from global_registry.ranking import Candidate, rank
from global_registry.validate import Network, Rejected, StreamMessage, parse_cidr
from syncmesh.schema import ClusterBeat, Gateway, Locality, ServiceState
from syncmesh.view_api import IPAddress, Resolution, ServiceKey, ViewChange

__all__ = ["ServiceEntry", "ClusterRecord", "Applied", "RegistryView"]

_NO_CHANGE = ViewChange()
_EVERYTHING = ViewChange(everything=True)
_INF = float("inf")


@dataclass(slots=True)
class ServiceEntry:
    state: ServiceState
    healthy: int


@dataclass(slots=True)
class ClusterRecord:
    name: str
    max_epoch: int = 0
    beat: ClusterBeat | None = None
    # Local-clock time the last beat was sent (arrival minus its age in the stream).
    beat_at: float = 0.0
    stale: bool = True
    networks: tuple[Network, ...] = ()
    # Last accepted (epoch, revision) per service, tombstones included.
    versions: dict[ServiceKey, tuple[int, int]] = field(default_factory=dict)
    services: dict[ServiceKey, ServiceEntry] = field(default_factory=dict)


class Applied(NamedTuple):
    # "applied": answers may differ; "same": accepted, answers cannot differ;
    # "stale-revision" / "stale-epoch": dropped as older than what the view holds.
    outcome: str
    change: ViewChange = _NO_CHANGE
    gateways_changed: bool = False


def _healthy(state: ServiceState) -> int:
    return sum(1 for i in state.instances if i.health != "critical" and i.weight > 0)


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
        self._by_key: dict[ServiceKey, dict[str, ServiceEntry]] = {}
        self._cidrs = CidrIndex()
        self._gw_status: dict[GatewayId, GatewayStatus] = {}
        self._up: dict[str, tuple[Gateway, ...]] = {}
        self._rtt: dict[str, tuple[int | None, float | None]] = {}
        self.instance_count = 0

    # -- ViewReader ---------------------------------------------------------

    def client_class(self, client: IPAddress | None) -> str | None:
        return None if client is None else self._cidrs.lookup(client)

    def cluster_known(self, cluster: str) -> bool:
        return cluster in self._clusters

    def resolve(
        self, key: ServiceKey, client_class: str | None, pinned: str | None = None
    ) -> Resolution:
        entries = self._by_key.get(key)
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
            key=key, known=True, clusters=rank(candidates, client_class, self.reference(client_class))
        )

    def reference(self, client_class: str | None) -> Locality:
        """The locality ranking compares against for clients of ``client_class``."""
        if client_class is not None:
            rec = self._clusters.get(client_class)
            if rec is not None and rec.beat is not None:
                return rec.beat.locality
        return self._locality

    # -- events ---------------------------------------------------------------

    def apply(self, message: StreamMessage, now: float, age_s: float = 0.0) -> Applied:
        if isinstance(message, ServiceState):
            return self.apply_service(message)
        return self.apply_beat(message, now, age_s)

    def _record(self, cluster: str) -> tuple[ClusterRecord, bool]:
        rec = self._clusters.get(cluster)
        if rec is not None:
            return rec, False
        if len(self._clusters) >= self._limits.max_clusters:
            raise Rejected(
                "too-many-clusters", cluster, f"already {len(self._clusters)} clusters"
            )
        rec = ClusterRecord(name=cluster)
        self._clusters[cluster] = rec
        return rec, True

    def apply_service(self, state: ServiceState) -> Applied:
        rec, created = self._record(state.cluster)
        # A new cluster name changes cluster_known(), which the DNS layer caches.
        base = _EVERYTHING if created else _NO_CHANGE
        if state.epoch < rec.max_epoch:
            return Applied("stale-epoch", base)
        key = ServiceKey(state.namespace, state.service)
        version = (state.epoch, state.revision)
        previous = rec.versions.get(key)
        if previous is not None and version <= previous:
            return Applied("stale-revision", base)
        entry = rec.services.get(key)
        if not state.deleted and entry is None:
            if len(rec.services) >= self._limits.max_services_per_cluster:
                raise Rejected(
                    "too-many-services",
                    state.cluster,
                    f"cluster already has {len(rec.services)} services",
                )
        rec.versions[key] = version
        rec.max_epoch = max(rec.max_epoch, state.epoch)
        if state.deleted:
            if entry is None:
                return Applied("same", base)
            del rec.services[key]
            self.instance_count -= len(entry.state.instances)
            by_cluster = self._by_key[key]
            del by_cluster[state.cluster]
            if not by_cluster:
                del self._by_key[key]
            return Applied("applied", base.merge(ViewChange(services=frozenset((key,)))))
        fresh = ServiceEntry(state, _healthy(state))
        rec.services[key] = fresh
        self._by_key.setdefault(key, {})[state.cluster] = fresh
        if entry is None:
            self.instance_count += len(state.instances)
        else:
            self.instance_count += len(state.instances) - len(entry.state.instances)
            if entry.state.instances == state.instances:
                return Applied("same", base)
        return Applied("applied", base.merge(ViewChange(services=frozenset((key,)))))

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
        return list(self._by_key)

    # -- internals ----------------------------------------------------------------

    def _is_stale(self, rec: ClusterRecord, now: float) -> bool:
        return rec.beat is None or now - rec.beat_at > self.ttl(rec.beat)

    def _rebuild_cidrs(self) -> None:
        self._cidrs = CidrIndex(
            (rec.name, net) for rec in self._clusters.values() for net in rec.networks
        )

    def _cluster_change(self, rec: ClusterRecord) -> ViewChange:
        if not rec.services:
            return _NO_CHANGE
        return ViewChange(services=frozenset(rec.services))

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
                if best[0] is None or (status.rtt_bucket, status.rtt_ms) < (best[0], best[1] or 0.0):
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
        if not moved:
            return _NO_CHANGE
        keys: set[ServiceKey] = set(self._clusters[cluster].services)
        for name in moved:
            keys.update(self._clusters[name].services)
        return ViewChange(services=frozenset(keys)) if keys else _NO_CHANGE
