"""Consul, pure part: blocking-query indexes, change attribution, what to fetch.

The mapping of Consul answers to instances is ``edge_sync.core.consul_mapping``.
The adapter runs two blocking queries (``/v1/catalog/services`` and
``/v1/health/state/any``) and feeds their results here; the tracker answers
which services to fetch with ``/v1/health/service/<name>``, so the number of
connections does not grow with the catalog (no long poll per service).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import msgspec

from edge_sync.core.consul_mapping import (
    Check,
    ConsulFormatError,
    NodeServices,
    by_namespace,
    instance_fields,
    map_health_entries,
)
from edge_sync.core.model import InvalidInstance, ServiceRef, SourceService
from syncmesh.schema import Instance

__all__ = [
    "BlockingIndex",
    "Plan",
    "HealthResult",
    "BulkResult",
    "BulkRead",
    "bulk_worthwhile",
    "ConsulTracker",
    "RelistReason",
    "RelistSchedule",
    "FetchBacklog",
]


class BlockingIndex:
    """The ``index`` of one blocking-query loop, with Consul's documented safety rules."""

    def __init__(self) -> None:
        self.value = 0

    def observe(self, header: str | None) -> bool:
        """Record ``X-Consul-Index``; True when it went backwards and was reset to 0."""
        try:
            new = int(header) if header is not None else 0
        except ValueError:
            new = 0
        if new < self.value:
            # The server's state was rebuilt (restart, snapshot restore): start over
            # with a non-blocking read.
            self.value = 0
            return True
        # Blocking on an index below 1 returns at once: a busy loop.
        self.value = max(new, 1)
        return False


class HealthResult(NamedTuple):
    changed: list[SourceService]
    removed: list[ServiceRef]
    invalid: list[InvalidInstance]


class BulkResult(NamedTuple):
    """The services a bulk read rebuilt, and those it did not see (fetch them one by one)."""

    changed: list[SourceService]
    removed: list[ServiceRef]
    invalid: list[InvalidInstance]
    missing: set[str]


def bulk_worthwhile(nodes: int, services: int) -> bool:
    """Read node by node (``nodes`` requests) rather than service by service?

    Only when that is fewer requests: a catalog with more nodes than services
    (one service per node, say) is read per service as before.
    """
    return 0 < nodes < services


class Plan(NamedTuple):
    fetch: set[str]
    removed: list[ServiceRef]
    # The initial plan (every service): the adapter may read it in bulk instead.
    initial: bool = False


_EMPTY = Plan(set(), [])


