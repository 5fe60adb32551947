"""Log each reason at most once per interval, so bad input cannot flood the log."""

from __future__ import annotations

import logging

__all__ = ["ReasonLimiter", "LimitedLog"]


class ReasonLimiter:
    def __init__(self, interval_s: float = 60.0, max_reasons: int = 1024) -> None:
        self.interval_s = interval_s
        self.max_reasons = max_reasons
        self._last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def allow(self, reason: str, now: float) -> bool:
        last = self._last.get(reason)
        if last is not None and now - last < self.interval_s:
            self.suppressed[reason] = self.suppressed.get(reason, 0) + 1
            return False
        if last is None and len(self._last) >= self.max_reasons:
            # Bounded memory even if reasons are attacker-chosen.
            self._last.clear()
        self._last[reason] = now
        return True

    def take_suppressed(self, reason: str) -> int:
        return self.suppressed.pop(reason, 0)


class LimitedLog:
    """A logger front that drops repeats of one reason within the limiter's interval."""

    def __init__(self, logger: logging.Logger, limiter: ReasonLimiter | None = None) -> None:
        self.logger = logger
        self.limiter = limiter or ReasonLimiter()

    def log(self, level: int, reason: str, now: float, message: str, *args: object) -> None:
        if not self.limiter.allow(reason, now):
            return
        dropped = self.limiter.take_suppressed(reason)
        suffix = f" ({dropped} similar suppressed)" if dropped else ""
        self.logger.log(level, "[%s] " + message + suffix, reason, *args)

    def warning(self, reason: str, now: float, message: str, *args: object) -> None:
        self.log(logging.WARNING, reason, now, message, *args)

    def error(self, reason: str, now: float, message: str, *args: object) -> None:
        self.log(logging.ERROR, reason, now, message, *args)
