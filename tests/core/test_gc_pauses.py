"""The garbage collector's pause metric and the refreeze that keeps pauses short
(syncmesh_io/gc_pauses.py): in process, no network."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from syncmesh_io.gc_pauses import GcConfig, GcPauses, refreeze

pytestmark = pytest.mark.core


class Node:
    """Something that can be in a reference cycle and be weakly referenced."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


def test_every_collection_is_measured_by_generation_until_closed() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses(registry)
    try:
        before = sample(registry, "syncmesh_gc_pause_seconds_count", generation="2")
        gc.collect()
        gc.collect()
        assert sample(registry, "syncmesh_gc_pause_seconds_count", generation="2") == before + 2
        assert sample(registry, "syncmesh_gc_pause_seconds_sum", generation="2") > 0
        longest = sample(registry, "syncmesh_gc_longest_pause_seconds")
        assert longest == pauses.longest_s > 0
        assert sample(registry, "syncmesh_gc_pause_seconds_bucket", generation="2", le="+Inf") == (
            before + 2
        )
    finally:
        pauses.close()
    pauses.close()  # idempotent
    assert pauses._on_gc not in gc.callbacks
    assert registry.get_sample_value("syncmesh_gc_longest_pause_seconds") is None


def test_refreeze_keeps_survivors_out_of_collections(thawed: None) -> None:
    survivors = [Node() for _ in range(1000)]
    assert any(o is survivors[0] for o in gc.get_objects())
    refreeze(full=False)
    assert gc.get_freeze_count() >= len(survivors)
    # What a collection scans (every generation) no longer holds them.
    assert not any(o is survivors[0] or o is survivors[-1] for o in gc.get_objects())
    later = Node()
    assert any(o is later for o in gc.get_objects())
    refreeze(full=False)
    assert not any(o is later for o in gc.get_objects())


def test_a_cycle_that_dies_frozen_is_collected_by_the_full_collection_only(thawed: None) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    refreeze(full=False)  # the cycle is alive now: frozen with everything else
    del a, b
    refreeze(full=False)
    assert alive() is not None  # frozen garbage: what the full collection is for
    refreeze(full=True)
    assert alive() is None


def test_config_rejects_a_full_collection_more_often_than_the_refreeze() -> None:
    with pytest.raises(ValueError, match="full_collect_interval_s"):
        GcConfig(refreeze_interval_s=60, full_collect_interval_s=10)
    with pytest.raises(ValueError, match=">= 0"):
        GcConfig(refreeze_interval_s=-1)
    GcConfig(refreeze_interval_s=0, full_collect_interval_s=0)
