"""PublishState: coalescing, revisions, acknowledgements, tombstones, the set digest."""

from __future__ import annotations

import hashlib

import pytest

from edge_sync.core.publish_state import PublishState
from syncmesh import subjects
from syncmesh.schema import Instance, decode_service_state, encode

pytestmark = pytest.mark.core


def inst(i: int, health: str = "passing") -> Instance:
    return Instance(id=f"i{i}", address=f"10.0.0.{i}", port=80, health=health)  # type: ignore[arg-type]


def test_first_message_carries_full_sorted_state_and_valid_schema() -> None:
    state = PublishState("east", epoch=1000, source_kind="file")
    assert state.set_service(("default", "web"), "web", [inst(3), inst(1), inst(2)])
    [out] = state.take(10)
    assert out.subject == subjects.service_subject("east", "default", "web")
    msg = out.message
    assert (msg.cluster, msg.namespace, msg.service, msg.epoch, msg.revision) == (
        "east",
        "default",
        "web",
        1000,
        1,
    )
    assert [i.id for i in msg.instances] == ["i1", "i2", "i3"]
    # The message survives the consumers' validating decoder.
    assert decode_service_state(encode(msg)) == msg


def test_unchanged_content_is_not_published_again() -> None:
    state = PublishState("east", 1, "file")
    state.set_service(("default", "web"), "web", [inst(1)])
    state.acked(state.take(10)[0])
    assert not state.set_service(("default", "web"), "web", [inst(1)])
    assert state.dirty_count == 0
    assert state.take(10) == []


def test_many_changes_while_offline_coalesce_into_one_publish_of_the_latest() -> None:
    state = PublishState("east", 1, "consul")
    key = ("default", "web")
    for n in range(1, 50):
        state.set_service(key, "web", [inst(i) for i in range(n)])
    batch = state.take(100)
    assert len(batch) == 1
    assert len(batch[0].message.instances) == 49


def test_failed_publish_stays_dirty_and_gets_a_new_revision() -> None:
    state = PublishState("east", 1, "file")
    state.set_service(("default", "web"), "web", [inst(1)])
    first = state.take(10)[0]
    state.failed(first)
    assert state.dirty_count == 1
    second = state.take(10)[0]
    assert second.message.revision == first.message.revision + 1
    state.acked(second)
    assert state.dirty_count == 0


def test_change_during_flight_is_republished_after_the_ack_not_concurrently() -> None:
    state = PublishState("east", 1, "file")
    key = ("default", "web")
    state.set_service(key, "web", [inst(1)])
    flying = state.take(10)[0]
    state.set_service(key, "web", [inst(1, "critical")])
    assert state.take(10) == []  # one message per key in flight
    state.acked(flying)
    again = state.take(10)
    assert len(again) == 1 and again[0].message.instances[0].health == "critical"


def test_change_and_change_back_before_drain_sends_nothing() -> None:
    state = PublishState("east", 1, "file")
    key = ("default", "web")
    state.set_service(key, "web", [inst(1)])
    state.acked(state.take(10)[0])
    state.set_service(key, "web", [inst(2)])
    state.set_service(key, "web", [inst(1)])
    assert state.dirty_count == 0


def test_tombstone_is_published_once_then_forgotten() -> None:
    state = PublishState("east", 1, "file")
    key = ("default", "web")
    state.set_service(key, "web", [inst(1)])
    state.acked(state.take(10)[0])
    assert state.set_tombstone(key)
    [out] = state.take(10)
    assert out.message.deleted and out.message.instances == [] and out.message.source_name == "web"
    state.acked(out)
    assert state.desired(key) is None  # bounded memory
    assert not state.set_tombstone(key)  # nothing left to delete
    assert state.set_tombstone(key, "web", force=True)  # reconciliation may still ask


def test_revision_counter_is_shared_by_every_message() -> None:
    state = PublishState("east", 1, "file")
    state.set_service(("default", "a"), "a", [inst(1)])
    state.set_service(("default", "b"), "b", [inst(1)])
    revs = [o.message.revision for o in state.take(10)]
    assert revs == [1, 2]
    assert state.next_revision() == 3


def test_batches_are_bounded_and_oldest_first() -> None:
    state = PublishState("east", 1, "file")
    for n in range(10):
        state.set_service(("default", f"s{n}"), f"s{n}", [inst(1)])
    first = state.take(4)
    assert [o.key[1] for o in first] == ["s0", "s1", "s2", "s3"]
    assert state.dirty_count == 6


def test_mark_all_dirty_republishes_everything() -> None:
    state = PublishState("east", 1, "file")
    for n in range(3):
        state.set_service(("default", f"s{n}"), f"s{n}", [inst(1)])
    for out in state.take(10):
        state.acked(out)
    assert state.mark_all_dirty() == 3
    assert len(state.take(10)) == 3


def test_service_set_digest_covers_acknowledged_live_services() -> None:
    state = PublishState("east", 1, "file")
    state.set_service(("default", "a"), "a", [inst(1)])
    state.set_service(("prod", "b"), "b", [inst(1)])
    state.set_service(("default", "c"), "c", [inst(1)])
    outs = state.take(10)
    for out in outs[:2]:
        state.acked(out)
    count, digest = state.service_set_digest()
    lines = sorted(
        f"{o.key[0]}/{o.key[1]}={o.message.epoch}.{o.message.revision}\n" for o in outs[:2]
    )
    assert count == 2
    assert digest == hashlib.sha256("".join(lines).encode()).hexdigest()
