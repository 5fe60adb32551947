"""One instance mapping for every source: the same table through Consul, Nacos and the file.

Each source derives instance ids its own way (Consul ``<node>/<service ID>``, Nacos
``<ip>#<port>#<cluster>``, the file's ``id``), but validity and the duplicate-id
rule (first kept, later ones reported) come from ``edge_sync.core.model.map_instances``.
The file's policy on top: any rejected instance refuses the whole file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from edge_sync.core.consul_mapping import map_health_entries
from edge_sync.core.model import map_instances
from edge_sync.core.nacos import map_instances as map_nacos_instances
from edge_sync.core.service_file import ServiceFileError, parse_service_file
from syncmesh.schema import Instance

pytestmark = pytest.mark.core

# (key, address, port, health): the key becomes the id in each source's own id scheme.
Row = tuple[str, str, int, str]

TABLE: list[tuple[str, list[Row], list[tuple[str, str]], list[str]]] = [
    (
        "distinct",
        [("a", "10.0.0.1", 80, "passing"), ("b", "10.0.0.2", 80, "critical")],
        [("a", "passing"), ("b", "critical")],
        [],
    ),
    (
        "duplicate id: the first is kept, the later one reported",
        [("a", "10.0.0.1", 80, "passing"), ("a", "10.0.0.1", 80, "critical")],
        [("a", "passing")],
        ["duplicate_instance"],
    ),
    (
        "port the schema cannot carry",
        [("a", "10.0.0.1", 0, "passing"), ("b", "10.0.0.2", 80, "passing")],
        [("b", "passing")],
        ["invalid_instance"],
    ),
    (
        "address the registry would reject",
        [("a", "not an address!", 80, "passing"), ("b", "10.0.0.2", 80, "passing")],
        [("b", "passing")],
        ["invalid_address"],
    ),
    ("host name", [("a", "db.internal", 80, "passing")], [("a", "passing")], []),
]


def via_model(rows: list[Row]) -> tuple[list[tuple[str, str]], list[str]]:
    fields = [{"id": k, "address": a, "port": p, "health": h} for k, a, p, h in rows]
    instances, rejects = map_instances("test", fields)
    return [(i.id, i.health) for i in instances], [r.reason for r in rejects]


def via_consul(rows: list[Row]) -> tuple[list[tuple[str, str]], list[str]]:
    entries = [
        {
            "Node": {"Node": "n1", "Address": "10.9.9.9"},
            "Service": {"ID": k, "Service": "web", "Port": p, "Address": a},
            "Checks": [{"Status": h, "CheckID": "c"}],
        }
        for k, a, p, h in rows
    ]
    by_namespace, _, rejects = map_health_entries("web", entries)
    instances: tuple[Instance, ...] = by_namespace.get("default", ())
    return [(i.id.split("/", 1)[1], i.health) for i in instances], [r.reason for r in rejects]


@dataclass
class SdkInstance:
    ip: str
    port: int
    clusterName: str
    healthy: bool
    enabled: bool = True
    weight: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)


def via_nacos(rows: list[Row]) -> tuple[list[tuple[str, str]], list[str]]:
    sdk = [SdkInstance(a, p, k, healthy=h == "passing") for k, a, p, h in rows]
    instances, rejects = map_nacos_instances("web", sdk)
    return [(i.id.rsplit("#", 1)[1], i.health) for i in instances], [r.reason for r in rejects]


def via_file(rows: list[Row]) -> tuple[list[tuple[str, str]], list[str]]:
    lines = ['[[services]]\nname = "web"']
    for k, a, p, h in rows:
        lines.append(
            f'[[services.instances]]\nid = "{k}"\naddress = "{a}"\nport = {p}\nhealth = "{h}"'
        )
    try:
        [service] = parse_service_file("\n".join(lines).encode(), "toml")
    except ServiceFileError as exc:
        return [], [exc.reason]
    return [(i.id, i.health) for i in service.instances], []


@pytest.mark.parametrize(("case", "rows", "kept", "rejects"), TABLE, ids=[t[0] for t in TABLE])
@pytest.mark.parametrize("source", [via_model, via_consul, via_nacos], ids=lambda f: f.__name__)
def test_every_source_maps_instances_by_one_rule(
    source: Any, case: str, rows: list[Row], kept: list[tuple[str, str]], rejects: list[str]
) -> None:
    assert source(rows) == (kept, rejects)


@pytest.mark.parametrize(("case", "rows", "kept", "rejects"), TABLE, ids=[t[0] for t in TABLE])
def test_the_file_refuses_what_the_others_report(
    case: str, rows: list[Row], kept: list[tuple[str, str]], rejects: list[str]
) -> None:
    # Same rule; a reject refuses the file ("instance", or "duplicate_instance").
    expected_reasons = [
        "duplicate_instance" if r == "duplicate_instance" else "instance" for r in rejects[:1]
    ]
    assert via_file(rows) == (([] if rejects else kept), expected_reasons)
