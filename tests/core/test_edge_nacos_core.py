"""Nacos pure core: namespace, group and instance mapping; service-list diffs; which
services a listing round reads (FollowPlan)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from edge_sync.core.nacos import (
    FollowPlan,
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


def _keys(n: int, group: str = "DEFAULT_GROUP") -> list[NacosKey]:
    return [NacosKey("public", group, f"s{i:05d}") for i in range(n)]


def test_follow_plan_reads_new_services_at_once_then_a_bounded_slice() -> None:
    known = _keys(2000)
    plan = FollowPlan(reread_interval_s=300.0, now=0.0)
    plan.on_list(known, [])
    first = plan.due(known, now=0.0)
    assert sorted(first) == known  # everything is new: read once
    for key in first:
        plan.followed(key, True)
    assert plan.pending_count == 0
    # Then about 2000 / 300 per second, never all of them: flat idle cost.
    sizes = []
    seen: set[NacosKey] = set()
    for second in range(1, 301):
        due = plan.due(known, now=float(second))
        sizes.append(len(due))
        seen.update(due)
        for key in due:
            plan.followed(key, True)
    assert max(sizes) <= 7 and min(sizes) >= 6
    assert seen == set(known)  # every service re-read within reread_interval_s


def test_follow_plan_new_and_failed_keys_come_first_removed_ones_never() -> None:
    known = _keys(10)
    plan = FollowPlan(reread_interval_s=0.0, now=0.0)  # 0: no safety net, pushes only
    plan.on_list(known, [])
    for key in plan.due(known, now=1.0):
        plan.followed(key, key != known[3])  # one read failed
    assert plan.due(known, now=2.0) == [known[3]]  # tried again next round
    plan.followed(known[3], True)
    assert plan.due(known, now=3.0) == []
    # A new key is read at once; one removed before its read never is.
    late, gone = NacosKey("public", "DEFAULT_GROUP", "late"), NacosKey("dev", "g", "x")
    plan.on_list([late, gone], [])
    plan.on_list([], [gone])
    assert plan.due([*known, late], now=4.0) == [late]
    # A failed key that left the listing is forgotten.
    plan.followed(late, False)
    assert plan.due(known, now=5.0) == [] and plan.pending_count == 0


def test_follow_plan_round_robin_survives_a_changing_catalog_and_long_pauses() -> None:
    known = _keys(100)
    plan = FollowPlan(reread_interval_s=10.0, now=0.0)
    # 1 s rounds: 10 keys each, in order, continuing after the last one read.
    assert plan.due(known, now=1.0) == known[:10]
    shrunk = known[5:]  # keys before the cursor removed: it still continues after s00009
    assert plan.due(shrunk, now=2.0) == known[10:19]  # 95 keys: 9.5 owed, 0.5 carried
    # A long pause (say the loop was busy) owes at most one full pass, not more.
    due = plan.due(known, now=1000.0)
    assert len(due) == len(known) and set(due) == set(known)
    # Rounds faster than the slice size carry the fraction over.
    plan = FollowPlan(reread_interval_s=100.0, now=0.0)
    counts = [len(plan.due(known, now=t / 4)) for t in range(1, 401)]
    assert sum(counts) == 100 and max(counts) == 1
