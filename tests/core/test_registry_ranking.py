"""Nearest ranking: fresh before stale, client CIDR, zone, region, RTT, name; the reason given
for each place, and one rank for clusters that differ only by name."""

from __future__ import annotations

import ipaddress

import pytest

from global_registry.config import StaleConfig
from global_registry.core.probe_fsm import ProbePhase
from global_registry.core.probes import GatewayId, GatewayStatus
from global_registry.core.ranking import Candidate, rank
from global_registry.core.view import RegistryView
from harness.samples import ScriptedStream, cluster_beat, service_state
from syncmesh.limits import LimitsConfig
from syncmesh.schema import Gateway, Locality
from syncmesh.view_api import ServiceKey

pytestmark = pytest.mark.core

GW = (Gateway(address="192.0.2.1", port=443),)


def cand(
    name: str, region: str = "", zone: str = "", bucket: int | None = None, stale: bool = False
) -> Candidate:
    return Candidate(
        cluster=name,
        locality=Locality(region=region, zone=zone),
        gateways=GW,
        healthy_instances=1,
        rtt_bucket=bucket,
        rtt_ms=None if bucket is None else float(bucket),
        stale=stale,
    )


def order(ranked: tuple) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(r.cluster, r.reason) for r in ranked]


def test_client_cidr_beats_zone_beats_region_beats_rtt_beats_name() -> None:
    candidates = [
        cand("f-far", region="eu", zone="eu-1", bucket=1),
        cand("e-none", region="eu", zone="eu-2"),
        cand("d-region", region="us", zone="us-2", bucket=9),
        cand("c-zone", region="us", zone="us-1", bucket=9),
        cand("b-client", region="ap", zone="ap-1", bucket=20),
        cand("a-order", region="eu", zone="eu-3"),
    ]
    ranked = rank(candidates, "b-client", Locality(region="us", zone="us-1"))
    assert order(ranked) == [
        ("b-client", "client-cidr"),
        ("c-zone", "same-zone"),
        ("d-region", "same-region"),
        ("f-far", "rtt"),
        ("a-order", "order"),
        ("e-none", "order"),
    ]
    # a-order and e-none differ only by name: one rank (one SRV priority).
    assert [r.rank for r in ranked] == [0, 1, 2, 3, 4, 4]


def test_clusters_equal_on_every_criterion_but_the_name_share_a_rank() -> None:
    ranked = rank(
        [
            cand("b", region="us", zone="us-1", bucket=2),
            cand("a", region="us", zone="us-1", bucket=2),
            cand("c", region="us", zone="us-1", bucket=3),
            cand("e", bucket=5),
            cand("d", bucket=5),
            cand("f"),
            cand("g"),
        ],
        None,
        Locality(region="us", zone="us-1"),
    )
    assert [(r.cluster, r.rank, r.reason) for r in ranked] == [
        ("a", 0, "same-zone"),
        ("b", 0, "same-zone"),
        ("c", 1, "same-zone"),
        ("d", 2, "order"),
        ("e", 2, "order"),
        ("f", 3, "order"),
        ("g", 3, "order"),
    ]


def test_a_stale_cluster_ranks_after_every_fresh_one() -> None:
    ranked = rank(
        [
            cand("client", region="us", zone="us-1", bucket=0, stale=True),
            cand("far", region="eu", bucket=9),
            cand("near-stale", region="us", zone="us-1", bucket=1, stale=True),
            cand("other-stale", region="ap", bucket=1, stale=True),
            cand("twin-stale", region="ap", bucket=1, stale=True),
        ],
        "client",
        Locality(region="us", zone="us-1"),
    )
    assert [(r.cluster, r.rank, r.reason, r.stale) for r in ranked] == [
        ("far", 0, "rtt", False),
        # Among stale ones the usual order holds; the reason says why they come last.
        ("client", 1, "stale", True),
        ("near-stale", 2, "stale", True),
        ("other-stale", 3, "stale", True),
        ("twin-stale", 3, "stale", True),
    ]


def test_rtt_orders_within_a_tier() -> None:
    ranked = rank(
        [cand("a", region="us", bucket=8), cand("b", region="us", bucket=3)],
        None,
        Locality(region="us"),
    )
    assert order(ranked) == [("b", "same-region"), ("a", "same-region")]


