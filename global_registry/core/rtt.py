"""Round-trip time as a moving average, and the sticky bucket that ranking uses.

Raw RTTs jitter on every probe. Ranking by them would reorder clusters (and
invalidate DNS caches) all the time, so ranking compares buckets on a log
scale instead, and a bucket only changes when the average leaves it by more
than half a bucket. Clusters in the same bucket tie and fall to name order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RttScale", "RttEstimate"]


@dataclass(frozen=True, slots=True)
class RttScale:
    floor_ms: float = 1.0
    ratio: float = 0.5
    alpha: float = 0.3
    # How far (in buckets) the average must leave its bucket before the bucket moves.
    hysteresis: float = 0.5

    def position(self, rtt_ms: float) -> float:
        """Continuous bucket coordinate: bucket n covers [n, n + 1)."""
        return math.log(max(rtt_ms, self.floor_ms) / self.floor_ms) / math.log1p(self.ratio)


@dataclass(slots=True)
class RttEstimate:
    average_ms: float | None = None
    bucket: int | None = None

    def add(self, sample_ms: float, scale: RttScale) -> bool:
        """Fold in a sample; returns True when the bucket changed."""
        if self.average_ms is None:
            self.average_ms = sample_ms
        else:
            self.average_ms += scale.alpha * (sample_ms - self.average_ms)
        position = scale.position(self.average_ms)
        if self.bucket is not None and (
            self.bucket - scale.hysteresis <= position < self.bucket + 1 + scale.hysteresis
        ):
            return False
        self.bucket = int(position)
        return True
