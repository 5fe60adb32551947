"""Gateway probes with scripted time: the phase table, rise/fall, scheduling, RTT hysteresis."""

from __future__ import annotations

import random

import pytest

from global_registry.config import ProbeConfig, StaleConfig
from global_registry.core.probe_fsm import TRANSITIONS, UP_PHASES, Guard, ProbePhase, step
from global_registry.core.probes import (
    GatewayId,
    GatewayProbes,
    GatewayStatus,
    ProbeOutcome,
    ProbeResult,
)
from global_registry.core.rtt import RttEstimate, RttScale
from global_registry.core.view import RegistryView
from harness.samples import ScriptedStream, cluster_beat, service_state
from syncmesh.limits import LimitsConfig
from syncmesh.schema import Gateway, Locality
from syncmesh.view_api import ServiceKey, ViewChange

pytestmark = pytest.mark.core

S = ProbePhase
OK = ProbeOutcome(True, 0.002)
FAIL = ProbeOutcome(False, result=ProbeResult.REFUSED)
GW = GatewayId("east", "192.0.2.1", 443)


def run(outcomes: str, rise: int = 2, fall: int = 3) -> list[ProbePhase]:
    phase, count, seen = S.UNKNOWN, 0, []
    for o in outcomes:
        phase, count = step(phase, count, o == "+", rise, fall)
        seen.append(phase)
    return seen


def test_table_covers_every_phase_and_outcome() -> None:
    for phase in ProbePhase:
        for ok in (True, False):
            assert (phase, ok, Guard.ALWAYS) in TRANSITIONS


def test_first_outcome_decides_at_once() -> None:
    assert run("+") == [S.UP]
    assert run("-") == [S.DOWN]


def test_fall_consecutive_failures_take_a_gateway_down() -> None:
    assert run("+---", fall=3) == [S.UP, S.FAILING, S.FAILING, S.DOWN]
    # One success in between starts the count over.
    assert run("+--+--", fall=3)[-1] == S.FAILING
    assert all(s in UP_PHASES for s in run("+--+--", fall=3))


def test_rise_consecutive_successes_bring_it_back() -> None:
    assert run("-++", rise=2) == [S.DOWN, S.RISING, S.UP]
    assert run("-+-+", rise=2) == [S.DOWN, S.RISING, S.DOWN, S.RISING]
    assert run("-+", rise=1) == [S.DOWN, S.UP]
    assert run("+-", fall=1) == [S.UP, S.DOWN]


def probes(**config: object) -> GatewayProbes:
    defaults: dict[str, object] = {"interval_s": 1.0, "jitter": 0.1, "max_concurrent": 2}
    defaults.update(config)
    return GatewayProbes(ProbeConfig(**defaults), random.Random(7))  # type: ignore[arg-type]


def test_new_targets_start_within_the_jitter_window_and_respect_the_bound() -> None:
    p = probes()
    targets = [GatewayId("c", "192.0.2.1", port) for port in (1, 2, 3)]
    p.set_targets(targets, now=10.0)
    wake = p.next_wakeup()
    assert wake is not None and 10.0 <= wake <= 10.1
    started = p.take_due(10.1)
    assert len(started) == 2, "max_concurrent bounds probes in flight"
    assert p.take_due(10.1) == []
    assert p.next_wakeup() is None, "no room until one finishes"
    p.record(started[0], OK, now=10.2)
    assert len(p.take_due(10.2)) == 1


def test_next_probe_follows_the_interval_with_jitter() -> None:
    p = probes()
    p.set_targets([GW], now=0.0)
    (gw,) = p.take_due(1.0)
    p.record(gw, OK, now=1.0)
    wake = p.next_wakeup()
    assert wake is not None and 1.9 <= wake <= 2.1
    assert p.take_due(1.5) == []


def test_removed_targets_are_forgotten_even_in_flight() -> None:
    p = probes()
    p.set_targets([GW], now=0.0)
    (gw,) = p.take_due(1.0)
    assert p.set_targets([], now=1.0) == [GW]
    assert p.record(gw, OK, now=1.1) is None
    assert p.in_flight == 0 and p.all_probed()


def test_record_reports_phase_rtt_and_readiness() -> None:
    p = probes(fall=2)
    p.set_targets([GW], now=0.0)
    assert not p.all_probed()
    p.take_due(1.0)
    status = p.record(GW, OK, now=1.0)
    assert status == GatewayStatus(phase=S.UP, up=True, rtt_ms=2.0, rtt_bucket=1)
    assert p.all_probed()
    for t in (2.5, 4.0):
        assert p.take_due(t) == [GW]
        status = p.record(GW, FAIL, now=t)
    assert status is not None and status.phase == S.DOWN and not status.up
    detail = p.details()[GW]
    assert detail.last_result == ProbeResult.REFUSED and detail.probes == 3