class ConsulTracker:
    """What is known of the catalog and its checks, and what must be fetched because of a change."""

    def __init__(
        self, skip: Iterable[str], may_accept: Callable[[str], bool], grace_s: float
    ) -> None:
        self._skip = set(skip)
        self._may_accept = may_accept
        self.grace_s = grace_s
        self.catalog: dict[str, tuple[str, ...]] | None = None
        self.catalog_index = 0
        self._service_checks: dict[str, frozenset[tuple[str, str, str, str]]] = {}
        self._node_checks: dict[str, frozenset[tuple[str, str]]] = {}
        self._check_indexes: set[int] = set()
        self.checks_known = False
        self.initial_planned = False
        self._service_nodes: dict[str, frozenset[str]] = {}
        self._node_services: dict[str, set[str]] = {}
        self._emitted: dict[str, frozenset[str]] = {}
        # Catalog indexes no check change explained yet -> when to give up and re-list.
        self._unexplained: dict[int, float] = {}
        # A watch saw Consul's index go backwards since the last ``take_rebuilt``.
        self._rebuilt = False

    def wanted(self, name: str) -> bool:
        return name not in self._skip and self._may_accept(name)

    def names(self) -> list[str]:
        return sorted(self.catalog or ())

    # -- watch results ---------------------------------------------------
    def on_catalog(self, services: Any, index: int, now: float) -> Plan:
        if not isinstance(services, dict):
            raise ConsulFormatError("catalog/services: expected an object")
        fresh = {
            str(n): tuple(sorted(str(t) for t in (tags or ())))
            for n, tags in services.items()
            if self.wanted(str(n))
        }
        old, self.catalog = self.catalog, fresh
        previous_index, self.catalog_index = self.catalog_index, index
        if old is None or not self.initial_planned:
            return self._initial_plan()
        added = fresh.keys() - old.keys()
        gone = old.keys() - fresh.keys()
        retagged = {n for n in fresh.keys() & old.keys() if fresh[n] != old[n]}
        explained = bool(added or gone or retagged) or index in self._check_indexes
        if not explained and index != previous_index:
            self._unexplained[index] = now + self.grace_s
        removed: list[ServiceRef] = []
        for name in sorted(gone):
            removed.extend(self.forget(name))
        return Plan(added | retagged, removed)

    def on_checks(self, checks: Any, index: int, now: float) -> Plan:
        if not isinstance(checks, list):
            raise ConsulFormatError("health/state/any: expected a list")
        by_service: dict[str, set[tuple[str, str, str, str]]] = {}
        by_node: dict[str, set[tuple[str, str]]] = {}
        indexes: set[int] = set()
        for item in checks:
            if isinstance(item, Check):
                check = item
            elif isinstance(item, dict):
                try:
                    check = msgspec.convert(item, Check)
                except msgspec.ValidationError as exc:
                    raise ConsulFormatError(f"health/state/any: {exc}") from None
            else:
                raise ConsulFormatError("health/state/any: check is not an object")
            node = str(check.node)
            check_id = str(check.check_id)
            status = str(check.status)
            service = str(check.service_name or "")
            for value in (check.modify_index, check.create_index):
                if isinstance(value, int):
                    indexes.add(value)
            if service:
                by_service.setdefault(service, set()).add(
                    (node, check_id, str(check.service_id), status)
                )
            else:
                by_node.setdefault(node, set()).add((check_id, status))
        services = {k: frozenset(v) for k, v in by_service.items()}
        nodes = {k: frozenset(v) for k, v in by_node.items()}
        old_services, old_nodes = self._service_checks, self._node_checks
        self._service_checks, self._node_checks = services, nodes
        self._check_indexes = indexes
        for pending in [i for i in self._unexplained if i in indexes]:
            del self._unexplained[pending]
        first = not self.checks_known
        self.checks_known = True
        if first or not self.initial_planned:
            return self._initial_plan()
        changed = {
            n
            for n in services.keys() | old_services.keys()
            if services.get(n) != old_services.get(n)
        }
        for node in nodes.keys() | old_nodes.keys():
            if nodes.get(node) != old_nodes.get(node):
                changed |= self._node_services.get(node, set())
        catalog = self.catalog or {}
        return Plan({n for n in changed if n in catalog}, [])

    def _initial_plan(self) -> Plan:
        # Both snapshots first, then every fetch: a fetched state is then never
        # older than the snapshots that later changes are compared against.
        if self.initial_planned or self.catalog is None or not self.checks_known:
            return _EMPTY
        self.initial_planned = True
        return Plan(set(self.catalog), [], True)

    def relist_due(self, now: float) -> bool:
        """True once a catalog change stayed unexplained for ``grace_s``: re-fetch everything."""
        if not self._unexplained or min(self._unexplained.values()) > now:
            return False
        self._unexplained.clear()
        return True

    def index_reset(self) -> None:
        """A watch saw Consul's index go backwards: its state was rebuilt (a restart,
        a snapshot restore). Every service is fetched again (``take_rebuilt``).

        Why not trust the diff: the rebuilt catalog's names and checks can come back
        exactly as last seen while a service's instances did not (a snapshot from
        before an address change), and a fetch that was running across a restart
        may have read a Consul still re-registering its services (an empty answer:
        a tombstone). Neither moves a name or a check afterwards, so no diff would
        ever fetch that service again.
        """
        self._rebuilt = True

    @property
    def rebuilt_pending(self) -> bool:
        return self._rebuilt

    def take_rebuilt(self) -> bool:
        """True once after ``index_reset``: a re-list is wanted."""
        rebuilt, self._rebuilt = self._rebuilt, False
        return rebuilt

    def next_deadline(self) -> float | None:
        """When the oldest unexplained catalog change runs out of grace (None: there is none)."""
        return min(self._unexplained.values()) if self._unexplained else None

    # -- fetch results ---------------------------------------------------
    def on_service_health(self, name: str, entries: Any) -> HealthResult:
        if self.catalog is None or name not in self.catalog:
            # Removed from the catalog while the fetch was running: the catalog wins.
            return HealthResult([], [], [])
        return self._record(name, *map_health_entries(name, entries))

    def _record(
        self,
        name: str,
        by_namespace: dict[str, tuple[Instance, ...]],
        nodes: set[str],
        invalid: list[InvalidInstance],
    ) -> HealthResult:
        self._set_nodes(name, frozenset(nodes))
        before = self._emitted.get(name, frozenset())
        after = frozenset(by_namespace)
        if after:
            self._emitted[name] = after
        else:
            self._emitted.pop(name, None)
        changed = [
            SourceService(namespace=ns, name=name, source_name=name, instances=insts)
            for ns, insts in sorted(by_namespace.items())
        ]
        removed = [ServiceRef(ns, name) for ns in sorted(before - after)]
        return HealthResult(changed, removed, invalid)

    def on_node_services(self, node_services: Iterable[NodeServices]) -> BulkResult:
        """Every service from ``/v1/catalog/node-services/<node>`` of every node, joined with
        the checks snapshot: what ``/v1/health/service/<name>`` would have answered.

        The same as ``bulk_read()``, ``add`` of every answer and ``finish`` of the whole
        catalog; the adapter maps each answer as it arrives and finishes in slices.
        """
        bulk = self.bulk_read()
        for item in node_services:
            bulk.add(item)
        return bulk.finish(self.names())

    def bulk_read(self) -> BulkRead:
        """A bulk read against the checks snapshot of now (a check that changes meanwhile
        makes the checks watch fetch its service again, after the bulk read)."""
        return BulkRead(self)

    def forget(self, name: str) -> list[ServiceRef]:
        self._set_nodes(name, frozenset())
        return [ServiceRef(ns, name) for ns in sorted(self._emitted.pop(name, frozenset()))]

    def _set_nodes(self, name: str, nodes: frozenset[str]) -> None:
        old = self._service_nodes.get(name, frozenset())
        for node in old - nodes:
            members = self._node_services.get(node)
            if members is not None:
                members.discard(name)
                if not members:
                    del self._node_services[node]
        for node in nodes - old:
            self._node_services.setdefault(node, set()).add(name)
        if nodes:
            self._service_nodes[name] = nodes
        else:
            self._service_nodes.pop(name, None)


