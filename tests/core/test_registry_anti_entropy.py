"""Anti-entropy (pure): the view's digest, the grace, the backoff, healing; status and render."""

from __future__ import annotations

import msgspec
import pytest

from global_registry.config import AntiEntropyConfig, StaleConfig
from global_registry.core.anti_entropy import AntiEntropy, SyncEventKind, view_digest
from global_registry.core.snapshot import status
from global_registry.core.view import RegistryView
from global_registry.io.status_api import status_reply
from harness.samples import ScriptedStream, cluster_beat, service_state
from syncmesh.digest import service_set_digest
from syncmesh.limits import LimitsConfig
from syncmesh.schema import ClusterBeat, Locality
from syncmesh_app.ops import render

pytestmark = pytest.mark.core

CONFIG = AntiEntropyConfig(grace_s=5.0, min_interval_s=30.0, max_interval_s=100.0)


def view_with(services: dict[str, int]) -> tuple[RegistryView, ScriptedStream]:
    view = RegistryView(StaleConfig(), LimitsConfig(), Locality())
    stream = ScriptedStream(view)
    for name, revision in services.items():
        stream.apply(service_state("east", name, revision=revision))
    return view, stream


def beat_for(services: dict[str, int], revision: int = 100, **fields: object) -> ClusterBeat:
    count, digest = service_set_digest(("default", n, 1, r) for n, r in services.items())
    return cluster_beat("east", revision=revision, services=count, digest=digest, **fields)


def test_view_digest_is_the_contract_digest_and_follows_changes() -> None:
    view, stream = view_with({"web": 3, "api": 4})
    rec = view.clusters["east"]
    assert view_digest(rec) == service_set_digest(
        [("default", "web", 1, 3), ("default", "api", 1, 4)]
    )
    stream.apply(service_state("east", "web", revision=7))
    assert view_digest(rec) == service_set_digest(
        [("default", "web", 1, 7), ("default", "api", 1, 4)]
    )
    stream.apply(service_state("east", "api", revision=8, deleted=True, instances=[]))
    assert view_digest(rec) == service_set_digest([("default", "web", 1, 7)])
    # A replay changes nothing, including the cached digest.
    stream.apply(service_state("east", "web", revision=2))
    assert view_digest(rec) == service_set_digest([("default", "web", 1, 7)])


def test_matching_beats_raise_nothing_and_mark_the_cluster_in_sync() -> None:
    view, stream = view_with({"web": 3})
    ae = AntiEntropy(CONFIG)
    beat = beat_for({"web": 3})
    stream.apply(beat)
    assert ae.on_beat(beat, view.clusters["east"], now=0.0) is None
    sync = ae.status("east")
    assert sync is not None and sync.in_sync is True and sync.requests == 0


def test_a_persisting_mismatch_requests_a_resync_after_the_grace_with_backoff() -> None:
    view, _ = view_with({"web": 3})
    rec = view.clusters["east"]
    ae = AntiEntropy(CONFIG)
    agent_says = beat_for({"web": 3, "api": 9})  # the view missed "api"
    assert ae.on_beat(agent_says, rec, now=0.0) is None  # first seen
    assert ae.on_beat(agent_says, rec, now=2.0) is None  # within the grace
    first = ae.on_beat(agent_says, rec, now=5.0)
    assert first is not None and first.kind is SyncEventKind.RESYNC and first.first
    assert "2 services" in first.detail and "this replica has 1" in first.detail
    assert ae.on_beat(agent_says, rec, now=20.0) is None  # rate-limited per cluster
    second = ae.on_beat(agent_says, rec, now=35.0)
    assert second is not None and not second.first
    assert ae.on_beat(agent_says, rec, now=64.0) is None  # the interval doubled to 60
    assert ae.on_beat(agent_says, rec, now=95.0) is not None
    assert ae.on_beat(agent_says, rec, now=194.0) is None  # capped at 100
    assert ae.on_beat(agent_says, rec, now=195.0) is not None
    sync = ae.status("east")
    assert sync is not None and sync.in_sync is False and sync.requests == 4


def test_a_matching_beat_heals_and_resets_the_backoff() -> None:
    view, stream = view_with({"web": 3})
    rec = view.clusters["east"]
    ae = AntiEntropy(CONFIG)
    agent_says = beat_for({"web": 3, "api": 9})
    ae.on_beat(agent_says, rec, now=0.0)
    assert ae.on_beat(agent_says, rec, now=5.0) is not None
    stream.apply(service_state("east", "api", revision=9))  # the resync arrived
    healed = ae.on_beat(agent_says, rec, now=7.5)
    assert healed is not None and healed.kind is SyncEventKind.HEALED
    assert healed.mismatch_s == 7.5 and "after 1 resync" in healed.detail
    # A new mismatch starts a new episode: grace again, then the short interval.
    stream.apply(service_state("east", "web", revision=50))
    assert ae.on_beat(agent_says, rec, now=10.0) is None
    event = ae.on_beat(agent_says, rec, now=15.0)
    assert event is not None and event.first


def test_beats_without_a_digest_or_retired_are_not_compared() -> None:
    view, _ = view_with({"web": 3})
    rec = view.clusters["east"]
    ae = AntiEntropy(CONFIG)
    for t in (0.0, 10.0, 100.0):
        assert ae.on_beat(cluster_beat("east"), rec, now=t) is None
        assert ae.on_beat(beat_for({}, retired=True), rec, now=t) is None
    assert ae.status("east") is None
    off = AntiEntropy(msgspec.structs.replace(CONFIG, enabled=False))
    assert off.on_beat(beat_for({"x": 1}), rec, now=0.0) is None
    assert off.on_beat(beat_for({"x": 1}), rec, now=100.0) is None


def test_status_shows_leader_standbys_and_sync() -> None:
    view, stream = view_with({"web": 3})
    beat = beat_for({"web": 3, "api": 1}, leader="host-b:42", standbys=2)
    stream.apply(beat)
    ae = AntiEntropy(CONFIG)
    ae.on_beat(beat, view.clusters["east"], now=0.0)
    ae.on_beat(beat, view.clusters["east"], now=6.0)
    report = status(view, 6.0, "r1", True, sync=ae.status)
    [east] = report.clusters
    assert (east.leader, east.standbys, east.in_sync, east.resync_requests) == (
        "host-b:42",
        2,
        False,
        1,
    )
    reply = status_reply(report, "ready")
    assert reply.clusters[0].leader == "host-b:42" and reply.clusters[0].in_sync is False
    text = render.status_text(reply)
    assert "host-b:42 +2 standby" in text and "no (1 resyncs)" in text


def test_anti_entropy_config_bounds() -> None:
    with pytest.raises(ValueError):
        AntiEntropyConfig(min_interval_s=60.0, max_interval_s=30.0)
