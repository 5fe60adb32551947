"""Epoch fencing in the view, claims read before the full read, retired clusters and
tombstone expiry, with scripted stream sequences and time."""

from __future__ import annotations

import ipaddress

import pytest

from global_registry.config import StaleConfig
from global_registry.core.ingest import Ingest
from global_registry.core.probe_fsm import ProbePhase
from global_registry.core.probes import GatewayId, GatewayStatus
from global_registry.core.view import RegistryView
from harness.samples import cluster_beat, epoch_claim, instance, service_state, subject_of
from syncmesh.limits import LimitsConfig
from syncmesh.schema import ClusterBeat, EpochClaim, Locality, ServiceState, encode
from syncmesh.validate import Rejected
from syncmesh.view_api import ServiceKey, ViewChange

pytestmark = pytest.mark.core

WEB = ServiceKey("default", "web")
API = ServiceKey("default", "api")


def make_view(tombstone_ttl_s: float = 86_400.0) -> RegistryView:
    return RegistryView(
        StaleConfig(tombstone_ttl_s=tombstone_ttl_s), LimitsConfig(), Locality(), False
    )


def addresses(view: RegistryView, key: ServiceKey = WEB, cluster: str = "east") -> list[str]:
    entry = view.clusters[cluster].services[(key.namespace, key.service)]
    return [i.address for i in entry.state.instances]


def rejection(view: RegistryView, message: ServiceState | ClusterBeat, seq: int) -> str:
    with pytest.raises(Rejected) as caught:
        view.apply(message, seq, now=0.0)
    assert caught.value.cluster == message.cluster
    return caught.value.reason


# -- fencing -------------------------------------------------------------------


def test_a_forged_epoch_far_ahead_is_rejected_and_does_not_freeze_the_cluster() -> None:
    view = make_view()
    view.apply_claim(epoch_claim("east"), 10)
    view.apply_service(service_state("east", "web", epoch=10, revision=1), 11, now=0.0)
    forged = service_state(
        "east", "web", epoch=10**12, revision=1, instances=[instance(address="10.6.6.6")]
    )
    assert rejection(view, forged, 12) == "future-epoch"
    assert addresses(view) == ["10.0.0.1"]
    # The real agent goes on: its next messages apply, for this key and any other.
    moved = service_state("east", "web", epoch=10, revision=2, instances=[instance("i2")])
    assert view.apply_service(moved, 13, now=0.0).outcome == "applied"
    assert view.apply_service(service_state("east", "api", epoch=10), 14, 0.0).outcome == "applied"
    assert view.epoch("east") == 10


def test_an_epoch_nobody_claimed_is_rejected_and_creates_no_cluster() -> None:
    view = make_view()
    view.apply_claim(epoch_claim("east"), 10)
    assert rejection(view, service_state("east", "web", epoch=15), 20) == "unclaimed-epoch"
    assert rejection(view, cluster_beat("west", epoch=3), 21) == "unclaimed-epoch"
    assert not view.cluster_known("east") and not view.cluster_known("west")


def test_a_deposed_agent_is_rejected_but_what_it_stored_before_the_takeover_stays() -> None:
    view = make_view()
    view.apply_claim(epoch_claim("east"), 10)
    view.apply_beat(cluster_beat("east", epoch=10, revision=1), 11, now=0.0)
    view.apply_service(service_state("east", "web", epoch=10, revision=2), 12, now=0.0)
    assert view.apply_claim(epoch_claim("east"), 100).outcome == "applied"
    # The old agent wakes up (a frozen VM resumed) and writes after the takeover.
    zombie_api = service_state("east", "api", epoch=10, revision=3)
    zombie_beat = cluster_beat("east", epoch=10, revision=4, interval_s=60.0)
    assert rejection(view, zombie_api, 101) == "deposed"
    assert rejection(view, zombie_beat, 102) == "deposed"
    assert addresses(view) == ["10.0.0.1"]
    rec = view.clusters["east"]
    assert rec.beat is not None and rec.beat.revision == 1
    assert ("default", "api") not in rec.services
    # The new agent's messages supersede everything of the old one.
    new = service_state("east", "web", epoch=100, revision=1, instances=[instance("n1")])
    assert view.apply_service(new, 103, now=0.0).outcome == "applied"
    assert view.epoch("east") == 100


