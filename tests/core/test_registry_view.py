"""The registry view: ordering by (epoch, revision), tombstones, limits and what each event changes.

Epoch fencing, retired clusters and tombstone expiry: test_registry_fencing.py.
"""

from __future__ import annotations

import ipaddress

import pytest

from global_registry.config import StaleConfig
from global_registry.core.probe_fsm import ProbePhase
from global_registry.core.probes import GatewayId, GatewayStatus
from global_registry.core.view import RegistryView
from harness.samples import ScriptedStream, cluster_beat, epoch_claim, instance, service_state
from syncmesh.limits import LimitsConfig
from syncmesh.schema import Gateway, Instance, Locality
from syncmesh.validate import Rejected
from syncmesh.view_api import ServiceKey, ViewChange

pytestmark = pytest.mark.core

WEB = ServiceKey("default", "web")
UP = GatewayStatus(phase=ProbePhase.UP, up=True, rtt_ms=1.0, rtt_bucket=0)
DOWN = GatewayStatus(phase=ProbePhase.DOWN, up=False)


def make_stream(**limits: int) -> ScriptedStream:
    return ScriptedStream(
        RegistryView(StaleConfig(), LimitsConfig(**limits), Locality(region="r1", zone="z1"))
    )


def serving_cluster(stream: ScriptedStream, cluster: str, now: float = 0.0, **beat: object) -> None:
    """A cluster with a beat whose single gateway is up."""
    view = stream.view
    stream.apply(cluster_beat(cluster, **beat), now)  # type: ignore[arg-type]
    rec = view.clusters[cluster]
    assert rec.beat is not None
    for g in rec.beat.gateways:
        view.set_gateway_status(GatewayId(cluster, g.address, g.port), UP)


def instances_of(view: RegistryView, cluster: str, key: ServiceKey = WEB) -> list[str]:
    return [
        i.address
        for i in view.clusters[cluster].services[(key.namespace, key.service)].state.instances
    ]


def test_newer_revision_replaces_and_names_exactly_its_service() -> None:
    stream = make_stream()
    view = stream.view
    stream.apply(service_state("east", "web", revision=1))
    applied = stream.apply(
        service_state(
            "east", "web", revision=2, instances=[instance(address="10.0.0.2", health="critical")]
        )
    )
    assert applied.outcome == "applied"
    assert applied.change == ViewChange(services=frozenset({WEB}))
    assert instances_of(view, "east") == ["10.0.0.2"]


def _two(health: str = "passing", version: str = "", address: str = "10.0.0.2") -> list[Instance]:
    return [
        instance(id="i1", address="10.0.0.1"),
        instance(id="i2", address=address, health=health, version=version),
    ]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        # One of two healthy instances fails: the cluster is still a candidate,
        # only the count moved (TXT shows it; A/AAAA/SRV stay cached).
        (_two(), _two(health="critical"), ViewChange(counts=frozenset({WEB}))),
        (_two(health="critical"), _two(), ViewChange(counts=frozenset({WEB}))),
        # An address or metadata no answer shows: nothing for the DNS cache.
        (_two(), _two(address="10.0.0.9"), ViewChange()),
        # The last healthy instance of version v2 goes: the v2 subset loses the
        # cluster as a candidate although the service keeps one healthy instance.
        (
            _two(version="v2"),
            _two(version="v2", health="critical"),
            ViewChange(services=frozenset({WEB})),
        ),
        # A version appears: a subset gains a candidate.
        (_two(), _two(version="v2"), ViewChange(services=frozenset({WEB}))),
        # Every instance fails: the cluster is no candidate any more.
        (
            [instance(id="i1")],
            [instance(id="i1", health="critical")],
            ViewChange(services=frozenset({WEB})),
        ),
    ],
    ids=[
        "one-of-two-fails",
        "one-of-two-heals",
        "address-only",
        "subset-empties",
        "subset-appears",
        "last-fails",
    ],
)
def test_a_change_names_the_service_only_when_its_candidacy_moves(
    before: list,
    after: list,
    expected: ViewChange,  # type: ignore[type-arg]
) -> None:
    stream = make_stream()
    stream.apply(service_state("east", "web", revision=1, instances=before))
    applied = stream.apply(service_state("east", "web", revision=2, instances=after))
    assert applied.outcome == "applied"
    assert applied.change == expected
    assert [
        i.health for i in stream.view.clusters["east"].services[("default", "web")].state.instances
    ] == [i.health for i in after]