def test_rtt_bucket_is_sticky_within_half_a_bucket() -> None:
    scale = RttScale(floor_ms=1.0, ratio=0.5, alpha=1.0)
    rtt = RttEstimate()
    assert rtt.add(10.0, scale)
    first = rtt.bucket
    assert first == int(scale.position(10.0))
    # Jitter around the same value never moves the bucket.
    for sample in (9.0, 11.0, 8.5, 12.5, 10.0):
        assert not rtt.add(sample, scale)
    assert rtt.bucket == first
    # A real move (one that lasts) does.
    moved = [rtt.add(40.0, scale) for _ in range(3)]
    assert any(moved)
    assert rtt.bucket is not None and first is not None and rtt.bucket > first


def test_one_stalled_probe_moves_no_bucket() -> None:
    """bench/scale.py: a probe timed across an event-loop stall read 100 ms on
    loopback and, folded into the average, flushed the DNS cache."""
    scale = RttScale()
    rtt = RttEstimate()
    for _ in range(5):
        rtt.add(0.06, scale)
    first = rtt.bucket
    assert not rtt.add(120.0, scale), "a lone stall"
    for _ in range(4):
        assert not rtt.add(0.06, scale)
    assert rtt.bucket == first


def test_rtt_below_the_floor_is_one_bucket() -> None:
    scale = RttScale(floor_ms=1.0)
    assert scale.position(0.05) == scale.position(0.9) == 0.0


def test_rtt_is_a_moving_average_of_medians() -> None:
    scale = RttScale(alpha=0.5, window=1)
    rtt = RttEstimate()
    rtt.add(10.0, scale)
    rtt.add(20.0, scale)
    assert rtt.average_ms == 15.0
    filtered = RttEstimate()
    filtered.add(10.0, RttScale(alpha=0.5))
    filtered.add(20.0, RttScale(alpha=0.5))
    assert filtered.average_ms == 12.5  # the median of (10, 20) is 15, halfway from 10


def view_with(clusters: dict[str, int | None]) -> RegistryView:
    """Clusters with one up gateway each, in the given RTT bucket, all offering web."""
    stream = ScriptedStream(RegistryView(StaleConfig(), LimitsConfig(), Locality()))
    view = stream.view
    for name, bucket in clusters.items():
        stream.apply(cluster_beat(name, gateways=[Gateway(address="192.0.2.1", port=443)]))
        stream.apply(service_state(name, "web"))
        stream.apply(service_state(name, f"only-{name}"))
        view.set_gateway_status(
            GatewayId(name, "192.0.2.1", 443),
            GatewayStatus(
                phase=S.UP,
                up=True,
                rtt_ms=None if bucket is None else float(bucket),
                rtt_bucket=bucket,
            ),
        )
    return view


def keys(*names: str) -> frozenset[ServiceKey]:
    out = {ServiceKey("default", "web")}
    out.update(ServiceKey("default", f"only-{n}") for n in names)
    return frozenset(out)


def status(bucket: int | None, up: bool = True) -> GatewayStatus:
    return GatewayStatus(
        phase=S.UP if up else S.DOWN,
        up=up,
        rtt_ms=None if bucket is None else float(bucket),
        rtt_bucket=bucket,
    )


def test_rtt_jitter_inside_a_bucket_is_no_view_change() -> None:
    view = view_with({"a": 2, "b": 5})
    same_bucket = GatewayStatus(phase=S.UP, up=True, rtt_ms=2.7, rtt_bucket=2)
    assert view.set_gateway_status(GatewayId("a", "192.0.2.1", 443), same_bucket) == ViewChange()
    assert view.resolve(ServiceKey("default", "web"), None).clusters[0].rtt_ms == 2.7


def test_a_bucket_move_that_keeps_the_order_is_no_view_change() -> None:
    view = view_with({"a": 2, "b": 5})
    assert view.set_gateway_status(GatewayId("a", "192.0.2.1", 443), status(3)) == ViewChange()


def test_a_bucket_move_that_reorders_names_the_services_it_shares() -> None:
    view = view_with({"a": 2, "b": 5, "c": 9})
    change = view.set_gateway_status(GatewayId("a", "192.0.2.1", 443), status(6))
    # only-a has one candidate and only-b does not have a: neither answer changes.
    assert change == ViewChange(services=keys())
    order = [c.cluster for c in view.resolve(ServiceKey("default", "web"), None).clusters]
    assert order == ["b", "a", "c"]


def test_starting_or_ending_a_tie_is_a_view_change() -> None:
    view = view_with({"a": 2, "b": 5})
    change = view.set_gateway_status(GatewayId("a", "192.0.2.1", 443), status(5))
    assert change == ViewChange(services=keys())
    reasons = [c.reason for c in view.resolve(ServiceKey("default", "web"), None).clusters]
    assert reasons == ["order", "order"]


def test_a_gateway_going_down_names_its_clusters_services() -> None:
    view = view_with({"a": 2, "b": 5})
    change = view.set_gateway_status(GatewayId("a", "192.0.2.1", 443), status(2, up=False))
    assert keys("a") <= change.services
    assert [c.cluster for c in view.resolve(ServiceKey("default", "web"), None).clusters] == ["b"]