def test_claims_read_again_or_replayed_change_nothing() -> None:
    view = make_view()
    assert view.apply_claim(epoch_claim("east"), 10).outcome == "applied"
    assert view.apply_claim(epoch_claim("east"), 10).outcome == "same"
    assert view.apply_claim(epoch_claim("east"), 5).outcome == "stale-revision"
    assert view.epoch("east") == 10


def feed(ingest: Ingest, message: ServiceState | ClusterBeat | EpochClaim, seq: int) -> str:
    result = ingest.handle(subject_of(message), encode(message), seq, now=0.0)
    return result.rejected.reason if result.rejected is not None else result.outcome


def test_claims_read_before_the_full_read_keep_pre_takeover_messages() -> None:
    """After a takeover the stream keeps only the newest claim (one message per subject),
    while the old agent's earlier messages are still stored before it."""
    stored = [
        (service_state("east", "web", epoch=10, revision=5), 11),  # before the takeover
        (epoch_claim("east"), 100),  # the new agent's claim; the old one at 10 is gone
        (service_state("east", "api", epoch=10, revision=6), 101),  # the deposed agent
        (service_state("east", "db", epoch=100, revision=1), 102),
    ]
    cold = Ingest(make_view(), LimitsConfig())
    claim = epoch_claim("east")
    assert cold.prime(subject_of(claim), encode(claim), 100)
    cold.begin(102, now=0.0)
    assert [feed(cold, m, seq) for m, seq in stored] == ["applied", "same", "deposed", "applied"]
    assert sorted(cold.view.clusters["east"].services) == [("default", "db"), ("default", "web")]
    # Met only at its place in the stream, the claim would come too late for web.
    unprimed = Ingest(make_view(), LimitsConfig())
    unprimed.begin(102, now=0.0)
    assert feed(unprimed, *stored[0]) == "unclaimed-epoch"


def test_priming_ignores_what_is_not_a_valid_claim() -> None:
    ingest = Ingest(make_view(), LimitsConfig())
    state = service_state("east", "web")
    assert not ingest.prime(subject_of(state), encode(state), 5)
    assert not ingest.prime(subject_of(epoch_claim("east")), b"{oops", 5)
    assert ingest.view.epoch("east") == 0 and ingest.counts == {}


# -- retired clusters ------------------------------------------------------------


def retired_setup() -> RegistryView:
    view = RegistryView(StaleConfig(), LimitsConfig(), Locality())
    for name, cidr, seq in (("east", "10.1.0.0/16", 10), ("west", "10.2.0.0/16", 20)):
        view.apply_claim(epoch_claim(name), seq)
        view.apply_beat(cluster_beat(name, epoch=seq, client_cidrs=[cidr]), seq + 1, now=0.0)
        view.set_gateway_status(
            GatewayId(name, "192.0.2.1", 443), GatewayStatus(phase=ProbePhase.UP, up=True)
        )
        view.apply_service(service_state(name, "web", epoch=seq, revision=2), seq + 2, now=0.0)
    view.apply_service(service_state("east", "api", "shop", epoch=10, revision=3), 13, now=0.0)
    return view


def test_a_retired_beat_forgets_the_cluster_and_every_service_of_it() -> None:
    view = retired_setup()
    # The operator's tool takes the cluster over, then retires it.
    view.apply_claim(epoch_claim("east"), 30)
    applied = view.apply_beat(cluster_beat("east", epoch=30, retired=True), 31, now=1.0)
    assert applied.outcome == "applied" and applied.gateways_changed
    assert applied.change == ViewChange(everything=True)
    assert not view.cluster_known("east")
    assert not view.namespace_known("shop")
    assert [c.cluster for c in view.resolve(WEB, None).clusters] == ["west"]
    assert view.client_class(ipaddress.ip_address("10.1.0.1")) is None
    assert [gw.cluster for gw in view.gateway_ids()] == ["west"]
    assert view.gateway_status(GatewayId("east", "192.0.2.1", 443)) is None
    assert view.instance_count == 1 and view.service_count() == 1


