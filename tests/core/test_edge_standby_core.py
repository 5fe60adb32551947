"""Standby agents, pure parts: the lease verdict, the standby roster, adopting what the
stream holds (a takeover republishes nothing unchanged), stepping down, outbidding."""

from __future__ import annotations

import msgspec
import pytest

from edge_sync.config import EdgeConfig
from edge_sync.core.agent import EdgeCore, RemoteService
from edge_sync.core.lease import LeaseReading, StandbyRoster, Verdict, judge, poll_interval
from edge_sync.core.model import SourceService
from edge_sync.core.publish_state import Held, PublishState, content_digest
from syncmesh.digest import service_set_digest
from syncmesh.schema import Instance, ServiceState

pytestmark = pytest.mark.core


# -- the lease ---------------------------------------------------------------------


def test_no_claim_is_free_and_may_be_claimed() -> None:
    decision = judge(LeaseReading(), lease_beats=3, own_interval_s=2.0)
    assert decision.verdict is Verdict.FREE and decision.may_claim(starting=False)
    assert decision.lease_s == 6.0


def test_a_fresh_beat_of_the_claimant_holds_the_lease() -> None:
    reading = LeaseReading(
        claim_seq=7, claim_agent="a:1", claim_age_s=100.0, beat_epoch=7, beat_age_s=1.5,
        beat_interval_s=2.0,
    )  # fmt: skip
    decision = judge(reading, lease_beats=3, own_interval_s=1.0)
    assert decision.verdict is Verdict.HELD and not decision.may_claim(starting=True)
    # The leader's own interval counts, not the standby's.
    assert decision.lease_s == 6.0 and decision.remaining_s == pytest.approx(4.5)


def test_silence_for_the_lease_time_expires_it() -> None:
    reading = LeaseReading(
        claim_seq=7, claim_age_s=100.0, beat_epoch=7, beat_age_s=6.0, beat_interval_s=2.0
    )
    decision = judge(reading, lease_beats=3, own_interval_s=2.0)
    assert decision.verdict is Verdict.EXPIRED and decision.may_claim(starting=False)
    assert decision.silent_s == 6.0


def test_a_fresh_claim_without_a_beat_yet_holds_the_lease() -> None:
    # A standby that just won: its first beat is on the way.
    reading = LeaseReading(
        claim_seq=9, claim_age_s=0.2, beat_epoch=7, beat_age_s=8.0, beat_interval_s=2.0
    )
    assert judge(reading, 3, 2.0).verdict is Verdict.HELD


def test_beats_of_an_older_epoch_say_nothing_about_the_claimant() -> None:
    # The deposed leader's beat is newer in age but carries the old epoch: the new
    # claimant, silent since its claim, lost the lease.
    reading = LeaseReading(
        claim_seq=9, claim_age_s=7.0, beat_epoch=7, beat_age_s=0.1, beat_interval_s=2.0
    )
    assert judge(reading, 3, 2.0).verdict is Verdict.EXPIRED


def test_a_claim_whose_age_is_unknown_is_never_usurped() -> None:
    reading = LeaseReading(claim_seq=9)
    assert judge(reading, 3, 2.0).verdict is Verdict.HELD


def test_server_clock_ahead_of_the_stored_time_is_clamped() -> None:
    reading = LeaseReading(claim_seq=9, claim_age_s=-3.0)
    decision = judge(reading, 3, 2.0)
    assert decision.verdict is Verdict.HELD and decision.silent_s == 0.0


def test_a_retired_cluster_is_claimed_by_a_new_agent_but_not_revived_by_a_standby() -> None:
    reading = LeaseReading(
        claim_seq=9, claim_age_s=50.0, beat_epoch=9, beat_age_s=50.0, beat_interval_s=2.0,
        beat_retired=True,
    )  # fmt: skip
    decision = judge(reading, 3, 2.0)
    assert decision.verdict is Verdict.RETIRED
    assert decision.may_claim(starting=True) and not decision.may_claim(starting=False)


