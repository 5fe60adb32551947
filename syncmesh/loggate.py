"""The one rate-limited log gate: each (reason, key) is logged at most once per period.

A misbehaving or hostile peer can send thousands of bad messages a second; the
metrics count every one, the log shows each kind once per period with the
number suppressed since. Pure: the caller passes ``now``.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

__all__ = ["LogGate", "GatedLog"]


class LogGate:
    def __init__(self, period_s: float = 60.0, max_keys: int = 10_000) -> None:
        self.period_s = period_s
        # Bounded so that a flood of distinct (spoofed) keys cannot grow it forever.
        self.max_keys = max_keys
        self._last: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}

    def allow(self, key: Hashable, now: float) -> tuple[bool, int]:
        """Whether to log now, and how many of this key were suppressed since its last line."""
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        if last is None and len(self._last) >= self.max_keys:
            self._forget_before(now - self.period_s)
            if len(self._last) >= self.max_keys:
                return False, 0
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)

    def _forget_before(self, cutoff: float) -> None:
        for key in [k for k, t in self._last.items() if t < cutoff]:
            del self._last[key]
            self._suppressed.pop(key, None)


class GatedLog:
    """A logger front: ``warning(reason, now, message, *args)`` passes the gate or is dropped."""

    def __init__(self, logger: logging.Logger, gate: LogGate | None = None) -> None:
        self.logger = logger
        self.gate = gate or LogGate()

    def log(
        self, level: int, reason: str, now: float, message: str, *args: object, key: str = ""
    ) -> bool:
        allowed, suppressed = self.gate.allow((reason, key), now)
        if allowed:
            suffix = f" ({suppressed} similar suppressed)" if suppressed else ""
            # ``reason`` as a field too: `--log-format json` puts it in its own key.
            self.logger.log(
                level, "[%s] " + message + suffix, reason, *args, extra={"reason": reason}
            )
        return allowed

    def warning(self, reason: str, now: float, message: str, *args: object, key: str = "") -> bool:
        return self.log(logging.WARNING, reason, now, message, *args, key=key)
