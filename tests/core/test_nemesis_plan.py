"""The nemesis's schedule and checker are deterministic and say what differs."""

from __future__ import annotations

import pytest

from harness.nemesis_plan import FaultKind, diff, expected_cluster, percentile, plan

pytestmark = pytest.mark.core


def test_a_seed_replays_the_same_schedule_and_covers_every_kind() -> None:
    assert plan(3, 20) == plan(3, 20)
    assert plan(3, 20) != plan(4, 20)
    assert {f.kind for f in plan(3, len(FaultKind))} == set(FaultKind)


def test_the_nearest_healthy_cluster_is_expected() -> None:
    truth = {
        ("east", "default", "a"): frozenset({("10.1.0.1", 80, "critical")}),
        ("west", "default", "a"): frozenset({("127.0.0.5", 81, "warning")}),
        ("north", "default", "a"): frozenset({("10.3.0.1", 80, "passing")}),
    }
    assert expected_cluster(truth, "default", "a") == "west"
    assert expected_cluster(truth, "default", "b") is None


def test_diff_names_lost_resurrected_and_changed_services() -> None:
    one = frozenset({("10.0.0.1", 80, "passing")})
    two = frozenset({("10.0.0.2", 80, "passing")})
    truth = {("east", "default", "lost"): one, ("east", "default", "changed"): one}
    seen = {("east", "default", "changed"): two, ("east", "default", "ghost"): one}
    problems = diff(truth, seen)
    assert [p.split(" ", 1)[0] for p in problems] == ["differs", "resurrected", "lost"]


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 99) == 0.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
