"""Nacos pure core: namespace, group and instance mapping; service-list diffs."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from edge_sync.core.nacos import (
    NacosCatalog,
    NacosKey,
    map_instances,
    nacos_namespace_id,
    service_names,
    syncmesh_namespace,
)
from syncmesh.labels import to_label

pytestmark = pytest.mark.core


@dataclass
class SdkInstance:
    ip: str
    port: int
    weight: float = 1.0
    healthy: bool = True
    enabled: bool = True
    clusterName: str = "DEFAULT"
    metadata: dict[str, object] = field(default_factory=dict)


def test_namespaces() -> None:
    assert syncmesh_namespace("public") == "default"
    assert syncmesh_namespace("") == "default"
    assert syncmesh_namespace("dev") == "dev"
    assert syncmesh_namespace("Team_A") == to_label("Team_A")
    assert nacos_namespace_id("") == "public" and nacos_namespace_id("dev") == "dev"


def test_groups() -> None:
    assert service_names("DEFAULT_GROUP", "orders") == ("orders", "orders")
    assert service_names("PAY", "orders") == ("PAY--orders", "PAY@@orders")


def test_instances_health_weight_and_identity() -> None:
    instances, invalid = map_instances(
        "orders",
        [
            SdkInstance("10.0.0.1", 80, metadata={"zone": "z1", "n": 3}),
            SdkInstance("10.0.0.2", 80, weight=0.0),
            SdkInstance("10.0.0.3", 80, enabled=False),
            SdkInstance("10.0.0.4", 80, healthy=False, weight=2.5, clusterName="c2"),
            SdkInstance("10.0.0.5", 80, weight=0.001),
            SdkInstance("", 80),
        ],
    )
    by_ip = {i.address: i for i in instances}
    assert by_ip["10.0.0.1"].id == "10.0.0.1#80#DEFAULT"
    assert (by_ip["10.0.0.1"].health, by_ip["10.0.0.1"].weight, by_ip["10.0.0.1"].zone) == (
        "passing",
        100,
        "z1",
    )
    assert by_ip["10.0.0.1"].meta == {"zone": "z1", "n": "3"}
    assert (by_ip["10.0.0.2"].health, by_ip["10.0.0.2"].weight) == ("passing", 0)  # weight 0 kept
    assert by_ip["10.0.0.3"].health == "critical"  # disabled
    assert (by_ip["10.0.0.4"].health, by_ip["10.0.0.4"].weight, by_ip["10.0.0.4"].id) == (
        "critical",
        250,
        "10.0.0.4#80#c2",
    )
    assert by_ip["10.0.0.5"].weight == 1  # tiny but positive stays routable
    assert [i.reason for i in invalid] == ["invalid_instance"]


def test_catalog_diff_per_namespace_and_group() -> None:
    catalog = NacosCatalog()
    added, removed = catalog.on_list("public", "DEFAULT_GROUP", ["a", "b"])
    assert added == [
        NacosKey("public", "DEFAULT_GROUP", "a"),
        NacosKey("public", "DEFAULT_GROUP", "b"),
    ]
    assert removed == []
    catalog.on_list("dev", "DEFAULT_GROUP", ["a"])
    added, removed = catalog.on_list("public", "DEFAULT_GROUP", ["b", "c"])
    assert added == [NacosKey("public", "DEFAULT_GROUP", "c")]
    assert removed == [NacosKey("public", "DEFAULT_GROUP", "a")]
    assert NacosKey("dev", "DEFAULT_GROUP", "a") in catalog.keys()
