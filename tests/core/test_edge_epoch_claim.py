"""The epoch claim's decisions: what to send, when to adopt, what a fenced refusal means."""

from __future__ import annotations

import pytest

from edge_sync.core.epoch_claim import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    EpochClaimer,
    LastClaim,
    Ownership,
)
from syncmesh import subjects
from syncmesh.epochs import EpochFence, EpochVerdict
from syncmesh.schema import SCHEMA_VERSION, EpochClaim, decode_epoch_claim, encode

pytestmark = pytest.mark.core


def claimer() -> EpochClaimer:
    return EpochClaimer("east", "host-a:42", "n1")


def test_first_claim_expects_an_empty_subject() -> None:
    plan = claimer().plan(LastClaim(0), sent_at=5.0)
    assert plan.subject == subjects.epoch_subject("east")
    assert plan.headers[EXPECTED_LAST_SUBJECT_SEQ] == "0"
    assert plan.message == EpochClaim(
        schema=SCHEMA_VERSION, cluster="east", agent="host-a:42", previous=0, sent_at=5.0
    )
    assert decode_epoch_claim(encode(plan.message)) == plan.message


def test_claim_over_a_predecessor_names_it_and_expects_its_sequence() -> None:
    c = claimer()
    other = EpochClaim(schema=SCHEMA_VERSION, cluster="east", agent="host-b:7")
    plan = c.plan(LastClaim(17, other), sent_at=1.0)
    assert plan.message.previous == 17 and plan.headers[EXPECTED_LAST_SUBJECT_SEQ] == "17"
    # A retry of the same claim over the same predecessor is de-duplicated by the server.
    assert plan.headers["Nats-Msg-Id"] == c.plan(LastClaim(17, other), 1.0).headers["Nats-Msg-Id"]
    assert c.claimed(30) == 30 and c.epoch == 30


def test_a_claim_whose_ack_was_lost_is_adopted_not_superseded() -> None:
    c = claimer()
    plan = c.plan(LastClaim(3), sent_at=2.0)
    assert c.adopt(LastClaim(4, plan.message))  # stored, reply lost
    assert c.epoch == 4
    # Someone else's claim is never adopted: plan again over it.
    d = claimer()
    d.plan(LastClaim(3), sent_at=2.0)
    foreign = EpochClaim(schema=SCHEMA_VERSION, cluster="east", agent="host-b:7", previous=3)
    assert not d.adopt(LastClaim(4, foreign))
    assert not d.adopt(LastClaim(4, None))  # undecodable: not provably ours
    assert d.epoch == 0


def test_fence_headers_point_at_the_claim_subject() -> None:
    c = claimer()
    c.claimed(12)
    assert c.fence_headers(12) == {
        EXPECTED_LAST_SUBJECT_SEQ: "12",
        EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: subjects.epoch_subject("east"),
    }
    # A message taken under an older claim keeps that claim's fence.
    assert c.fence_headers(7)[EXPECTED_LAST_SUBJECT_SEQ] == "7"


@pytest.mark.parametrize(
    ("last_seq", "verdict"),
    [
        (12, Ownership.OWNER),  # our claim is still the last: the refusal was something else
        (40, Ownership.DEPOSED),  # a newer claim
        (3, Ownership.DEPOSED),  # stream recreated and someone claimed in the new history
        (0, Ownership.LOST),  # no claim at all: the stream lost it; claim again
    ],
)
def test_ownership_after_a_refused_fenced_publish(last_seq: int, verdict: Ownership) -> None:
    c = claimer()
    c.claimed(12)
    assert c.ownership(last_seq) is verdict


def test_the_registry_fence_agrees_with_the_agent_on_deposition() -> None:
    # Agent A claims at 5, B at 9: the registry calls A's later writes deposed, which
    # is exactly when the server refuses them (A's fence expects 5, the subject says 9).
    fence = EpochFence()
    fence.claim("east", 5)
    assert fence.judge("east", epoch=5, seq=7) is EpochVerdict.OK
    fence.claim("east", 9)
    assert fence.judge("east", epoch=5, seq=11) is EpochVerdict.DEPOSED
    a = claimer()
    a.claimed(5)
    assert a.ownership(9) is Ownership.DEPOSED


def test_claiming_again_over_the_same_predecessor_is_not_a_duplicate() -> None:
    c = claimer()
    first = c.plan(LastClaim(0), sent_at=1.0)
    c.claimed(1)
    again = c.plan(LastClaim(0), sent_at=1.0)  # the claim was purged: claim over nothing again
    assert first.headers["Nats-Msg-Id"] != again.headers["Nats-Msg-Id"]
