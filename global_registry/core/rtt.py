"""Round-trip time as a moving average, and the sticky bucket that ranking uses.

Raw RTTs jitter on every probe. Ranking by them would reorder clusters (and
invalidate DNS caches) all the time, so ranking compares buckets on a log
scale instead, and a bucket only changes when the average leaves it by more
than half a bucket. Clusters in the same bucket tie and fall to name order.

The probe runner takes each sample from the kernel (``TCP_INFO``), but where
that is unavailable it times the connect on the event loop, and there one busy
moment (a GC pause, a burst of ingest) reads as a 100 ms connect on loopback.
Folded straight into the average, one such sample moved a gateway several
buckets (bench/scale.py measured 13-25 whole-cache flushes a second at 100k
states). Each sample is therefore the median of the last ``window`` probes
before it enters the average: a lone outlier moves nothing, a real change
that lasts three probes does.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

__all__ = ["RttScale", "RttEstimate"]


@dataclass(frozen=True, slots=True)
class RttScale:
    floor_ms: float = 1.0
    ratio: float = 0.5
    alpha: float = 0.3
    # How far (in buckets) the average must leave its bucket before the bucket moves.
    hysteresis: float = 0.5
    # Samples whose median feeds the average (odd; 1 = no filtering).
    window: int = 5

    def position(self, rtt_ms: float) -> float:
        """Continuous bucket coordinate: bucket n covers [n, n + 1)."""
        return math.log(max(rtt_ms, self.floor_ms) / self.floor_ms) / math.log1p(self.ratio)


@dataclass(slots=True)
class RttEstimate:
    average_ms: float | None = None
    bucket: int | None = None
    recent: deque[float] = field(default_factory=deque)

    def add(self, sample_ms: float, scale: RttScale) -> bool:
        """Fold in a sample; returns True when the bucket changed."""
        self.recent.append(sample_ms)
        while len(self.recent) > scale.window:
            self.recent.popleft()
        filtered = statistics.median(self.recent)
        if self.average_ms is None:
            self.average_ms = filtered
        else:
            self.average_ms += scale.alpha * (filtered - self.average_ms)
        position = scale.position(self.average_ms)
        if self.bucket is not None and (
            self.bucket - scale.hysteresis <= position < self.bucket + 1 + scale.hysteresis
        ):
            return False
        self.bucket = int(position)
        return True
