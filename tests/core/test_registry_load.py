"""Gateway load in the ranking: the hysteresis state machine, the cluster load,
the served load's dead band, and the view demoting an overloaded cluster (with
the changes it reports for the DNS cache)."""

from __future__ import annotations

import ipaddress

import msgspec
import pytest

from global_registry.config import LoadConfig
from global_registry.core.load import ClusterLoad, OverloadGate, cluster_load, served_load
from global_registry.core.probe_fsm import ProbePhase
from global_registry.core.probes import GatewayStatus
from global_registry.core.snapshot import status
from harness.view_feed import ViewFeed
from syncmesh.schema import Gateway
from syncmesh.view_api import ServiceKey

pytestmark = pytest.mark.core

POLICY = LoadConfig()
WEB, API = ServiceKey("default", "web"), ServiceKey("default", "api")
EAST_CLIENT = "10.1.0.0/16"


def gw(address: str, load: int | None, weight: int = 100, port: int = 443) -> Gateway:
    return Gateway(address=address, port=port, weight=weight, load=load)


# -- the state machine --------------------------------------------------------


def test_gate_enters_above_threshold_and_leaves_only_below_the_lower_one() -> None:
    gate = OverloadGate()
    script = [
        (70, False, False),
        (75, False, False),  # "above 75": 75 itself is not overloaded
        (76, True, True),
        (74, True, False),  # between the thresholds: stays demoted
        (65, True, False),
        (64, False, True),
        (74, False, False),  # between the thresholds: stays normal
        (100, True, True),
        (None, False, True),  # unknown is never overloaded
        (None, False, False),
    ]
    for load, overloaded, flipped in script:
        assert gate.observe(load, POLICY) is flipped, load
        assert gate.overloaded is overloaded, load


def test_gate_without_a_gap() -> None:
    policy = LoadConfig(overloaded_above_pct=50, recovered_below_pct=50)
    gate = OverloadGate()
    assert gate.observe(51, policy) and gate.overloaded
    assert not gate.observe(50, policy) and gate.overloaded
    assert gate.observe(49, policy) and not gate.overloaded


def test_config_refuses_a_recovery_threshold_above_the_overload_one() -> None:
    with pytest.raises(ValueError, match="recovered_below_pct"):
        LoadConfig(overloaded_above_pct=60, recovered_below_pct=70)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"overloaded_above_pct": 101}, LoadConfig)


# -- cluster load and the served load ------------------------------------------


def test_cluster_load_is_the_weighted_mean_and_unknown_if_any_gateway_is() -> None:
    assert cluster_load([gw("192.0.2.1", 90, 100), gw("192.0.2.2", 30, 50)]) == 70
    assert cluster_load([gw("192.0.2.1", 90, 0), gw("192.0.2.2", 30, 0)]) == 60
    assert cluster_load([gw("192.0.2.1", 90), gw("192.0.2.2", None)]) is None
    assert cluster_load([]) is None


@pytest.mark.parametrize(
    ("previous", "current", "served"),
    [
        (40, 43, 40),  # wobble inside the step: answers keep what they use
        (40, 45, 45),
        (40, 35, 35),
        (3, 0, 0),  # the ends always show
        (97, 100, 100),
        (None, 42, 42),
        (42, None, None),
    ],
)
def test_served_load_moves_by_steps(previous: int | None, current: int | None, served: int) -> None:
    assert served_load(previous, current, 5) == served


def test_cluster_load_serves_the_dead_banded_loads_and_flips_with_raw_ones() -> None:
    load = ClusterLoad()
    up, flipped = load.refresh([gw("192.0.2.1", 72)], [gw("192.0.2.1", 72)], POLICY)
    assert not flipped and up[0].load == 72 and load.load == 72
    # 76 is within the step of 72, but the raw value crosses the threshold: the
    # flip also moves the served load, so what answers show agrees with the rank.
    up, flipped = load.refresh([gw("192.0.2.1", 76)], [gw("192.0.2.1", 76)], POLICY)
    assert flipped and load.overloaded and up[0].load == 76
    up, flipped = load.refresh([gw("192.0.2.1", 78)], [gw("192.0.2.1", 78)], POLICY)
    assert not flipped and up[0].load == 76


# -- the view -----------------------------------------------------------------


