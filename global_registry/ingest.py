"""From raw stream messages to view changes (pure core of the stream consumer).

Validates, applies, decides which rejections get a log line, and tracks
catching up: until the consumer has passed the stream's last sequence at
start, per-message view changes are not reported (nobody is being served
yet); the moment it catches up, one ``everything`` change is.
"""

from __future__ import annotations

from typing import NamedTuple

from global_registry.config import LimitsConfig
from global_registry.logonce import LogOnce
from global_registry.validate import Rejected, StreamMessage, validate_message
from global_registry.view import RegistryView
from syncmesh.schema import ServiceState
from syncmesh.view_api import ViewChange

__all__ = ["IngestResult", "Ingest"]

_NO_CHANGE = ViewChange()


class IngestResult(NamedTuple):
    # "applied", "same", "stale-revision", "stale-epoch" or "rejected".
    outcome: str
    # "svc" or "cluster" (what the subject names), "" when unknown.
    kind: str
    change: ViewChange = _NO_CHANGE
    message: StreamMessage | None = None
    rejected: Rejected | None = None
    # Log this rejection now (once per reason and cluster per period), and how
    # many of the same kind were not logged since the last line.
    log: bool = False
    suppressed: int = 0
    gateways_changed: bool = False
    caught_up_now: bool = False


class Ingest:
    def __init__(self, view: RegistryView, limits: LimitsConfig, log_period_s: float = 60.0) -> None:
        self.view = view
        self._limits = limits
        self._log = LogOnce(log_period_s)
        self.target_seq: int | None = None
        self.caught_up = False
        self.last_seq = 0
        self.started_at: float | None = None
        self.caught_up_at: float | None = None

    def begin(self, last_seq: int, now: float) -> bool:
        """Start catching up to ``last_seq`` (the stream's last sequence now); True if already there."""
        self.target_seq = last_seq
        self.started_at = now
        if last_seq <= self.last_seq:
            self._mark_caught_up(now)
        return self.caught_up

    def _mark_caught_up(self, now: float) -> None:
        self.caught_up = True
        self.caught_up_at = now

    def mark_caught_up(self, now: float) -> ViewChange:
        """Caught up by other evidence (the consumer reports nothing pending)."""
        if self.caught_up:
            return _NO_CHANGE
        self._mark_caught_up(now)
        return ViewChange(everything=True)

    def handle(
        self,
        subject: str,
        data: bytes,
        now: float,
        stream_seq: int = 0,
        pending: int | None = None,
        age_s: float = 0.0,
    ) -> IngestResult:
        """One message; ``pending`` is what the consumer still has to deliver after it."""
        if stream_seq > self.last_seq:
            self.last_seq = stream_seq
        result = self._apply(subject, data, now, age_s)
        if self.caught_up:
            return result
        if (self.target_seq is not None and self.last_seq >= self.target_seq) or pending == 0:
            self._mark_caught_up(now)
            return result._replace(change=ViewChange(everything=True), caught_up_now=True)
        return result._replace(change=_NO_CHANGE)

    def _apply(self, subject: str, data: bytes, now: float, age_s: float) -> IngestResult:
        try:
            message = validate_message(subject, data, self._limits)
            applied = self.view.apply(message, now, age_s)
        except Rejected as rejected:
            log, suppressed = self._log.allow(rejected.reason, rejected.cluster, now)
            kind = "svc" if ".svc." in subject else "cluster" if ".cluster." in subject else ""
            return IngestResult(
                "rejected", kind, rejected=rejected, log=log, suppressed=suppressed
            )
        return IngestResult(
            applied.outcome,
            "svc" if isinstance(message, ServiceState) else "cluster",
            applied.change,
            message,
            gateways_changed=applied.gateways_changed,
        )
