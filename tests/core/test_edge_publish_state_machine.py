"""PublishState against a simple model: any interleaving converges once the bus is healthy.

The machine drives set / tombstone / take / acked / failed / mark_all_dirty (and the
adapter's crash path, requeue_inflight, a takeover's adopt_stream, and the read-back
of keys whose stream content is unknown, unread/observed) in any order, with a
simulated JetStream that keeps the last message per subject. Whatever happened,
draining with a healthy bus afterwards (and reading back what the table asks for)
publishes and acknowledges every desired state, the table forgets acknowledged
tombstones, and the service-set digest names exactly the live messages the stream holds.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edge_sync.core.publish_state import Held, Key, Outgoing, PublishState, content_digest
from syncmesh.digest import service_set_digest
from syncmesh.schema import Instance, ServiceState

pytestmark = pytest.mark.core

KEYS: list[Key] = [("default", "a"), ("default", "b"), ("prod", "a")]
CONTENTS = [
    (),
    (Instance(id="i1", address="10.0.0.1", port=80),),
    (Instance(id="i1", address="10.0.0.1", port=80, health="critical"),),
    (
        Instance(id="i2", address="10.0.0.2", port=81),
        Instance(id="i1", address="10.0.0.1", port=80),
    ),
]
TOMBSTONE = None  # the model's desire for a deleted service

keys = st.sampled_from(KEYS)


class PublishStateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = PublishState("east", epoch=3, source_kind="file")
        # key -> desired instances (TOMBSTONE: deleted); keys never set are absent.
        self.desired: dict[Key, tuple[Instance, ...] | None] = {}
        self.bus: list[Outgoing] = []  # handed out by take(), not yet reported back
        self.stale: list[Outgoing] = []  # given up on by requeue_inflight()
        self.stream: dict[Key, ServiceState] = {}  # JetStream: last message per subject
        # Content the registry's validator refused, per key: never published, so a key
        # whose desire is that content keeps what the stream had.
        self.rejected: dict[Key, tuple[Instance, ...]] = {}

    def _store(self, sent: Outgoing) -> None:
        previous = self.stream.get(sent.key)
        # One message per key in flight: what lands later is always newer, so the
        # stream's last message is also the one every consumer keeps.
        assert previous is None or previous.revision < sent.message.revision
        self.stream[sent.key] = sent.message

    # -- the source ----------------------------------------------------------
    @rule(key=keys, content=st.sampled_from(CONTENTS))
    def set_service(self, key: Key, content: tuple[Instance, ...]) -> None:
        self.state.set_service(key, key[1], content)
        self.desired[key] = tuple(sorted(content, key=lambda i: i.id))

    @rule(key=keys)
    def tombstone(self, key: Key) -> None:
        self.state.set_tombstone(key)
        if key in self.desired:
            self.desired[key] = TOMBSTONE

    @rule(key=keys)
    def reconcile_tombstone(self, key: Key) -> None:
        # Start-up reconciliation: a key only the stream knows about.
        if self.desired.get(key, TOMBSTONE) is TOMBSTONE:
            self.state.set_tombstone(key, key[1], force=True)
            self.desired[key] = TOMBSTONE

    @rule()
    def mark_all_dirty(self) -> None:
        # A resync republishes everything; in this model the bus accepts it all.
        self.state.mark_all_dirty()
        self.rejected.clear()

    @rule()
    def adopt_stream(self) -> None:
        # A takeover (or a start) reads the stream with nothing in flight.
        if self.bus:
            return
        held = {
            key: Held(
                content_digest(m.source_name, m.instances, m.deleted),
                m.epoch,
                m.revision,
                not m.deleted,
            )
            for key, m in self.stream.items()
        }
        self.state.adopt_stream(held)

    def _read_back(self, key: Key) -> None:
        # The adapter reads the key's last message (nothing of it is in flight then).
        m = self.stream.get(key)
        held = (
            None
            if m is None
            else Held(
                content_digest(m.source_name, m.instances, m.deleted),
                m.epoch,
                m.revision,
                not m.deleted,
            )
        )
        self.state.observed(key, held)

    @rule(data=st.data())
    def read_back(self, data: st.DataObject) -> None:
        flying = {o.key for o in self.bus}
        unread = [k for k in self.state.unread() if k not in flying]
        if unread:
            self._read_back(data.draw(st.sampled_from(unread)))

    @rule()
    def forget_held(self) -> None:
        self.state.forget_held()

    # -- the NATS adapter ----------------------------------------------------
    @rule(limit=st.integers(1, 4))
    def take(self, limit: int) -> None:
        taken = self.state.take(limit)
        assert len(taken) <= limit
        assert not {o.key for o in taken} & {o.key for o in self.bus}  # one in flight per key
        self.bus.extend(taken)

    @rule(data=st.data())
    def acked(self, data: st.DataObject) -> None:
        if self.bus:
            sent = self.bus.pop(data.draw(st.integers(0, len(self.bus) - 1)))
            self._store(sent)
            self.state.acked(sent)

    @rule(data=st.data(), landed=st.booleans())
    def failed(self, data: st.DataObject, landed: bool) -> None:
        # landed: stored by the server, but the acknowledgement was lost (timeout).
        if self.bus:
            sent = self.bus.pop(data.draw(st.integers(0, len(self.bus) - 1)))
            if landed:
                self._store(sent)
            self.state.failed(sent)

    @rule(data=st.data())
    def unpublishable(self, data: st.DataObject) -> None:
        # The registry's validator refused a live state (never a tombstone).
        live = [i for i, o in enumerate(self.bus) if not o.message.deleted]
        if live:
            sent = self.bus.pop(data.draw(st.sampled_from(live)))
            self.state.unpublishable(sent)
            self.rejected[sent.key] = tuple(sent.message.instances)

    @rule(data=st.data())
    def crash_mid_batch(self, data: st.DataObject) -> None:
        # The drain was cancelled or crashed with messages in flight: each landed or not,
        # and the table takes them all back.
        for sent in self.bus:
            if data.draw(st.booleans()):
                self._store(sent)
        self.stale.extend(self.bus)
        self.bus.clear()
        self.state.requeue_inflight()

    @rule(data=st.data())
    def late_report_of_a_given_up_message(self, data: st.DataObject) -> None:
        if self.stale:
            sent = self.stale.pop(data.draw(st.integers(0, len(self.stale) - 1)))
            if data.draw(st.booleans()):
                self.state.acked(sent)
            else:
                self.state.failed(sent)

    @invariant()
    def bookkeeping_is_consistent(self) -> None:
        assert self.state.inflight_count == len(self.bus)
        assert set(self.state._dirty) <= set(self.state._entries)
        assert set(self.state.unread()) <= set(self.state._entries)

    def teardown(self) -> None:
        # The bus is healthy again: whatever is in flight is acknowledged, then drain.
        for sent in self.bus:
            self._store(sent)
            self.state.acked(sent)
        self.bus.clear()
        for _ in range(len(KEYS) + 2):
            taken = self.state.take(100)
            if not taken:
                break
            for sent in taken:
                self._store(sent)
                self.state.acked(sent)
        for key in self.state.unread():
            self._read_back(key)
        assert self.state.dirty_count == 0 and self.state.inflight_count == 0
        assert self.state.unread_count == 0
        for key, want in self.desired.items():
            if key in self.rejected and self.rejected[key] == want:
                continue  # the stream keeps what it had, as the registry would
            got = self.stream.get(key)
            if want is TOMBSTONE:
                assert got is None or got.deleted, key
            else:
                assert got is not None and not got.deleted, key
                assert tuple(got.instances) == want, key
        # Bounded memory: acknowledged tombstones are forgotten.
        live = {k for k, v in self.desired.items() if v is not TOMBSTONE}
        assert set(self.state._entries) == live
        assert self.state.service_set_digest() == service_set_digest(
            (k[0], k[1], m.epoch, m.revision) for k, m in self.stream.items() if not m.deleted
        )


PublishStateMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, derandomize=True
)
test_publish_state_machine = PublishStateMachine.TestCase


def test_tombstone_acknowledged_while_the_key_is_dirty_again_regression() -> None:
    """The KeyError of issue 10 #8, step by step."""
    state = PublishState("east", 1, "file")
    key = ("default", "web")
    state.set_service(key, "web", CONTENTS[1])
    state.acked(state.take(10)[0])
    state.set_tombstone(key)
    [tomb] = state.take(10)
    state.set_service(key, "web", CONTENTS[2])  # back while the tombstone flies...
    state.set_tombstone(key)  # ...and gone again: same content as the tombstone in flight
    state.acked(tomb)
    assert state.take(10) == []  # used to raise KeyError
    assert state.dirty_count == 0 and state.desired(key) is None