def test_older_and_duplicate_revisions_are_dropped() -> None:
    stream = make_stream()
    view = stream.view
    stream.apply(service_state("east", "web", revision=5, instances=[instance(address="10.0.0.5")]))
    older = stream.apply(
        service_state("east", "web", revision=4, instances=[instance(address="10.0.0.4")])
    )
    again = stream.apply(
        service_state("east", "web", revision=5, instances=[instance(address="10.0.0.9")])
    )
    assert (older.outcome, again.outcome) == ("stale-revision", "stale-revision")
    assert not older.change and not again.change
    assert instances_of(view, "east") == ["10.0.0.5"]


def test_a_newer_epoch_supersedes_higher_revisions_of_the_old_agent() -> None:
    view = make_stream().view
    view.apply_claim(epoch_claim("east"), 100)
    view.apply_service(service_state("east", "web", epoch=100, revision=900), 150, now=0.0)
    view.apply_claim(epoch_claim("east"), 200)
    restarted = view.apply_service(
        service_state(
            "east", "web", epoch=200, revision=1, instances=[instance(address="10.0.0.2")]
        ),
        201,
        now=0.0,
    )
    assert restarted.outcome == "applied"
    assert instances_of(view, "east") == ["10.0.0.2"]


def test_same_instances_under_a_new_revision_change_no_answer() -> None:
    stream = make_stream()
    view = stream.view
    stream.apply(service_state("east", "web", revision=1))
    applied = stream.apply(service_state("east", "web", revision=2))
    assert applied.outcome == "same"
    assert not applied.change
    assert view.clusters["east"].services[("default", "web")].state.revision == 2


def test_tombstone_removes_and_keeps_older_states_out() -> None:
    stream = make_stream()
    view = stream.view
    stream.apply(service_state("east", "web", revision=1))
    gone = stream.apply(service_state("east", "web", revision=2, instances=[], deleted=True))
    assert gone.outcome == "applied" and gone.change == ViewChange(services=frozenset({WEB}))
    assert view.resolve(WEB, None).known is False
    late = stream.apply(service_state("east", "web", revision=1))
    assert late.outcome == "stale-revision"
    back = stream.apply(service_state("east", "web", revision=3))
    assert back.outcome == "applied"
    assert view.resolve(WEB, None).known is True


def test_first_message_of_a_new_cluster_invalidates_everything() -> None:
    stream = make_stream()
    view = stream.view
    assert not view.cluster_known("east")
    applied = stream.apply(service_state("east", "web"))
    assert applied.change.everything
    assert view.cluster_known("east")
    assert not stream.apply(service_state("east", "web", revision=2)).change.everything


def test_beat_changes_scope() -> None:
    stream = make_stream()
    stream.apply(service_state("east", "web"))
    stream.apply(service_state("east", "api"))
    first = stream.apply(cluster_beat("east", revision=2), 0.0)
    assert first.change.everything and first.gateways_changed
    same = stream.apply(cluster_beat("east", revision=3), 1.0)
    assert same.outcome == "same" and not same.change
    moved = stream.apply(
        cluster_beat("east", revision=4, gateways=[Gateway(address="192.0.2.9", port=443)]), 2.0
    )
    assert moved.gateways_changed
    assert moved.change == ViewChange(services=frozenset({WEB, ServiceKey("default", "api")}))
    cidrs = stream.apply(
        cluster_beat(
            "east",
            revision=5,
            gateways=[Gateway(address="192.0.2.9", port=443)],
            client_cidrs=["10.1.0.0/16"],
        ),
        3.0,
    )
    assert cidrs.change.everything
    locality = stream.apply(
        cluster_beat(
            "east",
            revision=6,
            gateways=[Gateway(address="192.0.2.9", port=443)],
            client_cidrs=["10.1.0.0/16"],
            region="r2",
        ),
        4.0,
    )
    assert locality.change.everything
    old = stream.apply(cluster_beat("east", revision=5), 5.0)
    assert old.outcome == "stale-revision"


def test_too_many_services_is_rejected_and_changes_nothing() -> None:
    stream = make_stream(max_services_per_cluster=2)
    view = stream.view
    stream.apply(service_state("east", "a"))
    stream.apply(service_state("east", "b"))
    with pytest.raises(Rejected) as caught:
        stream.apply(service_state("east", "c"))
    assert caught.value.reason == "too-many-services"
    assert sorted(view.clusters["east"].services) == [("default", "a"), ("default", "b")]
    # Updating or deleting an existing service still works at the limit.
    assert (
        stream.apply(service_state("east", "a", revision=2, deleted=True, instances=[])).outcome
        == "applied"
    )
    assert stream.apply(service_state("east", "c", revision=3)).outcome == "applied"


