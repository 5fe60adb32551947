"""``syncmesh audit``, pure part: compare a cluster's source with its global copy, render.

The source side is what the agent would publish: the source's one-shot listing
through the agent's own filters, labels and instance mapping (an ``EdgeCore``).
The global side is the last message per service subject in the stream. Per
service the drift is one of:

- ``missing``: the source has it, the global inventory does not (or holds its tombstone);
- ``extra``: the global inventory has it live, the source does not;
- ``differs``: both have it, with other instances (added, removed, or changed fields:
  address, port, health, weight, zone, meta, version, tags) or another source name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import msgspec
from msgspec import Struct

from syncmesh.schema import Instance, ServiceState
from syncmesh_app.ops.render import table

__all__ = [
    "InstanceChange",
    "ServiceDrift",
    "ClusterAudit",
    "AuditReport",
    "Desired",
    "Global",
    "compare",
    "audit_text",
]

Key = tuple[str, str]
# (source name, instances) as the agent would publish them.
Desired = tuple[str, tuple[Instance, ...]]


class Global(Struct, frozen=True):
    """One service's last message in the stream and its age (server clock; None: unknown)."""

    state: ServiceState
    age_s: float | None = None


class InstanceChange(Struct, kw_only=True, omit_defaults=True):
    id: str
    # field -> [global value, source value]
    fields: dict[str, list[Any]] = {}


class ServiceDrift(Struct, kw_only=True, omit_defaults=True):
    namespace: str
    service: str
    kind: Literal["missing", "extra", "differs"]
    source_name: str = ""
    source_instances: int = 0
    global_instances: int = 0
    # Seconds since the server stored the global copy (missing: None).
    global_age_s: float | None = None
    # Instance ids only the source has (the global copy lacks them), only the global
    # copy has, and ids in both with different fields.
    added: list[str] = []
    removed: list[str] = []
    changed: list[InstanceChange] = []
    # The source name differs: [global, source].
    renamed: list[str] = []


class ClusterAudit(Struct, kw_only=True, omit_defaults=True):
    cluster: str
    # False: no source config for this cluster was given (``--all`` lists it anyway).
    audited: bool = True
    # "consul 127.0.0.1:8500", "nacos ...", "file services.toml".
    source: str = ""
    error: str = ""
    source_services: int = 0
    global_services: int = 0
    # The cluster's agent as its last beat tells (server clock).
    beat_age_s: float | None = None
    agent_stale: bool | None = None
    leader: str = ""
    standbys: int = 0
    # Instances the agent's mapping rejects, label collisions: why a service may be missing.
    notes: list[str] = []
    drift: list[ServiceDrift] = []


class AuditReport(Struct, kw_only=True):
    clusters: list[ClusterAudit] = []
    # Every audited cluster without drift and without error.
    in_sync: bool = True


_FIELDS = tuple(f for f in Instance.__struct_fields__ if f != "id")


def _instance_changes(global_: Sequence[Instance], source: Sequence[Instance]) -> ServiceDrift:
    by_id_g = {i.id: i for i in global_}
    by_id_s = {i.id: i for i in source}
    changed = []
    for iid in sorted(by_id_g.keys() & by_id_s.keys()):
        g, s = by_id_g[iid], by_id_s[iid]
        fields = {
            f: [msgspec.to_builtins(getattr(g, f)), msgspec.to_builtins(getattr(s, f))]
            for f in _FIELDS
            if getattr(g, f) != getattr(s, f)
        }
        if fields:
            changed.append(InstanceChange(id=iid, fields=fields))
    return ServiceDrift(
        namespace="",
        service="",
        kind="differs",
        added=sorted(by_id_s.keys() - by_id_g.keys()),
        removed=sorted(by_id_g.keys() - by_id_s.keys()),
        changed=changed,
    )


def compare(desired: Mapping[Key, Desired], global_: Mapping[Key, Global]) -> list[ServiceDrift]:
    """The drift between what the source says and what the stream holds, sorted by key."""
    out: list[ServiceDrift] = []
    for key in sorted(desired.keys() | global_.keys()):
        want = desired.get(key)
        have = global_.get(key)
        live = have is not None and not have.state.deleted
        ns, svc = key
        age = have.age_s if have is not None else None
        if want is not None and not live:
            out.append(
                ServiceDrift(
                    namespace=ns,
                    service=svc,
                    kind="missing",
                    source_name=want[0],
                    source_instances=len(want[1]),
                    global_age_s=age,
                )
            )
            continue
        if want is None:
            if live:
                assert have is not None
                out.append(
                    ServiceDrift(
                        namespace=ns,
                        service=svc,
                        kind="extra",
                        source_name=have.state.source_name,
                        global_instances=len(have.state.instances),
                        global_age_s=age,
                    )
                )
            continue
        assert have is not None
        drift = _instance_changes(have.state.instances, want[1])
        renamed = [] if have.state.source_name == want[0] else [have.state.source_name, want[0]]
        if drift.added or drift.removed or drift.changed or renamed:
            drift.namespace, drift.service = ns, svc
            drift.source_name = want[0]
            drift.source_instances, drift.global_instances = len(want[1]), len(have.state.instances)
            drift.global_age_s = age
            drift.renamed = renamed
            out.append(drift)
    return out


def _age(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _detail(d: ServiceDrift) -> str:
    if d.kind == "missing":
        return f"not in the global inventory ({d.source_instances} instances in the source)"
    if d.kind == "extra":
        return f"not in the source ({d.global_instances} instances globally)"
    parts = []
    if d.renamed:
        parts.append(f"source name {d.renamed[0]!r} -> {d.renamed[1]!r}")
    parts += [f"+{i}" for i in d.added] + [f"-{i}" for i in d.removed]
    for change in d.changed:
        fields = ", ".join(f"{f} {v[0]!r} -> {v[1]!r}" for f, v in change.fields.items())
        parts.append(f"{change.id}: {fields}")
    return "; ".join(parts)


def _head(c: ClusterAudit) -> str:
    if not c.audited:
        return f"cluster {c.cluster}: not audited (no source config given for it)"
    if c.error:
        return f"cluster {c.cluster}: error: {c.error}"
    agent = "no beat"
    if c.beat_age_s is not None:
        state = "stale" if c.agent_stale else "fresh"
        agent = f"agent {state}, beat {c.beat_age_s:.1f}s ago"
        if c.leader:
            agent += f", leader {c.leader}" + (f" +{c.standbys} standby" if c.standbys else "")
    return (
        f"cluster {c.cluster}: source {c.source}: {c.source_services} services; "
        f"global: {c.global_services} live services; {agent}"
    )


def audit_text(report: AuditReport) -> str:
    blocks = []
    for c in report.clusters:
        lines = [_head(c)]
        lines += [f"  note: {n}" for n in c.notes]
        if c.audited and not c.error:
            if c.drift:
                lines.append(
                    table(
                        ["NAMESPACE", "SERVICE", "DRIFT", "GLOBAL AGE", "DETAIL"],
                        (
                            [d.namespace, d.service, d.kind, _age(d.global_age_s), _detail(d)]
                            for d in c.drift
                        ),
                    )
                )
                lines.append(f"{c.cluster}: drift in {len(c.drift)} services")
            else:
                lines.append(f"{c.cluster}: in sync")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def summarize(clusters: Iterable[ClusterAudit]) -> AuditReport:
    listed = list(clusters)
    in_sync = all(not c.drift and not c.error for c in listed if c.audited)
    return AuditReport(clusters=listed, in_sync=in_sync)
