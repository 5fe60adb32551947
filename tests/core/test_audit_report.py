"""``syncmesh audit``'s comparison and rendering (pure)."""

from __future__ import annotations

import json

import pytest

from harness.samples import instance, service_state
from syncmesh_app.ops.audit_report import ClusterAudit, Global, audit_text, compare, summarize
from syncmesh_app.ops.render import to_json

pytestmark = pytest.mark.core


def test_each_kind_of_drift_and_what_is_equal() -> None:
    web = instance("w1", "10.0.0.1", 80)
    desired = {
        ("default", "same"): ("same", (web,)),
        ("default", "new"): ("new", (web,)),
        ("default", "back"): ("back", (web,)),  # the stream holds its tombstone
        ("default", "web"): (
            "web",
            (instance("w1", "10.0.0.1", 81, health="critical"), instance("w3", "10.0.0.3", 80)),
        ),
        ("default", "renamed"): ("New.Name", (web,)),
    }
    global_ = {
        ("default", "same"): Global(service_state("east", "same", instances=[web]), 3.0),
        ("default", "back"): Global(service_state("east", "back", instances=[], deleted=True), 9.0),
        ("default", "web"): Global(
            service_state("east", "web", instances=[web, instance("w2", "10.0.0.2", 80)]), 4.0
        ),
        ("default", "gone"): Global(service_state("east", "gone", instances=[web]), 5.0),
        ("default", "dead"): Global(service_state("east", "dead", instances=[], deleted=True)),
        ("default", "renamed"): Global(
            service_state("east", "renamed", source_name="Old.Name", instances=[web])
        ),
    }
    drift = {d.service: d for d in compare(desired, global_)}
    assert {s: d.kind for s, d in drift.items()} == {
        "new": "missing",
        "back": "missing",
        "web": "differs",
        "gone": "extra",
        "renamed": "differs",
    }
    assert drift["back"].global_age_s == 9.0 and drift["new"].global_age_s is None
    web_drift = drift["web"]
    assert (web_drift.added, web_drift.removed) == (["w3"], ["w2"])
    [change] = web_drift.changed
    assert (change.id, change.fields) == (
        "w1",
        {"port": [80, 81], "health": ["passing", "critical"]},
    )
    assert drift["renamed"].renamed == ["Old.Name", "New.Name"]

    report = summarize(
        [ClusterAudit(cluster="east", source="file s.toml", drift=list(drift.values()))]
    )
    assert not report.in_sync
    text = audit_text(report)
    assert "w1: port 80 -> 81, health 'passing' -> 'critical'" in text
    assert "+w3; -w2" in text and "east: drift in 5 services" in text
    data = json.loads(to_json(report))
    assert data["clusters"][0]["drift"][0]["kind"] in ("missing", "differs", "extra")


def test_unaudited_clusters_and_errors() -> None:
    report = summarize(
        [
            ClusterAudit(cluster="east", source="file s.toml"),
            ClusterAudit(cluster="west", audited=False),
        ]
    )
    assert report.in_sync  # unaudited clusters are listed, not judged
    text = audit_text(report)
    assert "east: in sync" in text and "cluster west: not audited" in text
    failed = summarize([ClusterAudit(cluster="east", error="source consul x: refused")])
    assert not failed.in_sync and "error: source consul x: refused" in audit_text(failed)
