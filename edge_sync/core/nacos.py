"""Nacos, pure part: namespace, group and instance mapping, service-list diffs, and which
services a listing round reads (``FollowPlan``).

Mapping (documented in docs/edge.md):
- namespace id ``""`` or ``"public"`` -> syncmesh namespace ``default``; any
  other id -> its DNS label (``syncmesh.labels.to_label``);
- a service in ``DEFAULT_GROUP`` keeps its name; a service ``S`` of group
  ``G`` is named ``G--S`` (its DNS label comes from that) and its
  ``source_name`` is Nacos's own ``G@@S``;
- instance id ``<ip>#<port>#<clusterName>``; health ``passing`` when healthy
  and enabled, else ``critical``; weight ``round(weight * 100)`` (Nacos 1.0 =
  syncmesh's default 100), so weight 0 stays 0 (never routed);
- version from metadata ``version``, tags from metadata ``tags``
  (comma-separated: ``"canary, eu"`` is ``canary`` and ``eu``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from edge_sync.core import model
from edge_sync.core.model import DEFAULT_NAMESPACE, InvalidInstance, ServiceRef
from syncmesh.labels import to_label
from syncmesh.schema import Instance

__all__ = [
    "DEFAULT_GROUP",
    "PUBLIC_NAMESPACES",
    "NacosKey",
    "syncmesh_namespace",
    "nacos_namespace_id",
    "service_names",
    "map_instances",
    "NacosCatalog",
    "FollowPlan",
]

DEFAULT_GROUP = "DEFAULT_GROUP"
DEFAULT_CLUSTER = "DEFAULT"
PUBLIC_NAMESPACES = ("", "public")
MAX_WEIGHT = 65535


class NacosKey(NamedTuple):
    """A Nacos service: namespace id, group, service name."""

    namespace_id: str
    group: str
    service: str


def nacos_namespace_id(configured: str) -> str:
    """The id the naming API expects (the public namespace is ``public`` there)."""
    return "public" if configured in PUBLIC_NAMESPACES else configured


def syncmesh_namespace(namespace_id: str) -> str:
    return DEFAULT_NAMESPACE if namespace_id in PUBLIC_NAMESPACES else to_label(namespace_id)


def service_names(group: str, service: str) -> tuple[str, str]:
    """(name the label comes from, source_name)."""
    if group == DEFAULT_GROUP or not group:
        return service, service
    return f"{group}--{service}", f"{group}@@{service}"


def service_ref(key: NacosKey) -> ServiceRef:
    return ServiceRef(
        syncmesh_namespace(key.namespace_id), service_names(key.group, key.service)[0]
    )


def _weight(raw: Any) -> int:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return 100
    if value <= 0:
        return 0
    return max(1, min(MAX_WEIGHT, round(value * 100)))


def map_instances(
    service: str, instances: Iterable[Any]
) -> tuple[tuple[Instance, ...], list[InvalidInstance]]:
    """SDK instances (anything with ip, port, weight, healthy, enabled, clusterName, metadata),
    through the one mapping of ``edge_sync.core.model.map_instances``."""
    return model.map_instances(f"nacos service {service!r}", map(_fields, instances))


def _fields(inst: Any) -> dict[str, Any]:
    ip = str(getattr(inst, "ip", "") or "")
    port = getattr(inst, "port", 0)
    cluster = str(getattr(inst, "clusterName", "") or DEFAULT_CLUSTER)
    healthy = bool(getattr(inst, "healthy", False))
    enabled = bool(getattr(inst, "enabled", False))
    metadata = getattr(inst, "metadata", None) or {}
    meta = {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    fields: dict[str, Any] = {
        "id": f"{ip}#{port}#{cluster}",
        "address": ip,
        "port": port,
        "health": "passing" if healthy and enabled else "critical",
        "weight": _weight(getattr(inst, "weight", 1.0)),
        "meta": meta,
        **model.carried_subset(meta.get("version", ""), meta.get("tags", "").split(",")),
    }
    if meta.get("zone"):
        fields["zone"] = meta["zone"]
    return fields


class NacosCatalog:
    """The services known per (namespace id, group), from complete paged listings."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], set[str]] = {}

    def on_list(
        self, namespace_id: str, group: str, names: Iterable[str]
    ) -> tuple[list[NacosKey], list[NacosKey]]:
        """A complete listing of one (namespace, group); returns (added, removed)."""
        fresh = set(names)
        old = self._known.get((namespace_id, group), set())
        self._known[(namespace_id, group)] = fresh
        added = [NacosKey(namespace_id, group, n) for n in sorted(fresh - old)]
        removed = [NacosKey(namespace_id, group, n) for n in sorted(old - fresh)]
        return added, removed

    def keys(self) -> list[NacosKey]:
        return [NacosKey(ns, g, n) for (ns, g), names in self._known.items() for n in sorted(names)]


class FollowPlan:
    """Which known services a listing round subscribes to and reads from the SDK.

    Pushes carry instance changes, so a round only has to follow what is new (or whose
    last follow failed) plus a bounded safety-net slice: the known services in a
    round-robin, sized so that every one is read again at least once per
    ``reread_interval_s`` (0: never; pushes only). The cost per round is then the
    listing plus about ``services * round / reread_interval_s`` reads, instead of one
    read per known service (docs/benchmarks.md, finding 7). Time comes in as ``now``.
    """

    def __init__(self, reread_interval_s: float, now: float) -> None:
        self.reread_interval_s = reread_interval_s
        self._last = now
        # Fractional reads owed by the safety net (carried between rounds).
        self._credit = 0.0
        # The last key the safety net read: the round-robin resumes after it.
        self._cursor: NacosKey | None = None
        # New keys, and keys whose follow failed: read in the next round, whatever the slice.
        self._pending: set[NacosKey] = set()

    def on_list(self, added: Iterable[NacosKey], removed: Iterable[NacosKey]) -> None:
        self._pending.update(added)
        self._pending.difference_update(removed)

    def due(self, known: Sequence[NacosKey], now: float) -> list[NacosKey]:
        """Keys to follow this round: pending ones, then the safety-net slice of ``known``
        (every key the catalog lists), without repeats."""
        elapsed = max(0.0, now - self._last)
        self._last = now
        known = sorted(known)  # already sorted: linear
        out: list[NacosKey] = []
        if self._pending:
            self._pending.intersection_update(known)  # forget keys that left the listing
            out = sorted(self._pending)
        if not known or self.reread_interval_s <= 0:
            self._credit = 0.0
            return out
        self._credit = min(
            float(len(known)), self._credit + len(known) * elapsed / self.reread_interval_s
        )
        count = math.floor(self._credit)
        if count <= 0:
            return out
        self._credit -= count
        start = 0 if self._cursor is None else bisect.bisect_right(known, self._cursor)
        chosen = set(out)
        for i in range(count):
            key = known[(start + i) % len(known)]
            self._cursor = key
            if key not in chosen:
                chosen.add(key)
                out.append(key)
        return out

    def followed(self, key: NacosKey, ok: bool) -> None:
        """The result of following ``key``: a failure is tried again next round."""
        if ok:
            self._pending.discard(key)
        else:
            self._pending.add(key)

    @property
    def pending_count(self) -> int:
        return len(self._pending)
