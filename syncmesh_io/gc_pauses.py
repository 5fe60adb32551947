"""Garbage-collector pauses: measured, and kept short by freezing survivors.

Why: CPython's cyclic collector runs with the GIL held, so every thread —
the DNS reader thread too — waits while it scans. A full collection scans
every tracked object that is not frozen, and the registry's heap grows
after it is ready (the DNS answer cache, client classes, the states churn
replaces). The registry freezes the view once caught up (``gc.freeze``);
with only that, ``bench/scale.py --sizes 100000`` paused up to 1,067 ms
while serving (6.9 s in one run). This module collects the young
generations and freezes the survivors every ``refreeze_interval_s`` (1 s),
so no collection scans much more than a second's allocations: 47 ms
longest, 2.0 s in all (every 30 s: 403 ms).

What freezing costs: a cycle of objects that were alive at a freeze and die
later is never collected until the objects are thawed. So every
``full_collect_interval_s`` everything is thawed, collected once (one long
pause, counted like any other) and frozen again. ``syncmesh_gc_frozen_objects``
shows the frozen count; a count that only grows between full collections is
such garbage.

The pauses are measured by a ``gc.callbacks`` hook that only adds to plain
lists: a Prometheus metric takes a lock, and a collection can start on any
thread, inside any allocation.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

__all__ = ["GcConfig", "GcPauses", "keep_frozen", "refreeze"]

log = logging.getLogger(__name__)

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class GcConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Collect the young generations and freeze what survived this often (0:
    # only the freeze after the catch-up). Each refreeze costs a young
    # collection; a full collection then scans at most about a second's
    # allocations.
    refreeze_interval_s: float = 1.0
    # Thaw, collect everything and freeze again (0: never; frozen cycles that
    # died then stay until the process ends).
    full_collect_interval_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.refreeze_interval_s < 0 or self.full_collect_interval_s < 0:
            raise ValueError("gc intervals must be >= 0")
        if 0 < self.full_collect_interval_s < self.refreeze_interval_s:
            raise ValueError("gc full_collect_interval_s must be 0 or >= refreeze_interval_s")


class GcPauses(Collector):
    """Every collection's pause by generation, as a Prometheus histogram, and
    the longest; registered on ``registry`` until ``close``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._started = 0.0
        # Per generation: bucket counts (cumulative at collect time), count, sum.
        self._buckets = [[0] * (len(_BUCKETS) + 1) for _ in range(3)]
        self._sums = [0.0, 0.0, 0.0]
        self.longest_s = 0.0
        self._registry = registry
        registry.register(self)
        gc.callbacks.append(self._on_gc)

    def close(self) -> None:
        """Idempotent."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
            self._registry.unregister(self)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        paused = time.perf_counter() - self._started
        generation = min(int(info.get("generation", 2)), 2)
        self._buckets[generation][bisect.bisect_left(_BUCKETS, paused)] += 1
        self._sums[generation] += paused
        if paused > self.longest_s:
            self.longest_s = paused

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        histogram = HistogramMetricFamily(
            "syncmesh_gc_pause_seconds",
            "Pauses of the cyclic garbage collector (every thread waits), by generation",
            labels=["generation"],
        )
        for generation in range(3):
            counts = self._buckets[generation]
            cumulative, total = [], 0
            for bound, count in zip((*_BUCKETS, float("inf")), counts, strict=True):
                total += count
                cumulative.append((str(bound) if bound != float("inf") else "+Inf", total))
            histogram.add_metric([str(generation)], cumulative, self._sums[generation])
        yield histogram
        yield GaugeMetricFamily(
            "syncmesh_gc_longest_pause_seconds",
            "The longest garbage-collector pause since the registry was ready "
            "(the collection before the view is frozen is left out)",
            value=self.longest_s,
        )
        yield GaugeMetricFamily(
            "syncmesh_gc_frozen_objects",
            "Objects in the frozen generation (gc.freeze): never scanned",
            value=gc.get_freeze_count(),
        )


def refreeze(full: bool) -> None:
    """Freeze what survives: after a young collection (cheap), or with ``full``
    after thawing everything and collecting the whole heap."""
    if full:
        gc.unfreeze()
        gc.collect()
    else:
        gc.collect(1)
    gc.freeze()


async def keep_frozen(config: GcConfig) -> None:
    """Run until cancelled: refreeze every ``refreeze_interval_s``, and thaw and
    collect all every ``full_collect_interval_s``. Does nothing while the
    collector is disabled (the registry disables it while catching up)."""
    if not config.refreeze_interval_s:
        return
    loop = asyncio.get_running_loop()
    last_full = loop.time()
    while True:
        await asyncio.sleep(config.refreeze_interval_s)
        if not gc.isenabled():
            continue
        now = loop.time()
        full = bool(config.full_collect_interval_s) and (
            now - last_full >= config.full_collect_interval_s
        )
        started = time.perf_counter()
        refreeze(full)
        if full:
            last_full = now
            log.info(
                "gc: thawed, collected and froze %d objects in %.3fs",
                gc.get_freeze_count(),
                time.perf_counter() - started,
            )