def feed_two(load: LoadConfig | None = None) -> ViewFeed:
    """east (the east client's cluster) and west, one gateway each, web in both."""
    feed = ViewFeed(load=load)
    feed.cluster("east", [gw("192.0.2.1", 10)], [EAST_CLIENT], rtt_ms=1.0)
    feed.cluster("west", [gw("192.0.2.2", 10)], ["10.2.0.0/16"], rtt_ms=20.0)
    feed.service(WEB, "east")
    feed.service(WEB, "west")
    feed.service(API, "west")
    return feed


def order(feed: ViewFeed) -> list[tuple[str, int, str, int | None]]:
    client_class = feed.view.client_class(ipaddress.ip_address("10.1.2.3"))
    resolution = feed.view.resolve(WEB, client_class)
    return [(c.cluster, c.rank, c.reason, c.load) for c in resolution.clusters]


def test_overloaded_cluster_goes_last_and_comes_back_below_the_lower_threshold() -> None:
    feed = feed_two()
    assert order(feed) == [("east", 0, "client-cidr", 10), ("west", 1, "rtt", 10)]

    change = feed.beat("east", [gw("192.0.2.1", 80)])
    assert change.services == {WEB}  # east's services only; api is not in east
    assert order(feed) == [("west", 0, "rtt", 10), ("east", 1, "overloaded", 80)]

    # Back under 75 but not under 65: still demoted (answers do not flap).
    feed.beat("east", [gw("192.0.2.1", 70)])
    assert [c[0] for c in order(feed)] == ["west", "east"]

    change = feed.beat("east", [gw("192.0.2.1", 60)])
    assert change.services == {WEB}
    assert order(feed) == [("east", 0, "client-cidr", 60), ("west", 1, "rtt", 10)]


def test_every_candidate_overloaded_keeps_the_nearest_order() -> None:
    feed = feed_two()
    feed.beat("east", [gw("192.0.2.1", 90)])
    feed.beat("west", [gw("192.0.2.2", 95)])
    assert order(feed) == [("east", 0, "overloaded", 90), ("west", 1, "overloaded", 95)]


def test_a_load_wobble_changes_no_answer_and_keeps_the_probes() -> None:
    feed = feed_two()
    applied_change = feed.beat("east", [gw("192.0.2.1", 12)])
    assert not applied_change
    # The probe state survived the load-only beat: east is still up and measured.
    assert [g.address for g in feed.view.up_gateways("east")] == ["192.0.2.1"]
    assert order(feed)[0] == ("east", 0, "client-cidr", 10)
    # A move of a full step is served (SRV weights follow it).
    assert feed.beat("east", [gw("192.0.2.1", 20)]).services == {WEB}
    assert order(feed)[0] == ("east", 0, "client-cidr", 20)


def test_unknown_load_is_not_overloaded() -> None:
    feed = feed_two()
    feed.beat("east", [gw("192.0.2.1", 90)])
    assert order(feed)[0][0] == "west"
    feed.beat("east", [gw("192.0.2.1", None)])
    assert order(feed)[0] == ("east", 0, "client-cidr", None)


def test_only_up_gateways_make_the_cluster_load() -> None:
    feed = feed_two()
    feed.cluster("east", [gw("192.0.2.1", 95), gw("192.0.2.9", 10)], [EAST_CLIENT], rtt_ms=1)
    assert order(feed)[0] == ("east", 0, "client-cidr", 52)
    down = GatewayStatus(phase=ProbePhase.DOWN, up=False)
    change = feed.probe("east", gw("192.0.2.9", 10), down)
    assert WEB in change.services
    assert order(feed)[1] == ("east", 1, "overloaded", 95)


def test_disabled_load_changes_nothing_but_is_shown_on_the_status_page() -> None:
    feed = feed_two(LoadConfig(enabled=False))
    feed.beat("east", [gw("192.0.2.1", 99)])
    assert order(feed) == [("east", 0, "client-cidr", None), ("west", 1, "rtt", None)]
    east = next(c for c in status(feed.view, 0.0, "r", True).clusters if c.cluster == "east")
    assert east.gateways[0].load == 99 and east.gateways[0].served_load is None
    assert not east.overloaded


def test_status_shows_loads_and_the_overload_flag() -> None:
    feed = feed_two()
    feed.beat("east", [gw("192.0.2.1", 80)])
    feed.beat("east", [gw("192.0.2.1", 82)])
    east = next(c for c in status(feed.view, 0.0, "r", True).clusters if c.cluster == "east")
    assert east.overloaded and east.load == 80
    (gateway,) = east.gateways
    assert gateway.up and gateway.load == 82 and gateway.served_load == 80