class BulkRead:
    """One initial read in bulk: ``add`` maps a node's answer as it arrives, ``finish``
    turns a slice of the catalog's names into results (so publishing starts before
    the last slice is done).

    Per instance, the checks of ``/v1/health/service/<name>`` are the node's own checks
    (no service) and the checks of that service ID on that node; both are in the
    checks snapshot (``on_checks``), so only the statuses are needed. A catalog
    service the bulk read did not see (registered after the node list was read, or
    on a node the token may not read) is ``missing``: the adapter fetches it by name.
    Services not in the catalog when ``finish`` runs are left to the catalog watch.
    """

    def __init__(self, tracker: ConsulTracker) -> None:
        self.tracker = tracker
        self._by_instance: dict[tuple[str, str], list[str]] = {}
        for checks in tracker._service_checks.values():
            for node_name, _check_id, service_id, status in checks:
                self._by_instance.setdefault((node_name, service_id), []).append(status)
        self._mapped: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}

    def add(self, item: NodeServices) -> None:
        """One ``/v1/catalog/node-services/<node>`` answer."""
        node = item.node
        if node is None:
            # The node left between the node list and this read.
            return
        tracker, by_instance, mapped = self.tracker, self._by_instance, self._mapped
        node_statuses = [status for _check_id, status in tracker._node_checks.get(node.node, ())]
        for svc in item.services or ():
            if not tracker.wanted(svc.service):
                continue
            statuses = node_statuses + by_instance.get((node.node, str(svc.id)), [])
            mapped.setdefault(svc.service, []).append(
                instance_fields(
                    node.node,
                    node.address,
                    node.meta,
                    svc.id,
                    svc.address,
                    svc.port,
                    svc.weights,
                    svc.meta,
                    svc.tags,
                    statuses,
                )
            )

    def finish(self, names: Iterable[str]) -> BulkResult:
        """The results for ``names`` (each once, after every ``add``)."""
        tracker = self.tracker
        catalog = tracker.catalog or {}
        changed: list[SourceService] = []
        removed: list[ServiceRef] = []
        invalid: list[InvalidInstance] = []
        missing: set[str] = set()
        for name in names:
            if name not in catalog:
                continue
            found = self._mapped.pop(name, None)
            if found is None:
                missing.add(name)
                continue
            result = tracker._record(name, *by_namespace(name, found))
            changed.extend(result.changed)
            removed.extend(result.removed)
            invalid.extend(result.invalid)
        return BulkResult(changed, removed, invalid, missing)


