"""From raw stream messages to view changes (pure core of the stream consumer).

Validates, applies, decides which rejections get a log line, and tracks
catching up: until the consumer has passed the stream's last sequence at
start, per-message view changes are not reported (nobody is being served
yet); the moment it catches up, one ``everything`` change is.
"""

from __future__ import annotations

from typing import NamedTuple

from global_registry.core.view import Applied, RegistryView
from syncmesh.limits import LimitsConfig
from syncmesh.loggate import LogGate
from syncmesh.schema import ServiceState
from syncmesh.validate import Rejected, StreamMessage, validate_message
from syncmesh.view_api import ViewChange

__all__ = ["IngestResult", "Ingest"]

_NO_CHANGE = ViewChange()
_EVERYTHING = ViewChange(everything=True)


class IngestResult(NamedTuple):
    # "applied", "same", "stale-revision", "stale-epoch" or "rejected".
    outcome: str
    # "svc" or "cluster" (what the subject names), "" when unknown.
    kind: str
    applied: Applied | None = None
    message: StreamMessage | None = None
    rejected: Rejected | None = None
    # Log this rejection now (once per reason and cluster per period), and how
    # many of the same kind were not logged since the last line.
    log: bool = False
    suppressed: int = 0
    # This message completed the catch-up.
    caught_up_now: bool = False
    # Already caught up before this message: its own change is reported.
    live: bool = True

    @property
    def change(self) -> ViewChange:
        if self.caught_up_now:
            return _EVERYTHING
        if not self.live or self.applied is None:
            return _NO_CHANGE
        return self.applied.change

    @property
    def gateways_changed(self) -> bool:
        return self.applied is not None and self.applied.gateways_changed


class Ingest:
    def __init__(
        self, view: RegistryView, limits: LimitsConfig, log_period_s: float = 60.0
    ) -> None:
        self.view = view
        self._limits = limits
        self._log = LogGate(log_period_s)
        self.target_seq: int | None = None
        self.caught_up = False
        self.last_seq = 0
        self.started_at: float | None = None
        self.caught_up_at: float | None = None
        # Plain counters (exported by the metrics collector): (kind, outcome) and reject reason.
        self.counts: dict[tuple[str, str], int] = {}
        self.rejections: dict[str, int] = {}

    def begin(self, last_seq: int, now: float) -> bool:
        """Start catching up to ``last_seq`` (the stream's last sequence now); True if already there."""
        self.target_seq = last_seq
        self.started_at = now
        self.view.quiet = True
        if last_seq <= self.last_seq:
            self._mark_caught_up(now)
        return self.caught_up

    def _mark_caught_up(self, now: float) -> None:
        self.caught_up = True
        self.caught_up_at = now
        self.view.quiet = False

    def mark_caught_up(self, now: float) -> ViewChange:
        """Caught up by other evidence (the consumer reports nothing pending)."""
        if self.caught_up:
            return _NO_CHANGE
        self._mark_caught_up(now)
        return _EVERYTHING

    def handle(
        self,
        subject: str,
        data: bytes,
        now: float,
        stream_seq: int = 0,
        pending: int | None = None,
        age_s: float = 0.0,
    ) -> IngestResult:
        """One message; ``pending`` is what the consumer still has to deliver after it,
        ``age_s`` how long ago the server stored it (a replayed beat is that old)."""
        if stream_seq > self.last_seq:
            self.last_seq = stream_seq
        live = self.caught_up
        caught_up_now = False
        if not live:
            target = self.target_seq
            if (target is not None and self.last_seq >= target) or pending == 0:
                self._mark_caught_up(now)
                caught_up_now = True
        try:
            message = validate_message(subject, data, self._limits)
            applied = self.view.apply(message, now, age_s, data)
        except Rejected as rejected:
            log, suppressed = self._log.allow((rejected.reason, rejected.cluster), now)
            kind = "svc" if ".svc." in subject else "cluster" if ".cluster." in subject else ""
            self._count(kind, "rejected")
            self.rejections[rejected.reason] = self.rejections.get(rejected.reason, 0) + 1
            return IngestResult(
                "rejected",
                kind,
                rejected=rejected,
                log=log,
                suppressed=suppressed,
                caught_up_now=caught_up_now,
                live=live,
            )
        kind = "svc" if isinstance(message, ServiceState) else "cluster"
        self._count(kind, applied.outcome)
        return IngestResult(
            applied.outcome,
            kind,
            applied,
            message,
            caught_up_now=caught_up_now,
            live=live,
        )

    def _count(self, kind: str, outcome: str) -> None:
        key = (kind, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1