def test_too_many_clusters_is_rejected() -> None:
    stream = make_stream(max_clusters=1)
    view = stream.view
    stream.apply(service_state("east", "web"))
    with pytest.raises(Rejected) as caught:
        stream.apply(cluster_beat("west"), 0.0)
    assert caught.value.reason == "too-many-clusters"
    assert not view.cluster_known("west")


def test_candidates_need_a_healthy_instance_a_beat_and_an_up_gateway() -> None:
    stream = make_stream()
    view = stream.view
    serving_cluster(stream, "east")
    stream.apply(service_state("east", "web"))
    assert [c.cluster for c in view.resolve(WEB, None).clusters] == ["east"]

    stream.apply(
        service_state(
            "east",
            "web",
            revision=5,
            instances=[instance(health="critical"), instance(id="i2", weight=0)],
        )
    )
    resolution = view.resolve(WEB, None)
    assert resolution.known and resolution.clusters == ()

    stream.apply(service_state("east", "web", revision=6, instances=[instance(health="warning")]))
    assert view.resolve(WEB, None).clusters[0].healthy_instances == 1

    view.set_gateway_status(GatewayId("east", "192.0.2.1", 443), DOWN)
    assert view.resolve(WEB, None).clusters == ()

    stream.apply(service_state("west", "web"))
    assert view.resolve(WEB, None, pinned="west").clusters == ()
    assert view.resolve(WEB, None, pinned="north").known is False


def test_only_up_gateways_are_answered() -> None:
    stream = make_stream()
    view = stream.view
    gateways = [Gateway(address="192.0.2.1", port=443), Gateway(address="192.0.2.2", port=443)]
    stream.apply(cluster_beat("east", gateways=gateways), 0.0)
    stream.apply(service_state("east", "web"))
    change = view.set_gateway_status(GatewayId("east", "192.0.2.1", 443), UP)
    assert change == ViewChange(services=frozenset({WEB}))
    assert view.set_gateway_status(GatewayId("east", "192.0.2.2", 443), DOWN) == ViewChange()
    (ranked,) = view.resolve(WEB, None).clusters
    assert [g.address for g in ranked.gateways] == ["192.0.2.1"]
    # A status for a gateway the beat does not announce changes nothing.
    assert not view.set_gateway_status(GatewayId("east", "198.51.100.1", 443), UP)


def test_client_class_is_the_longest_matching_prefix() -> None:
    stream = make_stream()
    view = stream.view
    stream.apply(cluster_beat("east", client_cidrs=["10.0.0.0/8"]), 0.0)
    stream.apply(cluster_beat("west", client_cidrs=["10.2.0.0/16", "2001:db8::/32"]), 0.0)
    assert view.client_class(ipaddress.ip_address("10.1.2.3")) == "east"
    assert view.client_class(ipaddress.ip_address("10.2.2.3")) == "west"
    assert view.client_class(ipaddress.ip_address("::ffff:10.2.0.1")) == "west"
    assert view.client_class(ipaddress.ip_address("2001:db8::1")) == "west"
    assert view.client_class(ipaddress.ip_address("192.168.1.1")) is None
    assert view.client_class(None) is None


def test_the_same_cidr_claimed_twice_goes_to_the_first_name_and_is_reported() -> None:
    stream = make_stream()
    view = stream.view
    stream.apply(cluster_beat("west", client_cidrs=["10.9.0.0/16"]), 0.0)
    stream.apply(cluster_beat("east", client_cidrs=["10.9.0.0/16"]), 0.0)
    assert view.client_class(ipaddress.ip_address("10.9.1.1")) == "east"
    assert view.cidr_conflicts == [("10.9.0.0/16", "east", "west")]


def test_instance_count_follows_updates_and_deletes() -> None:
    stream = make_stream()
    view = stream.view
    stream.apply(service_state("east", "web", instances=[instance(id="a"), instance(id="b")]))
    stream.apply(service_state("east", "api"))
    assert view.instance_count == 3
    stream.apply(service_state("east", "web", revision=2, instances=[instance(id="a")]))
    stream.apply(service_state("east", "api", revision=3, deleted=True, instances=[]))
    assert view.instance_count == 1
    assert view.service_count() == 1


def test_namespace_known_follows_services_in_it() -> None:
    stream = ScriptedStream(
        RegistryView(StaleConfig(), LimitsConfig(), Locality(), probes_required=False)
    )
    view = stream.view
    assert not view.namespace_known("shop")
    stream.apply(service_state("east", "orders", "shop"))
    assert view.namespace_known("shop")
    stream.apply(service_state("east", "orders", "shop", revision=2, instances=[], deleted=True))
    assert not view.namespace_known("shop")
