"""Fenced JetStream publishes, in order: the one way the agent sends states and beats.

Every message carries the claim fence (``EpochClaimer.fence_headers``, added by the
caller). ``FencedSender`` waits out a busy fence and remembers the order of what it
sent: a stream stores what one connection sends in order, so once a message sent
after a failed one is acknowledged, the failed one has landed or never will. The
publisher reads a key back (docs/digest.md) only then. Split out of
``edge_sync.io.publisher``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from edge_sync.io.metrics import EdgeMetrics

__all__ = ["FENCE_BUSY", "FENCE_BUSY_RETRIES", "FencedSender"]

# Clustered streams: another fenced publish on the same check subject is in process.
FENCE_BUSY = 10164
FENCE_BUSY_RETRIES = 400


class FencedSender:
    """``js`` is the JetStream context of the current connection (set by the publisher)."""

    def __init__(self, metrics: EdgeMetrics) -> None:
        self.metrics = metrics
        self.js: Any = None
        # Each attempt is numbered when sent; the latest failed and acknowledged numbers.
        self._sent = 0
        self._last_failed = 0
        self._last_acked = 0

    @property
    def settled_since_failure(self) -> bool:
        """A message sent after the last failed one was acknowledged (or none failed)."""
        return self._last_acked > self._last_failed or self._last_failed == 0

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        """Publish with the claim fence, waiting out the fence being busy.

        On a clustered stream nats-server lets one message at a time carry an
        expected-last-sequence check on a given subject and refuses the others
        at once with a constant "wrong last sequence" (10164); every message of
        this agent checks the same claim subject, so a pipelined batch collides
        with itself. That is not a fence failure (a newer claim answers 10071):
        the message is sent again after a short pause, in order.
        """
        for attempt in range(FENCE_BUSY_RETRIES):
            self._sent += 1
            sent = self._sent
            try:
                await self.js.publish(subject, data, headers=headers)
            except Exception as exc:
                self._last_failed = max(self._last_failed, sent)
                if (
                    getattr(exc, "err_code", None) != FENCE_BUSY
                    or attempt + 1 == FENCE_BUSY_RETRIES
                ):
                    raise
                self.metrics.fence_busy.inc()
                await asyncio.sleep(0.0005 * min(attempt + 1, 20))
            else:
                self._last_acked = max(self._last_acked, sent)
                return
