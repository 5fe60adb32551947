"""Agent staleness with scripted time: TTL, both stale policies, recovery, replayed beats."""

from __future__ import annotations

import pytest

from global_registry.config import StaleConfig
from global_registry.core.probe_fsm import ProbePhase
from global_registry.core.probes import GatewayId, GatewayStatus
from global_registry.core.snapshot import status
from global_registry.core.view import RegistryView
from harness.samples import ScriptedStream, cluster_beat, service_state
from syncmesh.limits import LimitsConfig
from syncmesh.schema import Locality
from syncmesh.view_api import ServiceKey, ViewChange

pytestmark = pytest.mark.core

WEB = ServiceKey("default", "web")
API = ServiceKey("default", "api")
UP = GatewayStatus(phase=ProbePhase.UP, up=True)


def setup(policy: str = "serve", after_beats: float = 3.0) -> ScriptedStream:
    stream = ScriptedStream(
        RegistryView(
            StaleConfig(policy=policy, after_beats=after_beats),  # type: ignore[arg-type]
            LimitsConfig(),
            Locality(),
        )
    )
    stream.apply(cluster_beat("east", interval_s=2.0), now=100.0)
    stream.view.set_gateway_status(GatewayId("east", "192.0.2.1", 443), UP)
    stream.apply(service_state("east", "web"))
    stream.apply(service_state("east", "api"))
    return stream


def test_ttl_is_after_beats_times_the_announced_interval() -> None:
    view = setup(after_beats=3.0).view
    assert view.next_deadline() == 106.0
    assert not view.tick(105.9)
    assert not view.tick(106.0)
    assert not view.clusters["east"].stale
    change = view.tick(106.01)
    assert change == ViewChange(services=frozenset({WEB, API}))
    assert view.clusters["east"].stale
    assert view.next_deadline() is None
    assert not view.tick(200.0), "a stale cluster turns stale only once"


def test_serve_policy_keeps_answering_and_flags_the_answer() -> None:
    view = setup("serve").view
    view.tick(107.0)
    (ranked,) = view.resolve(WEB, None).clusters
    assert ranked.cluster == "east" and ranked.stale is True
    report = status(view, 107.0, "r1", ready=True)
    assert report.clusters[0].stale and report.clusters[0].served_stale


def test_serve_policy_still_needs_a_gateway_that_passes_its_probe() -> None:
    view = setup("serve").view
    view.tick(107.0)
    view.set_gateway_status(
        GatewayId("east", "192.0.2.1", 443), GatewayStatus(phase=ProbePhase.DOWN, up=False)
    )
    assert view.resolve(WEB, None).clusters == ()
    assert not status(view, 107.0, "r1", ready=True).clusters[0].served_stale


def test_drop_policy_removes_a_stale_cluster_from_the_candidates() -> None:
    view = setup("drop").view
    view.tick(107.0)
    resolution = view.resolve(WEB, None)
    assert resolution.known and resolution.clusters == ()


def test_a_stale_cluster_that_beats_again_is_fresh_at_once() -> None:
    stream = setup("drop")
    view = stream.view
    view.tick(107.0)
    applied = stream.apply(cluster_beat("east", interval_s=2.0, revision=9), now=120.0)
    assert applied.change == ViewChange(services=frozenset({WEB, API}))
    assert not view.clusters["east"].stale
    assert [c.stale for c in view.resolve(WEB, None).clusters] == [False]
    assert view.next_deadline() == 126.0


def test_a_replayed_beat_older_than_its_ttl_is_stale_on_arrival() -> None:
    stream = ScriptedStream(RegistryView(StaleConfig(), LimitsConfig(), Locality()))
    view = stream.view
    stream.apply(cluster_beat("east", interval_s=1.0), now=50.0, age_s=10.0)
    assert view.clusters["east"].stale
    stream.apply(cluster_beat("west", interval_s=1.0), now=50.0, age_s=1.0)
    assert not view.clusters["west"].stale
    assert view.next_deadline() == 52.0


def test_a_cluster_without_any_beat_counts_as_stale_and_is_no_candidate() -> None:
    stream = ScriptedStream(RegistryView(StaleConfig(), LimitsConfig(), Locality()))
    view = stream.view
    stream.apply(service_state("north", "web"))
    assert view.clusters["north"].stale
    assert view.resolve(WEB, None).clusters == ()
