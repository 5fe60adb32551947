"""Text for people and JSON for scripts: pure renderings of inventory, resolve and status.

No IO here: the commands (``syncmesh_app.ops.commands``) fetch, these functions
format, and the core tests check the formatting without NATS.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from syncmesh.schema import (
    Instance,
    Inventory,
    InventoryCluster,
    InventoryService,
    ResolveReply,
    StatusReply,
)

__all__ = [
    "table",
    "healthy_count",
    "inventory_text",
    "service_line",
    "cluster_line",
    "cluster_digest",
    "resolve_text",
    "status_text",
    "stream_clusters_text",
    "to_json",
    "dns_name",
    "parse_name",
]


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart; the last column is not padded."""
    all_rows = [list(header), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(header))]
    lines = []
    for row in all_rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def healthy_count(instances: Sequence[Instance]) -> int:
    # The registry's rule: critical or weight 0 receives no traffic.
    return sum(1 for i in instances if i.health != "critical" and i.weight > 0)


def _instance(i: Instance) -> str:
    mark = "" if i.health == "passing" else f"({i.health})"
    return f"{i.address}:{i.port}{mark}"


def _gateways(cluster: InventoryCluster) -> str:
    beat = cluster.beat
    if beat is None:
        return "-"
    return " ".join(f"{g.address}:{g.port}" for g in beat.gateways) or "-"


def inventory_text(inv: Inventory) -> str:
    listed: dict[str, int] = {}
    for s in inv.services:
        listed[s.cluster] = listed.get(s.cluster, 0) + 1
    clusters = table(
        ["CLUSTER", "AGENT", "SOURCE", "REGION/ZONE", "SERVICES", "GATEWAYS"],
        (_cluster_row(c, listed.get(c.cluster, 0)) for c in inv.clusters),
    )
    services = table(
        ["CLUSTER", "NAMESPACE", "SERVICE", "HEALTHY", "INSTANCES", "SOURCE NAME"],
        (
            [
                s.cluster,
                s.namespace,
                s.service,
                f"{healthy_count(s.instances)}/{len(s.instances)}",
                " ".join(_instance(i) for i in s.instances) or "-",
                s.source_name if s.source_name != s.service else "",
            ]
            for s in inv.services
        ),
    )
    return f"{clusters}\n\n{services}"


def _cluster_row(c: InventoryCluster, services: int | None = None) -> list[str]:
    """``services``: how many are listed; None: what the agent's beat announces."""
    beat = c.beat
    agent = "stale" if c.stale else "fresh"
    if beat is None:
        return [c.cluster, agent + " (no beat)", "-", "-", "-", "-"]
    source = f"{beat.source_kind} {beat.source_health}"
    where = f"{beat.locality.region or '-'}/{beat.locality.zone or '-'}"
    count = beat.services if services is None else services
    return [c.cluster, agent, source, where, str(count), _gateways(c)]


def service_line(s: InventoryService) -> str:
    instances = " ".join(_instance(i) for i in s.instances) or "-"
    healthy = f"{healthy_count(s.instances)}/{len(s.instances)} healthy"
    return f"updated {s.cluster}/{s.namespace}/{s.service}: {healthy}: {instances}"


def cluster_digest(c: InventoryCluster) -> tuple[object, ...]:
    """What an operator watching changes cares about in a beat (not its revision or
    send time, which change every beat)."""
    beat = c.beat
    if beat is None:
        return (c.stale,)
    return (
        c.stale,
        beat.gateways,
        beat.locality,
        tuple(beat.client_cidrs),
        beat.source_kind,
        beat.source_health,
        beat.source_error,
        beat.agent_version,
        beat.retired,
    )


def cluster_line(c: InventoryCluster) -> str:
    row = _cluster_row(c)
    return f"cluster {row[0]}: agent {row[1]}, source {row[2]}, gateways {row[5]}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}ms"


def _load(value: int | None) -> str:
    return "-" if value is None else f"{value}%"


def resolve_text(
    reply: ResolveReply, client: str | None, zone: str = "syncmesh.internal", subset: str = ""
) -> str:
    """``subset``: what the request asked for beyond the service (``version 1.2.3``)."""
    name = dns_name(reply.service, reply.namespace, zone) + (f" ({subset})" if subset else "")
    who = f"client {client}" if client else "a client in no cluster's CIDRs"
    if not reply.known:
        return f"{name}: unknown service (DNS: NXDOMAIN) for {who}"
    if not reply.clusters:
        return (
            f"{name} for {who}: no candidate cluster (DNS: NOERROR, no address): no cluster "
            "has a healthy instance behind a gateway that passes its probe"
        )
    top = reply.clusters[0]
    addresses = " ".join(g.address for g in top.gateways)
    head = f"{name} for {who}\nDNS answers {addresses} (cluster {top.cluster}, {top.reason})"
    rows = table(
        ["RANK", "CLUSTER", "REASON", "GATEWAYS", "HEALTHY", "RTT", "LOAD", "STALE"],
        (
            [
                str(c.rank),
                c.cluster,
                c.reason,
                " ".join(f"{g.address}:{g.port}" for g in c.gateways) or "-",
                str(c.healthy_instances),
                _ms(c.rtt_ms),
                _load(c.load),
                "stale" if c.stale else "",
            ]
            for c in reply.clusters
        ),
    )
    return f"{head}\n\n{rows}"


