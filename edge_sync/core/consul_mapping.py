"""Consul answers to syncmesh instances (pure): health, namespace, version,
weight and zone of one instance, whether it came from ``/v1/health/service/<name>``
or from the bulk read (``/v1/catalog/node-services/<node>`` joined with the checks).

One mapping for both paths, so a service read either way publishes the same
state (tests/peers/test_consul_bulk.py compares them field by field).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec
from msgspec import Struct, field

from edge_sync.core.model import (
    DEFAULT_NAMESPACE,
    InvalidInstance,
    carried_subset,
    map_instances,
)
from syncmesh.labels import to_label
from syncmesh.schema import Health, Instance

__all__ = [
    "NAMESPACE_KEY",
    "VERSION_KEY",
    "ConsulFormatError",
    "aggregate_health",
    "namespace_of",
    "version_of",
    "instance_fields",
    "by_namespace",
    "NodeInfo",
    "NodeService",
    "NodeServices",
    "decode_node_services",
    "Check",
    "decode_checks",
    "map_health_entries",
]

# Service meta key (or tag "syncmesh-namespace=<ns>") that puts an instance in a
# syncmesh namespace; Consul namespaces are an enterprise feature.
NAMESPACE_KEY = "syncmesh-namespace"
# Where an instance's release comes from: service meta ``version``, else a tag
# ``version=<x>``, else the first tag that looks like ``v<semver>`` (``v1``,
# ``v1.2.3``, ``v2.0.0-rc.1``), taken as written.
VERSION_KEY = "version"
_VERSION_TAG = re.compile(r"^v[0-9]+(\.[0-9]+){0,2}([-+][0-9A-Za-z.+-]+)?$")


class ConsulFormatError(ValueError):
    """A Consul answer that does not have the documented shape."""


def aggregate_health(statuses: Iterable[str]) -> Health:
    """Any critical -> critical, else any warning -> warning, else passing.

    Anything that is not passing or warning (maintenance is a critical check,
    unknown states too) counts as critical.
    """
    worst: Health = "passing"
    for status in statuses:
        if status == "passing":
            continue
        if status == "warning":
            worst = "warning"
            continue
        return "critical"
    return worst


def namespace_of(service: dict[str, Any]) -> str:
    return _namespace(service.get("Meta"), service.get("Tags"))


def _namespace(meta: Any, raw_tags: Any) -> str:
    meta = meta or {}
    value = meta.get(NAMESPACE_KEY) if isinstance(meta, dict) else None
    if value is None:
        for tag in raw_tags or ():
            if isinstance(tag, str) and tag.startswith(NAMESPACE_KEY + "="):
                value = tag[len(NAMESPACE_KEY) + 1 :]
                break
    if not value or not isinstance(value, str):
        return DEFAULT_NAMESPACE
    return to_label(value)


def version_of(meta: Any, tags: list[str]) -> str:
    """An instance's version from its service meta and tags (see ``VERSION_KEY``)."""
    value = meta.get(VERSION_KEY) if isinstance(meta, dict) else None
    if value:
        return str(value)
    prefix = VERSION_KEY + "="
    for tag in tags:
        if tag.startswith(prefix) and len(tag) > len(prefix):
            return tag[len(prefix) :]
    for tag in tags:
        if _VERSION_TAG.match(tag):
            return tag
    return ""


