"""Catching up with the stream, JetStream metadata, and the read-only projections of the view."""

from __future__ import annotations

import msgspec
import pytest

from global_registry.config import StaleConfig
from global_registry.core.ingest import Ingest
from global_registry.core.jsmeta import AckInfo, parse_ack_reply, parse_ack_reply_bytes
from global_registry.core.probe_fsm import ProbePhase
from global_registry.core.probes import GatewayId, GatewayStatus
from global_registry.core.snapshot import inventory, resolve_reply
from global_registry.core.view import RegistryView
from global_registry.io.api import inventory_reply_bytes
from harness.samples import (
    ScriptedStream,
    cluster_beat,
    epoch_claim,
    instance,
    service_state,
    subject_of,
)
from syncmesh.labels import to_label
from syncmesh.limits import LimitsConfig
from syncmesh.schema import Inventory, InventoryRequest, Locality, ResolveRequest, encode
from syncmesh.view_api import ServiceKey, ViewChange

pytestmark = pytest.mark.core


def new_ingest() -> Ingest:
    return Ingest(RegistryView(StaleConfig(), LimitsConfig(), Locality()), LimitsConfig())


def feed(ingest: Ingest, message: object, seq: int, pending: int | None = None, now: float = 1.0):  # type: ignore[no-untyped-def]
    return ingest.handle(subject_of(message), encode(message), seq, now, pending=pending)  # type: ignore[arg-type]


def test_no_changes_while_catching_up_then_one_everything() -> None:
    ingest = new_ingest()
    assert not ingest.begin(4, now=0.0)
    claim = feed(ingest, epoch_claim("east"), seq=1, pending=3)
    first = feed(ingest, service_state("east", "web"), seq=2, pending=2)
    second = feed(ingest, service_state("east", "api"), seq=3, pending=1)
    assert claim.outcome == first.outcome == second.outcome == "applied"
    assert not claim.change and not first.change and not second.change
    last = feed(ingest, service_state("east", "db"), seq=4, pending=0, now=2.5)
    assert last.caught_up_now and last.change == ViewChange(everything=True)
    assert ingest.caught_up and ingest.caught_up_at == 2.5
    live = feed(
        ingest,
        service_state("east", "web", revision=2, instances=[instance(health="critical")]),
        seq=5,
        pending=0,
    )
    assert live.change == ViewChange(services=frozenset({ServiceKey("default", "web")}))


def test_pending_zero_ends_catch_up_even_below_the_target_sequence() -> None:
    ingest = new_ingest()
    ingest.begin(100, now=0.0)
    assert feed(ingest, epoch_claim("east"), seq=1, pending=1).outcome == "applied"
    assert feed(ingest, service_state("east", "web"), seq=7, pending=0).caught_up_now


def test_an_empty_stream_is_caught_up_at_once() -> None:
    ingest = new_ingest()
    assert ingest.begin(0, now=0.0)
    assert ingest.mark_caught_up(1.0) == ViewChange()


def test_outcomes_are_counted_by_kind() -> None:
    ingest = new_ingest()
    ingest.begin(0, 0.0)
    feed(ingest, epoch_claim("east"), 1)
    feed(ingest, cluster_beat("east"), 2)
    feed(ingest, service_state("east", "web"), 3)
    feed(ingest, service_state("east", "web"), 4)
    feed(ingest, service_state("east", "web", epoch=9), 5)
    ingest.handle("syncmesh.v2.other.east", b"{}", 6, 1.0)
    assert ingest.counts == {
        ("epoch", "applied"): 1,
        ("cluster", "applied"): 1,
        ("svc", "rejected"): 1,
        ("unknown", "rejected"): 1,
        ("svc", "applied"): 1,
        ("svc", "stale-revision"): 1,
    }


def test_parse_ack_reply_v1_and_v2() -> None:
    v1 = "$JS.ACK.SYNCMESH_V2.c1.1.42.7.1700000000123456789.5"
    assert parse_ack_reply(v1) == AckInfo(42, 7, 1700000000123456789, 5)
    assert parse_ack_reply(v1).stored_at == pytest.approx(1700000000.123456789)  # type: ignore[union-attr]
    assert parse_ack_reply_bytes(v1.encode()) == parse_ack_reply(v1)
    v2 = "$JS.ACK.hub.ACCHASH.SYNCMESH_V2.c1.1.42.7.1700000000000000000.0.token"
    assert parse_ack_reply(v2) == AckInfo(42, 7, 1700000000000000000, 0)
    assert parse_ack_reply("_INBOX.abc") is None
    assert parse_ack_reply("$JS.ACK.S.c.x.y.z.t.p") is None


def serving_view() -> RegistryView:
    stream = ScriptedStream(RegistryView(StaleConfig(), LimitsConfig(), Locality()))
    view = stream.view
    for name, cidr in (("east", "10.1.0.0/16"), ("west", "10.2.0.0/16")):
        stream.apply(cluster_beat(name, client_cidrs=[cidr]))
        view.set_gateway_status(
            GatewayId(name, "192.0.2.1", 443), GatewayStatus(phase=ProbePhase.UP, up=True)
        )
        stream.apply(service_state(name, "web"))
    stream.apply(service_state("east", "billing", "payments"))
    stream.apply(service_state("east", to_label("com.foo.Bar"), source_name="com.foo.Bar"))
    return view


def test_inventory_filters_by_cluster_and_namespace() -> None:
    view = serving_view()
    everything = inventory(view)
    assert [c.cluster for c in everything.clusters] == ["east", "west"]
    assert len(everything.services) == 4
    east_payments = inventory(view, cluster="east", namespace="payments")
    assert [(s.cluster, s.namespace, s.service) for s in east_payments.services] == [
        ("east", "payments", "billing")
    ]
    assert [c.cluster for c in inventory(view, namespace="payments").clusters] == ["east", "west"]


def test_resolve_reply_ranks_for_the_client_and_maps_source_names() -> None:
    view = serving_view()
    reply = resolve_reply(view, ResolveRequest(service="web", client="10.2.0.9"))
    assert reply.known and [c.cluster for c in reply.clusters] == ["west", "east"]
    mapped = resolve_reply(view, ResolveRequest(service="com.foo.Bar"))
    assert mapped.service == to_label("com.foo.Bar") and mapped.known
    bad = resolve_reply(view, ResolveRequest(service="web", client="not-an-ip"))
    assert bad.error and not bad.known
    unknown = resolve_reply(view, ResolveRequest(service="nothing"))
    assert not unknown.known and unknown.clusters == []


def test_an_inventory_too_large_for_a_reply_asks_for_filters() -> None:
    view = serving_view()
    small = inventory_reply_bytes(view, InventoryRequest(cluster="west"), max_bytes=100_000)
    assert msgspec.json.decode(small, type=Inventory).services[0].cluster == "west"
    too_big = msgspec.json.decode(
        inventory_reply_bytes(view, InventoryRequest(), max_bytes=200), type=Inventory
    )
    assert "filter" in too_big.error and too_big.services == []
