"""Consul pure core: blocking indexes, health/namespace mapping, change attribution, fetch backlog."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from edge_sync.core.consul import (
    BlockingIndex,
    ConsulTracker,
    FetchBacklog,
    RelistReason,
    RelistSchedule,
    bulk_worthwhile,
)
from edge_sync.core.consul_mapping import (
    ConsulFormatError,
    aggregate_health,
    decode_checks,
    decode_node_services,
    map_health_entries,
    namespace_of,
)
from edge_sync.core.model import ServiceRef
from syncmesh.labels import to_label

pytestmark = pytest.mark.core


def entry(node: str, sid: str, port: int, statuses: list[str], **svc: Any) -> dict[str, Any]:
    return {
        "Node": {"Node": node, "Address": "10.0.0.9", "Meta": svc.pop("node_meta", {})},
        "Service": {
            "ID": sid,
            "Service": "web",
            "Port": port,
            "Address": svc.pop("address", ""),
            **svc,
        },
        "Checks": [{"Status": s, "CheckID": f"c{i}"} for i, s in enumerate(statuses)],
    }


def check(node: str, cid: str, status: str, service: str = "", index: int = 10) -> dict[str, Any]:
    return {
        "Node": node,
        "CheckID": cid,
        "Status": status,
        "ServiceName": service,
        "ServiceID": service,
        "ModifyIndex": index,
        "CreateIndex": 1,
    }


def test_index_resets_when_it_goes_backwards_and_never_blocks_below_one() -> None:
    idx = BlockingIndex()
    assert not idx.observe("100") and idx.value == 100
    assert not idx.observe("100") and idx.value == 100
    assert idx.observe("7") and idx.value == 0  # restarted Consul: non-blocking re-read
    assert not idx.observe("7") and idx.value == 7
    assert idx.observe("0") and idx.value == 0  # 0 after 7 is also "backwards"


def test_index_below_one_becomes_one() -> None:
    idx = BlockingIndex()
    idx.observe("0")
    assert idx.value == 1
    for header in (None, "garbage"):
        other = BlockingIndex()
        other.observe(header)
        assert other.value == 1


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], "passing"),
        (["passing", "passing"], "passing"),
        (["passing", "warning"], "warning"),
        (["warning", "critical", "passing"], "critical"),
        (["maintenance"], "critical"),
        (["passing", "bogus"], "critical"),
    ],
)
def test_aggregate_health(statuses: list[str], expected: str) -> None:
    assert aggregate_health(statuses) == expected


def test_namespace_from_meta_then_tag_else_default() -> None:
    assert namespace_of({"Meta": {"syncmesh-namespace": "payments"}}) == "payments"
    assert namespace_of({"Tags": ["x", "syncmesh-namespace=Prod.EU"]}) == to_label("Prod.EU")
    assert namespace_of({"Meta": {}, "Tags": []}) == "default"


def test_health_entries_map_to_instances_per_namespace() -> None:
    entries = [
        entry("n1", "web-1", 80, ["passing", "passing"], Weights={"Passing": 10, "Warning": 1}),
        entry(
            "n2",
            "web-2",
            81,
            ["passing", "warning"],
            Weights={"Passing": 10, "Warning": 2},
            address="10.1.1.1",
        ),
        # Node-level maintenance shows up as a critical check on the node.
        entry("n3", "web-3", 82, ["critical"], Meta={"syncmesh-namespace": "blue", "zone": "z1"}),
        entry("n4", "web-4", 0, ["passing"]),  # no port: the schema cannot carry it
    ]
    by_ns, nodes, invalid = map_health_entries("web", entries)
    default = {i.id: i for i in by_ns["default"]}
    assert default["n1/web-1"].health == "passing" and default["n1/web-1"].weight == 10
    assert default["n1/web-1"].address == "10.0.0.9"  # falls back to the node address
    assert default["n2/web-2"].health == "warning" and default["n2/web-2"].weight == 2
    assert default["n2/web-2"].address == "10.1.1.1"
    [blue] = by_ns["blue"]
    assert (
        blue.health == "critical"
        and blue.zone == "z1"
        and blue.meta["syncmesh-namespace"] == "blue"
    )
    # Every node with an entry, usable or not: a change of node n4 re-fetches web too.
    assert nodes == {"n1", "n2", "n3", "n4"}
    assert [i.reason for i in invalid] == ["invalid_instance"]


def test_malformed_answers_raise_format_errors() -> None:
    tracker = ConsulTracker([], lambda n: True, 1.0)
    with pytest.raises(ConsulFormatError):
        tracker.on_catalog(["not", "a", "dict"], 1, 0.0)
    with pytest.raises(ConsulFormatError):
        tracker.on_checks({"not": "a list"}, 1, 0.0)
    with pytest.raises(ConsulFormatError):
        map_health_entries("web", [{"Node": None}])


def ready_tracker() -> ConsulTracker:
    tracker = ConsulTracker(["consul"], lambda n: not n.startswith("skip"), grace_s=1.0)
    assert (
        tracker.on_catalog({"web": [], "api": ["v1"], "consul": [], "skip-me": []}, 5, 0.0).fetch
        == set()
    )
    plan = tracker.on_checks(
        [check("n1", "serfHealth", "passing"), check("n1", "c-web", "passing", "web")], 5, 0.0
    )
    # Both snapshots known: fetch everything wanted, once.
    assert plan.fetch == {"web", "api"}
    for name in ("web", "api"):
        tracker.on_service_health(name, [entry("n1", f"{name}-1", 80, ["passing"])])
    return tracker


def test_catalog_diff_fetches_added_and_retagged_and_removes_gone() -> None:
    tracker = ready_tracker()
    plan = tracker.on_catalog({"web": ["new-tag"], "db": []}, 9, 0.0)
    assert plan.fetch == {"web", "db"}
    assert plan.removed == [ServiceRef("default", "api")]
    assert not tracker.relist_due(10.0)  # explained by the diff


def test_check_status_flip_fetches_only_that_service() -> None:
    tracker = ready_tracker()
    plan = tracker.on_checks(
        [check("n1", "serfHealth", "passing"), check("n1", "c-web", "critical", "web", 11)], 11, 0.0
    )
    assert plan.fetch == {"web"}


def test_node_check_change_fetches_every_service_on_that_node() -> None:
    tracker = ready_tracker()
    plan = tracker.on_checks(
        [check("n1", "serfHealth", "critical", index=12), check("n1", "c-web", "passing", "web")],
        12,
        0.0,
    )
    assert plan.fetch == {"web", "api"}


def test_unexplained_catalog_change_relists_after_the_grace_period() -> None:
    tracker = ready_tracker()
    plan = tracker.on_catalog({"web": [], "api": ["v1"]}, 20, now=100.0)  # e.g. a port change
    assert plan.fetch == set() and plan.removed == []
    assert not tracker.relist_due(100.5)
    assert tracker.relist_due(101.0)
    assert not tracker.relist_due(102.0)  # once


def test_catalog_change_explained_by_a_check_index_does_not_relist() -> None:
    tracker = ready_tracker()
    tracker.on_catalog({"web": [], "api": ["v1"]}, 30, now=0.0)
    tracker.on_checks(
        [
            check("n1", "serfHealth", "passing"),
            check("n1", "c-web", "passing", "web"),
            check("n1", "c-web2", "passing", "web", index=30),
        ],
        30,
        0.5,
    )
    assert not tracker.relist_due(5.0)


def test_fetch_result_for_a_service_removed_meanwhile_is_ignored() -> None:
    tracker = ready_tracker()
    tracker.on_catalog({"web": []}, 40, 0.0)
    result = tracker.on_service_health("api", [entry("n1", "api-1", 80, ["passing"])])
    assert result.changed == [] and result.removed == []


def test_namespace_move_removes_the_old_namespace() -> None:
    tracker = ready_tracker()
    result = tracker.on_service_health(
        "web", [entry("n1", "web-1", 80, ["passing"], Meta={"syncmesh-namespace": "blue"})]
    )
    assert [(s.namespace, s.name) for s in result.changed] == [("blue", "web")]
    assert result.removed == [ServiceRef("default", "web")]
    gone = tracker.on_service_health("web", [])
    assert gone.changed == [] and gone.removed == [ServiceRef("blue", "web")]


def test_backlog_requeues_a_service_that_changed_during_its_fetch() -> None:
    backlog = FetchBacklog()
    backlog.add(["a", "b", "a"])
    assert len(backlog) == 2
    assert backlog.next() == "a"
    backlog.add(["a"])  # changed while being fetched
    assert backlog.next() == "b"
    backlog.done("b")
    assert backlog.next() is None
    backlog.done("a")
    assert backlog.next() == "a"  # fetched again: the running fetch may have missed the change
    backlog.done("a")
    assert backlog.idle


def test_relist_schedule_waits_for_the_grace_and_the_minimum_interval() -> None:
    tracker = ready_tracker()
    schedule = RelistSchedule(tracker, full_interval_s=600.0, min_interval_s=30.0, now=0.0)
    assert schedule.next_deadline() == 600.0  # nothing pending: the next anti-entropy pass
    tracker.on_catalog({"web": [], "api": ["v1"]}, 20, now=100.0)  # unexplained
    assert schedule.next_deadline() == 101.0  # the grace runs out
    assert schedule.due(100.5) is None
    assert schedule.due(101.0) is RelistReason.UNEXPLAINED
    assert schedule.due(101.0) is None  # once
    tracker.on_catalog({"web": [], "api": ["v1"]}, 21, now=110.0)
    assert schedule.due(111.0) is None  # wanted, but only 10 s after the last re-list
    assert schedule.next_deadline() == 131.0
    assert schedule.due(130.9) is None
    assert schedule.due(131.0) is RelistReason.UNEXPLAINED  # kept, never dropped
    assert schedule.next_deadline() == 600.0
    assert schedule.due(600.0) is RelistReason.FULL
    assert schedule.next_deadline() == 1200.0


def test_relist_schedule_never_runs_before_the_initial_plan_and_can_be_off() -> None:
    tracker = ConsulTracker(["consul"], lambda name: True, grace_s=1.0)
    schedule = RelistSchedule(tracker, full_interval_s=10.0, min_interval_s=0.0, now=0.0)
    assert schedule.due(10.0) is None  # wanted, but the first fetch of everything is not planned
    assert schedule.next_deadline() is None  # only a watch result can change that
    tracker.on_catalog({"web": []}, 5, now=11.0)
    tracker.on_checks([], 5, now=11.0)
    assert tracker.initial_planned
    assert schedule.due(11.0) is RelistReason.FULL
    off = RelistSchedule(ready_tracker(), full_interval_s=0.0, min_interval_s=30.0, now=0.0)
    assert off.next_deadline() is None and off.due(1e9) is None


def test_a_rebuilt_consul_is_read_again_at_once_and_once_more_after_the_interval() -> None:
    """Found by the nemesis (seed 8): a fetch running across a Consul restart read the
    restarted agent before it re-registered its services (an empty answer: a
    tombstone), and the rebuilt catalog and checks came back exactly as the tracker
    last saw them, so no diff ever fetched that service again."""
    tracker = ready_tracker()
    checks = [check("n1", "serfHealth", "passing"), check("n1", "c-web", "passing", "web")]
    schedule = RelistSchedule(tracker, full_interval_s=600.0, min_interval_s=30.0, now=0.0)
    tracker.on_catalog({"web": [], "api": ["v1"]}, 20, now=100.0)  # unexplained
    assert schedule.due(101.0) is RelistReason.UNEXPLAINED
    # Consul restarts: the fetch of web in flight reads it before it re-registered web.
    assert tracker.on_service_health("web", []).removed == [ServiceRef("default", "web")]
    # The catalog watch sees the index go backwards; names and tags as before.
    tracker.index_reset()
    plan = tracker.on_catalog({"web": [], "api": ["v1"]}, 10, now=102.0)
    assert plan.fetch == set() and plan.removed == []  # the diff sees nothing
    assert not tracker.relist_due(200.0)  # index 10 is a check's: nothing unexplained
    assert schedule.next_deadline() is not None and schedule.next_deadline() <= 102.0
    # At once, although a re-list ran a second ago: web is read again.
    assert schedule.due(102.0) is RelistReason.REBUILT
    # The checks watch sees its own reset a moment later; the checks are as before.
    tracker.index_reset()
    assert tracker.on_checks(checks, 10, now=102.2).fetch == set()
    assert schedule.due(102.2) is None  # the second reset of one restart keeps the interval
    assert schedule.next_deadline() == 132.0
    assert schedule.due(132.0) is RelistReason.REBUILT  # kept: once more, 30 s later
    assert schedule.due(140.0) is None
    assert not tracker.take_rebuilt()


def test_a_rebuild_before_the_initial_plan_waits_for_it() -> None:
    tracker = ConsulTracker(["consul"], lambda name: True, grace_s=1.0)
    schedule = RelistSchedule(tracker, full_interval_s=0.0, min_interval_s=30.0, now=0.0)
    tracker.index_reset()
    assert schedule.due(1.0) is None  # the initial plan fetches everything anyway
    assert schedule.next_deadline() is None
    tracker.on_catalog({"web": []}, 5, now=2.0)
    tracker.on_checks([], 5, now=2.0)
    assert schedule.due(2.0) is RelistReason.REBUILT


def _node(name: str, **meta: str) -> dict[str, Any]:
    return {"Node": name, "Address": f"10.9.0.{len(name)}", "Meta": meta or None}


def _svc(sid: str, name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"ID": sid, "Service": name, "Port": port, "Address": "", "Tags": [], **extra}


def bulk_tracker() -> ConsulTracker:
    tracker = ConsulTracker(["consul"], lambda _name: True, 1.0)
    tracker.on_catalog({"web": [], "api": ["v2"], "db": [], "consul": []}, 5, 0.0)
    plan = tracker.on_checks(
        [
            check("n1", "serfHealth", "passing"),
            check("n2", "serfHealth", "critical"),
            {**check("n1", "c-web-1", "warning", "web"), "ServiceID": "web-1"},
            {**check("n1", "c-web-2", "passing", "web"), "ServiceID": "web-2"},
            {**check("n1", "c-api", "passing", "api"), "ServiceID": "api-1"},
        ],
        5,
        0.0,
    )
    assert plan.initial and plan.fetch == {"web", "api", "db"}
    return tracker


def test_bulk_read_joins_node_services_with_the_checks_snapshot() -> None:
    tracker = bulk_tracker()
    n1 = _node("n1", zone="z1")
    answers = [
        {
            "Node": n1,
            "Services": [
                _svc("web-1", "web", 80, Weights={"Passing": 5, "Warning": 2}),
                _svc("web-2", "web", 81, Meta={"version": "1.2"}),
                _svc("api-1", "api", 90, Tags=["v2"]),
                _svc("unknown-1", "not-in-catalog", 1),
            ],
        },
        {"Node": _node("n2"), "Services": [_svc("web-3", "web", 82)]},
        {"Node": None, "Services": None},  # a node that left meanwhile
    ]
    result = tracker.on_node_services(
        decode_node_services(msgspec.json.encode(answer)) for answer in answers
    )
    assert result.missing == {"db"}  # in the catalog, not seen: fetched by name
    by_name = {s.name: {i.id: i for i in s.instances} for s in result.changed}
    assert set(by_name) == {"web", "api"}
    web = by_name["web"]
    # Service check warning -> warning weight; node check critical applies to every service on n2.
    assert (web["n1/web-1"].health, web["n1/web-1"].weight) == ("warning", 2)
    assert (web["n1/web-2"].health, web["n1/web-2"].version) == ("passing", "1.2")
    assert web["n2/web-3"].health == "critical"
    assert web["n1/web-1"].zone == "z1" and web["n1/web-1"].address == n1["Address"]
    assert by_name["api"]["n1/api-1"].health == "passing"
    # The same mapping as the per-service answer would give.
    expected, _, _ = map_health_entries(
        "web",
        [
            {
                "Node": n1,
                "Service": answers[0]["Services"][0],
                "Checks": [{"Status": "passing"}, {"Status": "warning"}],
            },  # noqa: E501
            {
                "Node": n1,
                "Service": answers[0]["Services"][1],
                "Checks": [{"Status": "passing"}, {"Status": "passing"}],
            },  # noqa: E501
            {
                "Node": answers[1]["Node"],
                "Service": answers[1]["Services"][0],
                "Checks": [{"Status": "critical"}],
            },  # noqa: E501
        ],
    )
    assert expected["default"] == tuple(s for s in result.changed if s.name == "web")[0].instances
    # The nodes are known afterwards: a node check change fetches the services on it.
    plan = tracker.on_checks(
        [
            check("n1", "serfHealth", "passing"),
            check("n2", "serfHealth", "passing", index=20),
            {**check("n1", "c-web-1", "warning", "web"), "ServiceID": "web-1"},
            {**check("n1", "c-web-2", "passing", "web"), "ServiceID": "web-2"},
            {**check("n1", "c-api", "passing", "api"), "ServiceID": "api-1"},
        ],
        20,
        0.0,
    )
    assert plan.fetch == {"web"} and not plan.initial


def test_bulk_read_answer_by_answer_and_in_slices_is_the_whole_read() -> None:
    answers = [
        {"Node": _node("n1"), "Services": [_svc("web-1", "web", 80), _svc("api-1", "api", 90)]},
        {"Node": _node("n2"), "Services": [_svc("web-3", "web", 82), _svc("c", "consul", 8300)]},
    ]
    decoded = [decode_node_services(msgspec.json.encode(answer)) for answer in answers]
    whole = bulk_tracker().on_node_services(decoded)
    tracker = bulk_tracker()
    bulk = tracker.bulk_read()
    for answer in decoded:  # as each arrives
        bulk.add(answer)
    # The catalog loses "api" before the second slice: it is left to the catalog watch.
    first = bulk.finish(["db", "consul"])
    tracker.catalog = {k: v for k, v in (tracker.catalog or {}).items() if k != "api"}
    second = bulk.finish(["api", "web"])
    assert first.changed == [] and first.missing == {"db"}  # "consul" is skipped
    assert second.missing == set()
    assert second.changed == [s for s in whole.changed if s.name == "web"]


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        b'"not an object"',
        b'{"Node": "n1", "Services": []}',
        b'{"Node": {"Node": "n1"}, "Services": {"web": 1}}',
        b'{"Node": {"Node": "n1"}, "Services": ["web"]}',
        b'{"Node": {"Node": "n1"}, "Services": [{"Service": 7}]}',
    ],
)
def test_bulk_read_rejects_malformed_answers(answer: bytes) -> None:
    with pytest.raises(ConsulFormatError):
        decode_node_services(answer)


def test_bulk_read_only_when_it_takes_fewer_requests() -> None:
    assert bulk_worthwhile(100, 5000)
    assert not bulk_worthwhile(5000, 5000)
    assert not bulk_worthwhile(0, 10)  # no node visible (ACLs): per service


def test_checks_decoded_into_structs_plan_like_plain_json() -> None:
    checks = [
        check("n1", "serfHealth", "passing"),
        {**check("n1", "c-web-1", "warning", "web"), "ServiceID": "web-1", "Output": "x" * 50},
    ]
    typed, plain = ready_tracker(), ready_tracker()
    flipped = [{**checks[0], "Status": "critical", "ModifyIndex": 30}, checks[1]]
    body = msgspec.json.encode(flipped)
    assert typed.on_checks(decode_checks(body), 30, 0.0) == plain.on_checks(flipped, 30, 0.0)
    for bad in (b'{"not": "a list"}', b'["not an object"]'):
        with pytest.raises(ConsulFormatError):
            ready_tracker().on_checks(decode_checks(bad), 31, 0.0)
    with pytest.raises(msgspec.DecodeError):  # not JSON: the request is retried
        decode_checks(b"not json")