def test_a_retired_cluster_stays_fenced_against_older_epochs() -> None:
    view = retired_setup()
    view.apply_claim(epoch_claim("east"), 30)
    view.apply_beat(cluster_beat("east", epoch=30, retired=True), 31, now=1.0)
    # The old agent was not stopped after all: nothing of it comes back.
    assert rejection(view, service_state("east", "web", epoch=10, revision=50), 32) == "deposed"
    assert rejection(view, cluster_beat("east", epoch=10, revision=51), 33) == "deposed"
    assert not view.cluster_known("east")
    # A new agent for the same name claims anew and starts from nothing.
    view.apply_claim(epoch_claim("east"), 40)
    assert view.apply_service(service_state("east", "web", epoch=40), 41, now=2.0).outcome == (
        "applied"
    )
    assert sorted(view.clusters["east"].services) == [("default", "web")]


def test_an_old_or_unknown_retirement_changes_nothing() -> None:
    view = retired_setup()
    stale = view.apply_beat(cluster_beat("east", epoch=10, revision=1, retired=True), 14, 1.0)
    assert stale.outcome == "stale-revision" and view.cluster_known("east")
    view.apply_claim(epoch_claim("north"), 50)
    unknown = view.apply_beat(cluster_beat("north", epoch=50, retired=True), 51, now=1.0)
    assert unknown.outcome == "same" and not unknown.change
    assert not view.cluster_known("north")


# -- tombstone expiry ------------------------------------------------------------


def tombstoned(ttl: float = 100.0) -> RegistryView:
    view = make_view(tombstone_ttl_s=ttl)
    view.apply_claim(epoch_claim("east"), 1)
    view.apply_service(service_state("east", "web", revision=1), 2, now=0.0)
    view.apply_service(service_state("east", "web", revision=2, deleted=True), 3, now=0.0)
    return view


def test_a_tombstone_is_remembered_for_its_ttl_then_forgotten() -> None:
    view = tombstoned(ttl=100.0)
    assert view.next_deadline() == 100.0
    assert not view.tick(99.9)
    assert ("default", "web") in view.clusters["east"].tombstones
    older = service_state("east", "web", revision=1)
    assert view.apply_service(older, 4, now=99.9).outcome == "stale-revision"
    assert view.tick(100.0) == ViewChange(), "forgetting a tombstone changes no answer"
    assert view.clusters["east"].tombstones == {}
    assert view.next_deadline() is None
    # Only the fence and per-key ordering remain: an older revision of the same epoch is
    # accepted again (it could only come from the stream, which dropped the tombstone too).
    assert view.apply_service(older, 5, now=100.0).outcome == "applied"


def test_a_replayed_tombstone_expires_from_when_it_was_stored() -> None:
    view = make_view(tombstone_ttl_s=100.0)
    view.apply_claim(epoch_claim("east"), 1)
    deleted = service_state("east", "web", revision=2, deleted=True)
    assert view.apply_service(deleted, 2, now=500.0, age_s=60.0).outcome == "same"
    assert view.next_deadline() == 540.0
    assert view.expire_tombstones(540.0) == 1


def test_a_tombstone_replaced_meanwhile_keeps_its_own_expiry() -> None:
    view = tombstoned(ttl=100.0)
    view.apply_service(service_state("east", "web", revision=3), 4, now=10.0)  # back again
    assert view.clusters["east"].tombstones == {}
    view.apply_service(service_state("east", "web", revision=4, deleted=True), 5, now=50.0)
    assert view.expire_tombstones(100.0) == 0  # the first tombstone's turn: it is gone
    assert view.next_deadline() == 150.0
    assert view.expire_tombstones(150.0) == 1


def test_a_tombstone_of_a_retired_cluster_is_forgotten_with_it() -> None:
    view = tombstoned(ttl=100.0)
    view.apply_beat(cluster_beat("east", revision=3, retired=True), 4, now=1.0)
    assert view.expire_tombstones(1000.0) == 0