def test_poll_interval() -> None:
    assert poll_interval(0.0, 2.0) == 1.0
    assert poll_interval(0.0, 0.3) == 0.15
    assert poll_interval(0.0, 0.01) == 0.05
    assert poll_interval(0.4, 2.0) == 0.4


def test_roster_counts_standbys_heard_within_their_lease() -> None:
    roster = StandbyRoster(lease_beats=3)
    roster.heard("b:2", interval_s=1.0, now=10.0)
    roster.heard("c:3", interval_s=1.0, now=11.0)
    roster.heard("b:2", interval_s=1.0, now=12.0)  # again: still one
    assert roster.count(12.5) == 2
    assert roster.agents(13.5) == ["b:2", "c:3"]
    assert roster.count(14.1) == 1  # c:3 silent for 3 intervals
    assert roster.count(15.0) == 0
    roster.heard("d:4", 1.0, 20.0)
    roster.clear()
    assert roster.count(20.0) == 0


# -- adopting the stream -----------------------------------------------------------


def inst(i: int, port: int = 80) -> Instance:
    return Instance(id=f"i{i}", address=f"10.0.0.{i}", port=port)


def held(source_name: str, instances: list[Instance], epoch: int, revision: int) -> Held:
    return Held(content_digest(source_name, instances, False), epoch, revision, live=True)


def test_adopted_keys_equal_to_the_stream_are_not_published_again() -> None:
    state = PublishState("east", epoch=20, source_kind="file")
    state.set_service(("default", "same"), "same", [inst(2), inst(1)])
    state.set_service(("default", "changed"), "changed", [inst(1)])
    state.set_service(("default", "new"), "new", [inst(1)])
    pending = state.adopt_stream(
        {
            ("default", "same"): held("same", [inst(1), inst(2)], 5, 3),  # other order
            ("default", "changed"): held("changed", [inst(1, port=81)], 5, 4),
        }
    )
    assert pending == 2
    assert sorted(o.key[1] for o in state.take(10)) == ["changed", "new"]
    # The digest names what the stream holds now: the adopted key with its old order.
    count, digest = state.service_set_digest()
    assert (count, digest) == service_set_digest(
        [("default", "same", 5, 3), ("default", "changed", 5, 4)]
    )


def test_held_keys_seed_services_the_source_reports_later() -> None:
    state = PublishState("east", epoch=20, source_kind="file")
    state.adopt_stream({("default", "late"): held("late", [inst(1)], 5, 9)})
    assert state.service_set_digest() == service_set_digest([("default", "late", 5, 9)])
    state.set_service(("default", "late"), "late", [inst(1)])
    assert state.dirty_count == 0  # the stream already has exactly that
    state.set_service(("default", "late"), "late", [inst(2)])
    assert state.dirty_count == 1
    state.forget_held()
    assert state.service_set_digest() == service_set_digest([("default", "late", 5, 9)])


def test_a_wanted_tombstone_with_nothing_in_the_stream_is_forgotten() -> None:
    state = PublishState("east", epoch=20, source_kind="file")
    state.set_service(("default", "gone"), "gone", [inst(1)])
    state.set_tombstone(("default", "gone"))
    state.adopt_stream({})
    assert state.dirty_count == 0 and state.desired(("default", "gone")) is None


def test_unreadable_stream_content_is_republished_and_not_in_the_digest() -> None:
    state = PublishState("east", epoch=20, source_kind="file")
    state.set_service(("default", "web"), "web", [inst(1)])
    state.adopt_stream({("default", "web"): Held(b"", 0, 0, live=False)})
    assert state.dirty_count == 1
    assert state.service_set_digest() == service_set_digest([])


def config(**extra: object) -> EdgeConfig:
    return msgspec.convert({"cluster": "east", **extra}, EdgeConfig)


def svc(name: str, instances: tuple[Instance, ...]) -> SourceService:
    return SourceService(namespace="default", name=name, source_name=name, instances=instances)