def test_digest_of_a_landed_state_whose_successor_was_refused() -> None:
    """A state that landed although its publish failed, then content the validator refuses:
    the table asks for the key's last message, and the digest then names what landed
    (it used to leave the key out; the registry asked for resyncs that could not fix it)."""
    state = PublishState("east", epoch=3, source_kind="file")
    key = ("default", "a")
    state.set_service(key, "a", CONTENTS[1])
    [sent] = state.take(1)
    stream = {key: sent.message}  # stored by the server; the acknowledgement was lost
    state.failed(sent)
    state.set_service(key, "a", CONTENTS[2])
    [again] = state.take(1)
    state.unpublishable(again)  # the validator refused the new content: never sent
    assert state.dirty_count == 0  # the refused content is not tried again...
    assert state.unread() == [key]  # ...but what the stream holds must be read back
    landed = stream[key]
    held = Held(
        content_digest(landed.source_name, landed.instances, landed.deleted),
        landed.epoch,
        landed.revision,
        not landed.deleted,
    )
    assert state.observed(key, held)
    assert state.unread() == [] and state.dirty_count == 0
    assert state.service_set_digest() == service_set_digest(
        (k[0], k[1], m.epoch, m.revision) for k, m in stream.items() if not m.deleted
    )


def test_read_back_of_a_failed_publish_that_did_not_land() -> None:
    """The same, but the failed publish never reached the stream: the digest keeps the
    message acknowledged before it (and names nothing when the stream has none)."""
    state = PublishState("east", epoch=3, source_kind="file")
    key = ("default", "a")
    state.set_service(key, "a", CONTENTS[1])
    [first] = state.take(1)
    state.acked(first)
    state.set_service(key, "a", CONTENTS[2])
    [lost] = state.take(1)
    state.failed(lost)  # not stored
    state.set_service(key, "a", CONTENTS[3])
    [refused] = state.take(1)
    state.unpublishable(refused)
    assert state.unread() == [key]
    state.observed(key, Held(b"x", first.message.epoch, first.message.revision, True))
    assert state.service_set_digest() == service_set_digest(
        [("default", "a", first.message.epoch, first.message.revision)]
    )
    # A key with no message at all in the stream is counted out.
    other = ("default", "b")
    state.set_service(other, "b", CONTENTS[1])
    [sent] = state.take(1)
    state.failed(sent)
    state.set_service(other, "b", CONTENTS[2])
    [again] = state.take(1)
    state.unpublishable(again)
    assert state.unread() == [other]
    assert state.observed(other, None)
    assert state.service_set_digest()[0] == 1


def test_no_read_back_when_the_stream_content_is_known() -> None:
    """Refused content after an acknowledged publish (or a resync) needs no read: the
    table knows what the stream holds. A read asked for but overtaken by an
    acknowledgement is dropped."""
    state = PublishState("east", epoch=3, source_kind="file")
    key = ("default", "a")
    state.set_service(key, "a", CONTENTS[1])
    state.acked(state.take(1)[0])
    state.mark_all_dirty()
    state.set_service(key, "a", CONTENTS[2])
    state.unpublishable(state.take(1)[0])
    assert state.unread() == []
    # Unknown, refused, then changed again and acknowledged before the read happened.
    state.set_service(key, "a", CONTENTS[3])
    state.failed(state.take(1)[0])
    state.set_service(key, "a", CONTENTS[2])
    state.unpublishable(state.take(1)[0])
    assert state.unread() == [key]
    state.set_service(key, "a", CONTENTS[1])
    [last] = state.take(1)
    state.acked(last)
    assert state.unread() == []
    assert not state.observed(key, None)  # late: ignored
    assert state.service_set_digest() == service_set_digest(
        [("default", "a", last.message.epoch, last.message.revision)]
    )