def _age(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _state(stale: bool, served_stale: bool) -> str:
    if served_stale:
        return "stale (served)"
    return "stale" if stale else "fresh"


def _sync(in_sync: bool | None, requests: int) -> str:
    """Anti-entropy: does the replica hold what the agent's digest says?"""
    text = "-" if in_sync is None else ("yes" if in_sync else "no")
    return f"{text} ({requests} resyncs)" if requests else text


def _leader(leader: str, standbys: int) -> str:
    if not leader:
        return "-"
    return f"{leader} +{standbys} standby" if standbys else leader


def status_text(reply: StatusReply) -> str:
    ready = "ready" if reply.ready else (reply.readiness or "not ready")
    head = f"replica {reply.replica}: {ready}; stale policy {reply.stale_policy or '-'}"
    if reply.error:
        head += f"\nerror: {reply.error}"
    clusters = table(
        [
            "CLUSTER",
            "AGENT",
            "BEAT AGE",
            "TTL",
            "SOURCE",
            "SERVICES",
            "REGION/ZONE",
            "SYNC",
            "LEADER",
        ],
        (
            [
                c.cluster,
                _state(c.stale, c.served_stale),
                _age(c.beat_age_s),
                _age(c.ttl_s),
                (f"{c.source_kind} {c.source_health}".strip() or "-")
                + (f" ({c.source_error})" if c.source_error else ""),
                str(c.services),
                f"{c.region or '-'}/{c.zone or '-'}",
                _sync(c.in_sync, c.resync_requests),
                _leader(c.leader, c.standbys),
            ]
            for c in reply.clusters
        ),
    )
    gateways = table(
        ["CLUSTER", "GATEWAY", "PROBE", "UP", "RTT"],
        (
            [c.cluster, f"{g.address}:{g.port}", g.state, "yes" if g.up else "no", _ms(g.rtt_ms)]
            for c in reply.clusters
            for g in c.gateways
        ),
    )
    parts = [head, clusters, f"gateways as probed from replica {reply.replica}:\n{gateways}"]
    if reply.cidr_conflicts:
        conflicts = "; ".join(" ".join(c) for c in reply.cidr_conflicts)
        parts.append(f"client CIDR conflicts: {conflicts}")
    return "\n\n".join(parts)


def stream_clusters_text(clusters: Sequence[InventoryCluster], now: float) -> str:
    """Clusters as the stream alone shows them (no replica: no probe states)."""

    def age(c: InventoryCluster) -> str:
        if c.beat is None or not c.beat.sent_at:
            return "-"
        # The agent's wall clock: good enough for people, never used for ordering.
        return _age(max(0.0, now - c.beat.sent_at))

    return table(
        ["CLUSTER", "AGENT", "BEAT AGE", "SOURCE", "REGION/ZONE", "SERVICES", "GATEWAYS"],
        ([*_cluster_row(c)[:2], age(c), *_cluster_row(c)[2:]] for c in clusters),
    )


def to_json(value: object) -> str:
    return msgspec.json.encode(value).decode()


def dns_name(service: str, namespace: str, zone: str = "syncmesh.internal") -> str:
    return f"{service}.{namespace}.svc.{zone.rstrip('.')}"


def parse_subset(name: str) -> tuple[str | None, str | None, str]:
    """``(version, tag, rest)`` of a DNS subset name (``1-2-3.version.payments.shop.svc.<zone>``,
    ``canary.tag.payments.shop.svc.<zone>``); ``(None, None, name)`` for any other name."""
    labels = name.rstrip(".").split(".")
    if len(labels) > 3 and labels[1] in ("version", "tag") and "svc" in labels[3:]:
        value, rest = labels[0], ".".join(labels[2:])
        return (value, None, rest) if labels[1] == "version" else (None, value, rest)
    return None, None, name


def parse_name(name: str, namespace: str | None) -> tuple[str, str, str | None]:
    """``(service, namespace, pinned cluster)`` from what an operator types.

    A DNS name (``payments.svc.<zone>``, ``payments.shop.svc.<zone>``,
    ``east.payments.shop.svc.<zone>``) is read as the DNS server reads it; any
    other text is a service name as the source spells it (``com.example.Inventory``).
    """
    labels = name.rstrip(".").split(".")
    if "svc" in labels[1:]:
        before = labels[: labels.index("svc", 1)]
        if len(before) == 1:
            return before[0], namespace or "default", None
        if len(before) == 2:
            return before[0], before[1], None
        if len(before) == 3:
            return before[1], before[2], before[0]
    return name, namespace or "default", None
