"""A gate that lets one log line per (reason, cluster) through per period.

A misbehaving or hostile publisher can send thousands of bad messages a
second; the metric counts them all, the log shows each kind once a minute.
"""

from __future__ import annotations

__all__ = ["LogOnce"]


class LogOnce:
    def __init__(self, period_s: float = 60.0, max_keys: int = 10_000) -> None:
        self._period_s = period_s
        # Bounded so that a flood of distinct (spoofed) cluster names cannot grow it forever.
        self._max_keys = max_keys
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def allow(self, reason: str, cluster: str, now: float) -> tuple[bool, int]:
        """Whether to log now, and how many of this kind were suppressed since the last line."""
        key = (reason, cluster)
        last = self._last.get(key)
        if last is not None and now - last < self._period_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        if last is None and len(self._last) >= self._max_keys:
            self._forget_before(now - self._period_s)
            if len(self._last) >= self._max_keys:
                return False, 0
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)

    def _forget_before(self, cutoff: float) -> None:
        for key in [k for k, t in self._last.items() if t < cutoff]:
            del self._last[key]
            self._suppressed.pop(key, None)