def remote(
    name: str, instances: list[Instance], epoch: int, revision: int, seq: int
) -> RemoteService:
    state = ServiceState(
        schema=2, cluster="east", namespace="default", service=name, epoch=epoch,
        revision=revision, source="file", source_name=name, instances=instances,
    )  # fmt: skip
    return RemoteService(name, False, state, seq)


def test_takeover_publishes_only_what_differs_and_tombstones_what_is_gone() -> None:
    core = EdgeCore(config(), now=0.0, agent="b:2")
    core.apply([svc("same", (inst(1),)), svc("changed", (inst(2),)), svc("new", (inst(3),))])
    core.mark_source_synced()
    core.set_epoch(40)
    queued = core.remote_loaded(
        {
            ("default", "same"): remote("same", [inst(1)], 10, 5, seq=30),
            ("default", "changed"): remote("changed", [inst(9)], 10, 6, seq=31),
            ("default", "gone"): remote("gone", [inst(4)], 10, 7, seq=32),
        }
    )
    assert queued == 1  # the tombstone of "gone"
    out = {o.key[1]: o.message for o in core.state.take(10)}
    assert set(out) == {"changed", "new", "gone"} and out["gone"].deleted
    assert all(m.epoch == 40 for m in out.values())
    beat = core.beat(sent_at=0.0)
    assert beat.leader == "b:2"
    # Before the acknowledgements the stream still holds the old messages.
    assert (beat.services, beat.digest) == service_set_digest(
        [
            ("default", "same", 10, 5),
            ("default", "changed", 10, 6),
            ("default", "gone", 10, 7),
        ]
    )


def test_stream_content_a_consumer_would_reject_is_not_adopted() -> None:
    core = EdgeCore(config(), now=0.0)
    core.apply([svc("a", (inst(1),)), svc("b", (inst(1),)), svc("c", (inst(1),))])
    core.mark_source_synced()
    core.set_epoch(40)
    core.remote_loaded(
        {
            # epoch not below its own sequence: forged
            ("default", "a"): remote("a", [inst(1)], 50, 5, seq=30),
            # above our own epoch: nobody we know claimed it
            ("default", "b"): remote("b", [inst(1)], 45, 5, seq=46),
            ("default", "c"): RemoteService("c", False, None, 33),  # undecodable
        }
    )
    assert sorted(o.key[1] for o in core.state.take(10)) == ["a", "b", "c"]


def test_outbid_continues_above_revisions_of_our_epoch() -> None:
    core = EdgeCore(config(), now=0.0)
    core.set_epoch(40)
    assert core.outbid({("default", "x"): remote("x", [], 40, 900, seq=60)}) == 900
    assert core.outbid({("default", "x"): remote("x", [], 39, 5000, seq=38)}) == 900
    core.apply([svc("x", (inst(1),))])
    [out] = core.state.take(10)
    assert out.message.revision == 901


def test_step_down_stops_publishing_and_a_new_term_reconciles_again() -> None:
    core = EdgeCore(config(), now=0.0, agent="a:1")
    core.apply([svc("web", (inst(1),))])
    core.mark_source_synced()
    core.set_epoch(10)
    core.remote_loaded({})
    for o in core.state.take(10):
        core.state.acked(o)
    assert core.readiness(True, deposed=False).role == "leader"
    core.step_down()
    assert core.epoch == 0 and not core.reconciled
    standby = core.readiness(True, deposed=False, standby=True)
    assert standby.ready and standby.role == "standby"
    assert not core.readiness(True, deposed=False).ready  # neither claimed nor standing by
    # The successor tombstoned "web" and published "api"; the source changes meanwhile.
    core.apply([svc("web", (inst(2),))])
    core.set_epoch(50)
    core.remote_loaded(
        {
            ("default", "web"): RemoteService("web", True, None, 44),
            ("default", "api"): remote("api", [inst(1)], 30, 3, seq=45),
        }
    )
    out = {o.key[1]: o.message for o in core.state.take(10)}
    assert set(out) == {"web", "api"} and out["api"].deleted and not out["web"].deleted
