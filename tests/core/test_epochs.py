"""Epoch fencing rules (syncmesh.epochs), scripted: no clock, no network."""

from __future__ import annotations

import pytest

from syncmesh.epochs import EpochFence, EpochVerdict

pytestmark = pytest.mark.core


def test_messages_of_the_current_claim_are_accepted() -> None:
    fence = EpochFence()
    assert fence.claim("east", 10)
    assert fence.judge("east", 10, 11) is EpochVerdict.OK
    assert fence.judge("east", 10, 5000) is EpochVerdict.OK


def test_an_epoch_at_or_after_its_own_sequence_is_a_future_epoch() -> None:
    fence = EpochFence()
    fence.claim("east", 10)
    # What a wall-clock epoch a year ahead (or any forged number) looks like.
    assert fence.judge("east", 1_800_000_000_000, 12) is EpochVerdict.FUTURE
    assert fence.judge("east", 12, 12) is EpochVerdict.FUTURE


def test_a_forged_future_epoch_does_not_freeze_the_cluster() -> None:
    fence = EpochFence()
    fence.claim("east", 10)
    assert fence.judge("east", 40, 50) is EpochVerdict.UNCLAIMED  # nobody claimed 40
    assert fence.judge("east", 10, 51) is EpochVerdict.OK  # the real agent goes on


def test_a_deposed_agent_is_fenced_but_its_earlier_messages_stay_valid() -> None:
    fence = EpochFence()
    fence.claim("east", 10)
    assert fence.claim("east", 100)  # a new agent took over at seq 100
    assert fence.judge("east", 10, 60) is EpochVerdict.OK  # stored before the takeover
    assert fence.judge("east", 10, 101) is EpochVerdict.DEPOSED  # the old one woke up
    assert fence.judge("east", 100, 101) is EpochVerdict.OK


def test_an_older_claim_replayed_changes_nothing() -> None:
    fence = EpochFence()
    fence.claim("east", 100)
    assert not fence.claim("east", 10)
    assert fence.current("east") == 100


def test_clusters_are_fenced_independently() -> None:
    fence = EpochFence()
    fence.claim("east", 10)
    assert fence.judge("west", 10, 20) is EpochVerdict.UNCLAIMED
    fence.forget("east")
    assert fence.current("east") == 0 and len(fence) == 0


def test_epoch_zero_is_never_claimed() -> None:
    fence = EpochFence()
    assert fence.judge("east", 0, 5) is EpochVerdict.UNCLAIMED
    fence.claim("east", 3)
    assert fence.judge("east", 0, 5) is EpochVerdict.UNCLAIMED