class RelistReason(enum.StrEnum):
    """Why every service is fetched again."""

    UNEXPLAINED = "unexplained"  # a catalog change no check change explained within the grace
    FULL = "full"  # anti-entropy, every full_relist_interval_s
    REBUILT = "rebuilt"  # an index went backwards: Consul restarted or restored a snapshot


class RelistSchedule:
    """When to re-fetch every service.

    A re-list is wanted when a catalog change stays unexplained for the tracker's
    grace, when a watch saw Consul's index go backwards (``index_reset``), and
    every ``full_interval_s`` (0: never); it happens at most once per
    ``min_interval_s`` (a churning catalog must not turn into back-to-back full
    re-lists) and never before the tracker's initial plan (that fetches everything
    anyway). A wanted re-list is kept, never dropped. The adapter sleeps until
    ``next_deadline()`` or until a watch result arrives, then asks ``due(now)``.

    One exception to the interval: the first re-list for a rebuilt Consul runs at
    once, whatever ran before it (a rebuild is rare, and until then the agent may
    publish what Consul no longer holds). Both watches see a restart, one after
    the other: the second reset's re-list keeps the interval, so a restart costs
    one immediate re-list and one more ``min_interval_s`` later (by then every
    service Consul re-registers after its restart is back).
    """

    def __init__(
        self, tracker: ConsulTracker, full_interval_s: float, min_interval_s: float, now: float
    ) -> None:
        self.tracker = tracker
        self.full_interval_s = full_interval_s
        self.min_interval_s = min_interval_s
        self._next_full = now + full_interval_s if full_interval_s > 0 else math.inf
        self._last = -math.inf
        self._last_reason: RelistReason | None = None
        self._wanted: RelistReason | None = None

    def _earliest(self, wanted: RelistReason) -> float:
        """When a re-list wanted for ``wanted`` may run."""
        if wanted is RelistReason.REBUILT and self._last_reason is not RelistReason.REBUILT:
            return -math.inf
        return self._last + self.min_interval_s

    def due(self, now: float) -> RelistReason | None:
        """The reason to re-list now, or None; a re-list it returns counts as started."""
        if now >= self._next_full:
            self._next_full = now + self.full_interval_s
            self._wanted = self._wanted or RelistReason.FULL
        if self.tracker.relist_due(now):
            self._wanted = RelistReason.UNEXPLAINED
        if self.tracker.take_rebuilt():
            self._wanted = RelistReason.REBUILT
        wanted = self._wanted
        if wanted is None or not self.tracker.initial_planned or now < self._earliest(wanted):
            return None
        self._wanted, self._last, self._last_reason = None, now, wanted
        return wanted

    def next_deadline(self) -> float | None:
        """The earliest time ``due`` may answer differently (None: only a watch result can)."""
        wanted = RelistReason.REBUILT if self.tracker.rebuilt_pending else self._wanted
        if wanted is not None:
            # Waiting for the minimum interval (none for a rebuild's first re-list); before
            # the initial plan, for the plan itself.
            return self._earliest(wanted) if self.tracker.initial_planned else None
        candidates = [self._next_full]
        unexplained = self.tracker.next_deadline()
        if unexplained is not None:
            candidates.append(unexplained)
        earliest = min(candidates)
        return None if math.isinf(earliest) else earliest


class FetchBacklog:
    """Services waiting for a fetch; a change during a running fetch re-queues it afterwards."""

    def __init__(self) -> None:
        self._pending: dict[str, None] = {}
        self._running: set[str] = set()
        self._again: set[str] = set()

    def add(self, names: Iterable[str]) -> None:
        for name in names:
            if name in self._running:
                self._again.add(name)
            else:
                self._pending[name] = None

    def discard(self, name: str) -> None:
        self._pending.pop(name, None)
        self._again.discard(name)

    def next(self) -> str | None:
        if not self._pending:
            return None
        name = next(iter(self._pending))
        del self._pending[name]
        self._running.add(name)
        return name

    def done(self, name: str) -> None:
        self._running.discard(name)
        if name in self._again:
            self._again.discard(name)
            self._pending[name] = None

    @property
    def idle(self) -> bool:
        return not self._pending and not self._running

    def __len__(self) -> int:
        return len(self._pending) + len(self._running)