def _instance_fields(entry: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(node, syncmesh namespace, Instance fields) of one health entry."""
    node = entry.get("Node")
    svc = entry.get("Service")
    checks = entry.get("Checks") or []
    if not isinstance(node, dict) or not isinstance(svc, dict) or not isinstance(checks, list):
        raise ConsulFormatError("health entry without Node/Service/Checks")
    return instance_fields(
        str(node.get("Node", "")),
        node.get("Address"),
        node.get("Meta"),
        svc.get("ID", ""),
        svc.get("Address"),
        svc.get("Port", 0),
        svc.get("Weights"),
        svc.get("Meta"),
        svc.get("Tags"),
        (str(c.get("Status", "")) for c in checks if isinstance(c, dict)),
    )


def instance_fields(
    node_name: str,
    node_address: Any,
    node_meta: Any,
    service_id: Any,
    service_address: Any,
    port: Any,
    weights: Any,
    meta: Any,
    raw_tags: Any,
    statuses: Iterable[str],
) -> tuple[str, str, dict[str, Any]]:
    """The one mapping of an instance, whether it came per service or in bulk."""
    status = aggregate_health(statuses)
    weights = weights or {}
    weight = weights.get("Warning" if status == "warning" else "Passing", 1)
    namespace = _namespace(meta, raw_tags)
    meta = meta or {}
    node_meta = node_meta or {}
    tags = [t for t in raw_tags if isinstance(t, str)] if isinstance(raw_tags, list) else []
    fields: dict[str, Any] = {
        "id": f"{node_name}/{service_id}",
        "address": str(service_address or node_address or ""),
        "port": port,
        "health": status,
        "weight": max(0, min(65535, int(weight))) if isinstance(weight, int | float) else 1,
        "meta": {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {},
        **carried_subset(version_of(meta, tags), tags),
    }
    zone = (meta.get("zone") if isinstance(meta, dict) else None) or (
        node_meta.get("zone") if isinstance(node_meta, dict) else None
    )
    if zone:
        fields["zone"] = str(zone)
    return node_name, namespace, fields


class NodeInfo(Struct, frozen=True):
    """What the mapping needs of a node in ``/v1/catalog/node-services/<node>``."""

    node: str = field(name="Node", default="")
    address: Any = field(name="Address", default=None)
    meta: Any = field(name="Meta", default=None)


class NodeService(Struct, frozen=True):
    """What the mapping needs of one service instance (the rest is skipped when decoding)."""

    id: Any = field(name="ID", default="")
    service: str = field(name="Service", default="")
    tags: Any = field(name="Tags", default=None)
    address: Any = field(name="Address", default=None)
    meta: Any = field(name="Meta", default=None)
    port: Any = field(name="Port", default=0)
    weights: Any = field(name="Weights", default=None)


class NodeServices(Struct, frozen=True):
    """``/v1/catalog/node-services/<node>``; ``Node`` is null for a node that is gone."""

    node: NodeInfo | None = field(name="Node", default=None)
    services: list[NodeService] | None = field(name="Services", default=None)


_NODE_SERVICES = msgspec.json.Decoder(NodeServices)


def decode_node_services(body: bytes) -> NodeServices:
    """Decode one ``node-services`` answer, only the fields the mapping reads."""
    try:
        return _NODE_SERVICES.decode(body)
    except msgspec.DecodeError as exc:
        raise ConsulFormatError(f"catalog/node-services: {exc}") from None


class Check(Struct, frozen=True):
    """What the tracker reads of one check of ``/v1/health/state/any`` (15,000 checks of a
    5,000-service catalog: decoded into this, not into dicts of all 16 fields)."""

    node: Any = field(name="Node", default="")
    check_id: Any = field(name="CheckID", default="")
    status: Any = field(name="Status", default="")
    service_id: Any = field(name="ServiceID", default="")
    service_name: Any = field(name="ServiceName", default="")
    create_index: Any = field(name="CreateIndex", default=None)
    modify_index: Any = field(name="ModifyIndex", default=None)


_CHECKS = msgspec.json.Decoder(list[Check])


def decode_checks(body: bytes) -> Any:
    """``/v1/health/state/any`` as a list of ``Check``; an answer of another shape is
    returned as plain JSON, for the tracker to reject (``msgspec.DecodeError``: not JSON)."""
    try:
        return _CHECKS.decode(body)
    except msgspec.ValidationError:
        return msgspec.json.decode(body)


def map_health_entries(
    name: str, entries: Any
) -> tuple[dict[str, tuple[Instance, ...]], set[str], list[InvalidInstance]]:
    """``/v1/health/service/<name>`` -> instances per syncmesh namespace, nodes, rejects."""
    if not isinstance(entries, list):
        raise ConsulFormatError(f"health/service/{name}: expected a list")
    mapped: list[tuple[str, str, dict[str, Any]]] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ConsulFormatError(f"health/service/{name}: entry is not an object")
        mapped.append(_instance_fields(entry))
    return by_namespace(name, mapped)


def by_namespace(
    name: str, mapped: Iterable[tuple[str, str, dict[str, Any]]]
) -> tuple[dict[str, tuple[Instance, ...]], set[str], list[InvalidInstance]]:
    fields_by_namespace: dict[str, list[dict[str, Any]]] = {}
    nodes: set[str] = set()
    for node, namespace, fields in mapped:
        nodes.add(node)
        fields_by_namespace.setdefault(namespace, []).append(fields)
    by_namespace: dict[str, tuple[Instance, ...]] = {}
    invalid: list[InvalidInstance] = []
    for namespace, candidates in fields_by_namespace.items():
        instances, rejects = map_instances(f"consul service {name!r}", candidates)
        invalid.extend(rejects)
        if instances:
            by_namespace[namespace] = instances
    return by_namespace, nodes, invalid
