"""Read-only projections of the view: inventory, operator status, resolve replies (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping

from msgspec import Struct

from global_registry.core.anti_entropy import ClusterSync
from global_registry.core.probes import GatewayId, ProbeDetail
from global_registry.core.view import RegistryView
from syncmesh.labels import is_label, subset_label, to_label
from syncmesh.schema import (
    Inventory,
    InventoryCluster,
    InventoryService,
    ResolveReply,
    ResolveRequest,
)
from syncmesh.view_api import ServiceKey, Subset

__all__ = [
    "GatewayState",
    "ClusterStatus",
    "RegistryStatus",
    "inventory",
    "status",
    "resolve_reply",
    "request_subset",
]


class GatewayState(Struct, kw_only=True, omit_defaults=True):
    """One gateway on the status page: its probe phase (or why there is none) and RTT."""

    address: str
    port: int
    weight: int
    # A ProbePhase; "unprobed" with probes disabled, "unknown" before the first probe.
    state: str
    up: bool
    rtt_ms: float | None = None
    rtt_bucket: int | None = None
    # Load in percent as the agent announced it (None: unknown) and as answers use it.
    load: int | None = None
    served_load: int | None = None
    # Probes run so far, the same outcome in a row, and how the last one ended.
    probes: int = 0
    consecutive: int = 0
    last_result: str = ""
    last_detail: str = ""


class ClusterStatus(Struct, kw_only=True, omit_defaults=True):
    cluster: str
    stale: bool
    # Serving its last known state although stale (stale policy "serve").
    served_stale: bool = False
    beat_age_s: float | None = None
    ttl_s: float | None = None
    region: str = ""
    zone: str = ""
    client_cidrs: list[str] = []
    source_kind: str = ""
    source_health: str = ""
    source_error: str = ""
    agent_version: str = ""
    epoch: int = 0
    services: int = 0
    # The cluster's load as ranking uses it, and whether it is demoted for it.
    load: int | None = None
    overloaded: bool = False
    gateways: list[GatewayState] = []
    # The publishing agent (host:pid) and its standbys, from the beat.
    leader: str = ""
    standbys: int = 0
    # Anti-entropy: the last beat's digest equals this replica's (None: not compared).
    in_sync: bool | None = None
    resync_requests: int = 0


class RegistryStatus(Struct, kw_only=True, omit_defaults=True):
    replica: str
    ready: bool
    stale_policy: str
    clusters: list[ClusterStatus] = []
    cidr_conflicts: list[list[str]] = []


def inventory(
    view: RegistryView, cluster: str | None = None, namespace: str | None = None
) -> Inventory:
    clusters = []
    services = []
    for name in sorted(view.clusters):
        if cluster is not None and name != cluster:
            continue
        rec = view.clusters[name]
        clusters.append(InventoryCluster(cluster=name, stale=rec.stale, beat=rec.beat))
        for key in sorted(rec.services):
            if namespace is not None and key[0] != namespace:
                continue
            state = rec.services[key].state
            services.append(
                InventoryService(
                    cluster=name,
                    namespace=state.namespace,
                    service=state.service,
                    source_name=state.source_name,
                    instances=state.instances,
                    epoch=state.epoch,
                    revision=state.revision,
                )
            )
    return Inventory(clusters=clusters, services=services)


def status(
    view: RegistryView,
    now: float,
    replica: str,
    ready: bool,
    probes: Mapping[GatewayId, ProbeDetail] | None = None,
    sync: Callable[[str], ClusterSync | None] | None = None,
) -> RegistryStatus:
    """The operator's view; ``probes``: this replica's probe details, when it probes;
    ``sync``: the anti-entropy state of a cluster."""
    probes = probes or {}
    clusters = []
    for name in sorted(view.clusters):
        rec = view.clusters[name]
        beat = rec.beat
        up = view.up_gateways(name)
        served = {(g.address, g.port): g.load for g in up}
        load = view.cluster_load(name)
        entry = ClusterStatus(
            cluster=name,
            stale=rec.stale,
            served_stale=rec.stale and view.stale_policy == "serve" and bool(up),
            services=len(rec.services),
            epoch=view.epoch(name),
            load=None if load is None else load.load,
            overloaded=load is not None and load.overloaded,
        )
        cluster_sync = sync(name) if sync is not None else None
        if cluster_sync is not None:
            entry.in_sync = cluster_sync.in_sync
            entry.resync_requests = cluster_sync.requests
        if beat is not None:
            entry.beat_age_s = round(now - rec.beat_at, 3)
            entry.ttl_s = view.ttl(beat)
            entry.region = beat.locality.region
            entry.zone = beat.locality.zone
            entry.client_cidrs = list(beat.client_cidrs)
            entry.source_kind = beat.source_kind
            entry.source_health = beat.source_health
            entry.source_error = beat.source_error
            entry.agent_version = beat.agent_version
            entry.leader = beat.leader
            entry.standbys = beat.standbys
            for g in beat.gateways:
                gw = GatewayId(name, g.address, g.port)
                probe = view.gateway_status(gw)
                is_up = (g.address, g.port) in served
                gateway = GatewayState(
                    address=g.address,
                    port=g.port,
                    weight=g.weight,
                    state=str(probe.phase) if probe else ("unprobed" if is_up else "unknown"),
                    up=is_up,
                    load=g.load,
                    served_load=served.get((g.address, g.port)),
                    rtt_ms=None
                    if probe is None or probe.rtt_ms is None
                    else round(probe.rtt_ms, 3),
                    rtt_bucket=None if probe is None else probe.rtt_bucket,
                )
                detail = probes.get(gw)
                if detail is not None:
                    gateway.probes = detail.probes
                    gateway.consecutive = detail.consecutive
                    gateway.last_result = str(detail.last_result or "")
                    gateway.last_detail = detail.last_detail
                entry.gateways.append(gateway)
        clusters.append(entry)
    return RegistryStatus(
        replica=replica,
        ready=ready,
        stale_policy=view.stale_policy,
        clusters=clusters,
        cidr_conflicts=[list(c) for c in view.cidr_conflicts],
    )


def request_subset(version: str | None, tags: list[str]) -> Subset | str:
    """The subset a request asks for, in label form (as DNS names spell it), or an error.

    ``1.2.3`` asks for the instances DNS calls ``1-2-3``: one matching rule for
    DNS, the API and the CLI (``syncmesh.labels.subset_label``).
    """
    version_label = None
    if version is not None:
        version_label = subset_label(version)
        if version_label is None:
            return f"version {version!r} has no label form (nothing of [a-z0-9], or too long)"
    tag_labels = set()
    for tag in tags:
        label = subset_label(tag)
        if label is None:
            return f"tag {tag!r} has no label form (nothing of [a-z0-9], or too long)"
        tag_labels.add(label)
    return Subset(version=version_label, tags=frozenset(tag_labels))


def resolve_reply(view: RegistryView, request: ResolveRequest) -> ResolveReply:
    """Answer a resolve request; a bad client address is an error in the reply, not an exception."""
    # Callers may name the service as the source spells it; map it like the agents do.
    service = request.service if is_label(request.service) else to_label(request.service)
    namespace = request.namespace if is_label(request.namespace) else to_label(request.namespace)
    client_class = None
    if request.client:
        try:
            address = ipaddress.ip_address(request.client.split("/", 1)[0])
        except ValueError:
            return ResolveReply(
                namespace=namespace,
                service=service,
                known=False,
                error=f"client {request.client!r} is not an IP address",
            )
        client_class = view.client_class(address)
    subset = request_subset(request.version, request.tags)
    if isinstance(subset, str):
        return ResolveReply(namespace=namespace, service=service, known=False, error=subset)
    resolution = view.resolve(
        ServiceKey(namespace, service), client_class, request.cluster, subset or None
    )
    return ResolveReply(
        namespace=namespace,
        service=service,
        known=resolution.known,
        clusters=list(resolution.clusters),
    )