def test_equal_buckets_tie_and_fall_to_name_order() -> None:
    ranked = rank(
        [cand("zeta", bucket=4), cand("alpha", bucket=4), cand("mid", bucket=2)], None, Locality()
    )
    assert order(ranked) == [("mid", "rtt"), ("alpha", "order"), ("zeta", "order")]


def test_zone_needs_the_same_region_too() -> None:
    ranked = rank(
        [cand("a", region="eu", zone="z1"), cand("b", region="us", zone="z1")],
        None,
        Locality(region="us", zone="z1"),
    )
    assert order(ranked) == [("b", "same-zone"), ("a", "order")]


def test_empty_reference_locality_never_matches() -> None:
    ranked = rank([cand("b"), cand("a")], None, Locality())
    assert order(ranked) == [("a", "order"), ("b", "order")]


def test_stale_flag_and_rtt_are_carried() -> None:
    (ranked,) = rank([cand("a", bucket=3, stale=True)], None, Locality())
    assert ranked.stale and ranked.rtt_ms == 3.0 and ranked.gateways == list(GW)


def build_view() -> RegistryView:
    """Three clusters offering web; east owns 10.1/16, west 10.2/16; replica in us/us-1."""
    stream = ScriptedStream(
        RegistryView(StaleConfig(), LimitsConfig(), Locality(region="us", zone="us-1"))
    )
    view = stream.view
    layout = {
        "east": ("us", "us-1", ["10.1.0.0/16"], 7),
        "west": ("us", "us-2", ["10.2.0.0/16"], 3),
        "europe": ("eu", "eu-1", [], 1),
    }
    for name, (region, zone, cidrs, bucket) in layout.items():
        stream.apply(cluster_beat(name, region=region, zone=zone, client_cidrs=cidrs))
        stream.apply(service_state(name, "web"))
        view.set_gateway_status(
            GatewayId(name, "192.0.2.1", 443),
            GatewayStatus(phase=ProbePhase.UP, up=True, rtt_ms=float(bucket), rtt_bucket=bucket),
        )
    return view


def resolve(view: RegistryView, client: str | None) -> list[tuple[str, str]]:
    client_class = view.client_class(None if client is None else ipaddress.ip_address(client))
    return order(view.resolve(ServiceKey("default", "web"), client_class).clusters)


def test_view_ranks_for_a_client_in_a_clusters_cidr() -> None:
    view = build_view()
    assert resolve(view, "10.2.9.9") == [
        ("west", "client-cidr"),
        ("east", "same-region"),
        ("europe", "rtt"),
    ]


def test_view_ranks_for_an_unknown_client_from_the_replicas_locality() -> None:
    view = build_view()
    assert resolve(view, "192.168.1.1") == [
        ("east", "same-zone"),
        ("west", "same-region"),
        ("europe", "rtt"),
    ]
    assert resolve(view, None) == resolve(view, "192.168.1.1")


def test_view_ranks_by_the_client_clusters_locality() -> None:
    view = build_view()
    # east's clients: east itself, then its region (west), then RTT.
    assert resolve(view, "10.1.0.1") == [
        ("east", "client-cidr"),
        ("west", "same-region"),
        ("europe", "rtt"),
    ]


def test_view_serves_a_stale_client_cluster_after_a_fresh_one() -> None:
    view = build_view()
    # west stops beating: still served (policy "serve"), but after every fresh cluster.
    view.tick(1000.0)
    for name in ("east", "europe"):
        rec = view.clusters[name]
        assert rec.beat is not None
        view.apply_beat(
            cluster_beat(
                name,
                revision=2,
                region=rec.beat.locality.region,
                zone=rec.beat.locality.zone,
                client_cidrs=rec.beat.client_cidrs,
            ),
            seq=100 + len(name),
            now=1000.0,
        )
    assert resolve(view, "10.2.9.9") == [
        ("east", "same-region"),
        ("europe", "rtt"),
        ("west", "stale"),
    ]


def test_pinned_resolution_considers_only_that_cluster() -> None:
    view = build_view()
    pinned = view.resolve(ServiceKey("default", "web"), None, pinned="europe")
    assert [c.cluster for c in pinned.clusters] == ["europe"]