def test_a_move_out_of_a_crowded_bucket_names_only_the_movers_services() -> None:
    # Was ``everything`` with more than eight tied clusters: at 100 clusters in
    # bucket 0 every jittering gateway flushed the whole DNS cache (bench/scale.py).
    view = view_with({f"c{i}": 4 for i in range(100)})
    change = view.set_gateway_status(GatewayId("c0", "192.0.2.1", 443), status(1))
    assert change == ViewChange(services=keys())


def test_a_move_from_or_to_no_rtt_names_every_service_of_the_cluster() -> None:
    view = view_with({"a": 2, "b": 5})
    change = view.set_gateway_status(GatewayId("a", "192.0.2.1", 443), status(None))
    assert change == ViewChange(services=keys("a"))


def test_no_cluster_wide_changes_are_worked_out_while_catching_up() -> None:
    view = view_with({"a": 2, "b": 5})
    view.quiet = True
    assert (
        view.set_gateway_status(GatewayId("a", "192.0.2.1", 443), status(2, up=False))
        == ViewChange()
    )
    assert [c.cluster for c in view.resolve(ServiceKey("default", "web"), None).clusters] == ["b"]


def _answers(view: RegistryView, services: list[ServiceKey], classes: list[str | None]) -> dict:
    """Every resolution the DNS cache could hold, minus the raw RTT it never keys on."""
    out = {}
    for key in services:
        for cls in classes:
            resolution = view.resolve(key, cls)
            out[key, cls] = [
                (c.cluster, c.rank, c.reason, c.stale, c.load) for c in resolution.clusters
            ]
    return out


@pytest.mark.parametrize("seed", range(40))
def test_a_bucket_move_names_every_service_whose_answer_changed(seed: int) -> None:
    """Attack on the narrow reorder: random placements, localities and buckets;
    any answer that differs after a move must be among the services named."""
    rng = random.Random(seed)
    stream = ScriptedStream(RegistryView(StaleConfig(), LimitsConfig(), Locality()))
    view = stream.view
    clusters = [f"c{i}" for i in range(rng.randint(2, 12))]
    services = [ServiceKey("default", f"s{i}") for i in range(rng.randint(1, 15))]
    for name in clusters:
        stream.apply(
            cluster_beat(
                name,
                gateways=[Gateway(address="192.0.2.1", port=443)],
                region=rng.choice(["r1", "r2", ""]),
                zone=rng.choice(["z1", ""]),
                client_cidrs=[f"10.{clusters.index(name)}.0.0/16"],
            )
        )
        for key in services:
            if rng.random() < 0.5:
                stream.apply(service_state(name, key.service))
        bucket = rng.choice([None, 0, 0, 0, 1, 2, 3])
        view.set_gateway_status(GatewayId(name, "192.0.2.1", 443), status(bucket))
    classes: list[str | None] = [None, *clusters]
    for _ in range(5):
        before = _answers(view, services, classes)
        mover = rng.choice(clusters)
        change = view.set_gateway_status(
            GatewayId(mover, "192.0.2.1", 443), status(rng.choice([None, 0, 1, 2, 3, 5]))
        )
        after = _answers(view, services, classes)
        changed = {key for key, _cls in before if before[key, _cls] != after[key, _cls]}
        assert change.everything or changed <= change.services, (mover, changed - change.services)


@pytest.mark.parametrize("seed", range(20))
def test_the_due_heap_starts_what_a_full_scan_would(seed: int) -> None:
    """The scheduler keeps due times in a heap; a scan of every target (the former
    implementation) must pick the same probes, in the same order, at every step."""
    rng = random.Random(seed)
    config = ProbeConfig(interval_s=1.0, jitter=0.2, max_concurrent=rng.randint(1, 6))
    probes = GatewayProbes(config, rng=random.Random(seed))
    pool = [GatewayId(f"c{i % 5}", f"192.0.2.{i}", 443) for i in range(1, 16)]
    now = 0.0
    probes.set_targets(pool[:8], now)
    in_flight: list[GatewayId] = []
    for _ in range(300):
        now += rng.uniform(0.0, 0.3)
        action = rng.random()
        if action < 0.1:
            probes.set_targets(rng.sample(pool, rng.randint(0, len(pool))), now)
            in_flight = [gw for gw in in_flight if gw in probes._targets]
        elif action < 0.6 and in_flight:
            gw = in_flight.pop(rng.randrange(len(in_flight)))
            probes.record(gw, OK if rng.random() < 0.7 else FAIL, now)
        targets = probes._targets
        room = config.max_concurrent - probes.in_flight
        expected = sorted(
            (t.next_at, gw) for gw, t in targets.items() if not t.in_flight and t.next_at <= now
        )[: max(room, 0)]
        pending = [t.next_at for t in targets.values() if not t.in_flight]
        wakeup = None if probes.in_flight >= config.max_concurrent or not pending else min(pending)
        assert probes.next_wakeup() == wakeup
        unprobed = [t for t in targets.values() if t.phase is ProbePhase.UNKNOWN]
        assert probes.all_probed() == (not unprobed)
        started = probes.take_due(now)
        assert started == [gw for _, gw in expected]
        in_flight += started
