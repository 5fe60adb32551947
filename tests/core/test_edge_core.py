"""EdgeCore: labels and collisions, filters, start-up reconciliation, beats, resync limiting."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_sync.config import EdgeConfig
from edge_sync.core.agent import EdgeCore, RemoteService
from edge_sync.core.model import ServiceRef, SourceService
from syncmesh.labels import assign_labels, to_label
from syncmesh.schema import Instance, decode_cluster_beat, encode

pytestmark = pytest.mark.core


def config(**extra: object) -> EdgeConfig:
    return msgspec.convert({"cluster": "east", **extra}, EdgeConfig)


def svc(
    name: str, n: int = 1, namespace: str = "default", health: str = "passing"
) -> SourceService:
    instances = tuple(
        Instance(id=f"{name}-{i}", address="10.0.0.1", port=1000 + i, health=health)  # type: ignore[arg-type]
        for i in range(n)
    )
    return SourceService(namespace=namespace, name=name, source_name=name, instances=instances)


def drain(core: EdgeCore) -> list:
    out = core.state.take(10_000)
    for o in out:
        core.state.acked(o)
    return [o.message for o in out]


def test_non_label_names_are_published_under_their_label() -> None:
    core = EdgeCore(config(), epoch=1, now=0.0)
    core.apply([svc("com.foo.Bar"), svc("orders")])
    published = {(m.service, m.source_name) for m in drain(core)}
    assert published == {(to_label("com.foo.Bar"), "com.foo.Bar"), ("orders", "orders")}


def test_collision_is_reported_never_merged_and_the_heir_takes_over() -> None:
    core = EdgeCore(config(), epoch=1, now=0.0)
    # "Foo" maps to "foo-<hash>"; a name spelled exactly like that label collides.
    clash = to_label("Foo")
    collisions = core.apply([svc("Foo", 1)])
    collisions += core.apply([svc(clash, 3)])
    kept = min("Foo", clash)  # the name that sorts first keeps the label, as in assign_labels
    assert [(c.label, c.kept, c.dropped) for c in collisions] == [(clash, kept, max("Foo", clash))]
    [msg] = drain(core)
    assert msg.source_name == kept  # one of them, never a union of both instance sets
    assert core.collision_count == 1
    core.apply(removed=[ServiceRef("default", kept)])
    [heir] = drain(core)
    assert heir.source_name == max("Foo", clash) and not heir.deleted
    assert core.collision_count == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "A", "a.b", "a_b", "A-B", "x", "X.Y", "x-y", "b"]), unique=True)
)
def test_incremental_labels_match_assign_labels(names: list[str]) -> None:
    core = EdgeCore(config(), epoch=1, now=0.0)
    core.apply([svc(n) for n in names])
    published = {m.service: m.source_name for m in drain(core)}
    expected, _ = assign_labels(names)
    assert published == {label: name for name, label in expected.items()}


def test_filters_are_opt_out_and_match_namespace_qualified_names() -> None:
    core = EdgeCore(config(filters={"exclude": ["internal-*", "prod/debug"]}), epoch=1, now=0.0)
    core.apply([svc("web"), svc("internal-db"), svc("debug", namespace="prod"), svc("debug")])
    assert sorted((m.namespace, m.service) for m in drain(core)) == [
        ("default", "debug"),
        ("default", "web"),
    ]
    assert core.filter.may_accept_name("web") and not core.filter.may_accept_name("internal-x")


def test_replace_all_tombstones_what_disappeared() -> None:
    core = EdgeCore(config(), epoch=1, now=0.0)
    core.replace_all([svc("a"), svc("b")])
    drain(core)
    core.replace_all([svc("b", 2)])
    msgs = {m.service: m for m in drain(core)}
    assert msgs["a"].deleted and msgs["a"].instances == []
    assert len(msgs["b"].instances) == 2


@pytest.mark.parametrize("remote_first", [True, False])
def test_start_up_reconciliation_tombstones_only_live_keys_the_source_lacks(
    remote_first: bool,
) -> None:
    core = EdgeCore(config(), epoch=2, now=0.0)
    remote = {
        ("default", "gone"): RemoteService("Gone.Svc", False),
        ("default", "dead"): RemoteService("dead", True),
        ("default", "kept"): RemoteService("kept", False),
    }
    core.apply([svc("kept")])
    if remote_first:
        assert core.remote_loaded(remote) == 0  # the source has not shown everything yet
        assert core.mark_source_synced() == 1
    else:
        assert core.mark_source_synced() == 0
        assert core.remote_loaded(remote) == 1
    msgs = {m.service: m for m in drain(core)}
    assert set(msgs) == {"gone", "kept"}
    assert msgs["gone"].deleted and msgs["gone"].source_name == "Gone.Svc"
    assert core.synced
    assert core.remote_loaded(remote) == 0  # once per agent life


def test_not_synced_until_everything_is_acknowledged() -> None:
    core = EdgeCore(config(), epoch=1, now=0.0)
    core.apply([svc("a")])
    core.mark_source_synced()
    core.remote_loaded({})
    assert not core.synced
    drain(core)
    assert core.synced


def test_beat_carries_topology_health_and_digest() -> None:
    cfg = config(
        gateways=[{"address": "192.0.2.1", "port": 443, "weight": 5}],
        locality={"region": "eu", "zone": "eu-1a"},
        client_cidrs=["10.1.0.0/16"],
        beat_interval_s=3.0,
    )
    core = EdgeCore(cfg, epoch=7, now=0.0, agent_version="1.2.3")
    core.apply([svc("a")])
    drain(core)
    core.source_failed("consul_connect", "connection refused")
    beat = decode_cluster_beat(encode(core.beat(sent_at=123.0)))
    assert beat.gateways[0].address == "192.0.2.1" and beat.gateways[0].weight == 5
    assert (beat.locality.region, beat.locality.zone) == ("eu", "eu-1a")
    assert beat.client_cidrs == ["10.1.0.0/16"] and beat.interval_s == 3.0
    assert beat.source_health == "degraded" and "connection refused" in beat.source_error
    assert beat.services == 1 and beat.digest == core.state.service_set_digest()[1]
    assert beat.agent_version == "1.2.3" and beat.epoch == 7 and beat.revision == 2
    core.source_recovered()
    assert core.beat(sent_at=0.0).source_health == "ok"


def test_resync_requests_are_rate_limited_but_never_lost() -> None:
    core = EdgeCore(config(), epoch=1, now=0.0)
    core.apply([svc("a"), svc("b")])
    drain(core)
    assert core.resync_requested(now=0.0) and core.state.dirty_count == 2
    drain(core)
    assert core.resync_requested(now=0.1)  # burst of 2
    drain(core)
    assert not core.resync_requested(now=0.2)  # flood: deferred
    assert not core.resync_due(now=1.0)
    assert core.resync_due(now=5.5)  # kept and done once a token is back
    assert core.state.dirty_count == 2
    assert not core.resync_due(now=100.0)  # done once, not again


def test_counts_follow_the_source() -> None:
    core = EdgeCore(config(), epoch=1, now=0.0)
    core.apply([svc("a", 3), svc("b", 2)])
    assert (core.service_count, core.instance_count) == (2, 5)
    core.apply([svc("a", 1)], [ServiceRef("default", "b")])
    assert (core.service_count, core.instance_count) == (1, 1)


def test_a_state_the_registry_would_reject_is_never_taken_for_publishing() -> None:
    core = EdgeCore(config(limits={"max_instances_per_service": 2}), epoch=1, now=0.0)
    core.apply([svc("big", 3), svc("small", 1)])
    batch = core.take_batch(10)
    assert [o.message.service for o in batch.outgoing] == ["small"]
    [(sent, rejected)] = batch.rejected
    assert sent.message.service == "big" and rejected.reason == "too-many-instances"
    for o in batch.outgoing:
        core.state.acked(o)
    # Settled, not retried in a loop; the stream keeps what it had, as the registry would.
    assert core.state.dirty_count == 0 and core.state.inflight_count == 0
    core.apply([svc("big", 2)])  # back within the limit: published
    assert [o.message.service for o in core.take_batch(10).outgoing] == ["big"]


def test_every_outgoing_message_passes_the_registry_validator() -> None:
    from syncmesh.limits import LimitsConfig
    from syncmesh.validate import validate_message

    core = EdgeCore(config(), epoch=1, now=0.0)
    core.apply([svc("com.foo.Bar", 2), svc("web", 1, namespace="prod")])
    for o in core.take_batch(10).outgoing:
        assert validate_message(o.subject, o.data, LimitsConfig()) == o.message
    beat = core.beat_message(sent_at=1.0)
    assert validate_message(beat.subject, beat.data, LimitsConfig()) == beat.beat


def test_a_beat_the_registry_would_reject_is_refused() -> None:
    from syncmesh.validate import Rejected

    core = EdgeCore(config(limits={"max_message_bytes": 64}), epoch=1, now=0.0)
    problem = core.config_problem()
    assert problem is not None and problem.reason == "oversize"
    with pytest.raises(Rejected):
        core.beat_message(sent_at=1.0)
    assert EdgeCore(config(), epoch=1, now=0.0).config_problem() is None


def test_ready_once_the_source_was_read_the_epoch_claimed_and_nats_connected() -> None:
    core = EdgeCore(config(), now=0.0)
    assert not core.readiness(nats_connected=True, deposed=False).ready
    core.mark_source_synced()
    assert not core.readiness(nats_connected=True, deposed=False).ready  # no claim yet
    core.set_epoch(5)
    assert core.readiness(nats_connected=True, deposed=False).ready
    assert not core.readiness(nats_connected=False, deposed=False).ready
    assert not core.readiness(nats_connected=True, deposed=True).ready
    core.source_failed("consul_connect", "refused")  # degraded later: still ready, says why
    report = core.readiness(nats_connected=True, deposed=False)
    assert report.ready and report.source_health == "degraded"
