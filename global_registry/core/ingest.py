"""From raw stream messages to view changes (pure core of the stream reader).

Validates, applies, decides which rejections get a log line, and tracks
catching up: until the reader has passed the stream's last sequence at
start, per-message view changes are not reported (nobody is being served
yet); the moment it catches up, one ``everything`` change is.

Every message comes with the stream sequence it was stored at: epoch fencing
(``syncmesh.epochs``) judges each ServiceState and ClusterBeat by it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import NamedTuple

from global_registry.core.jsmeta import AckInfo
from global_registry.core.records import Applied, Outcome
from global_registry.core.view import RegistryView
from syncmesh import subjects
from syncmesh.limits import LimitsConfig
from syncmesh.loggate import LogGate
from syncmesh.schema import ClusterBeat, EpochClaim, ServiceState
from syncmesh.validate import Rejected, StreamMessage, validate_message
from syncmesh.view_api import ViewChange

__all__ = ["MessageKind", "IngestResult", "Ingest", "Delivery", "delivery"]

# One delivered message as the stream reader reads it off the wire: subject, payload,
# stream sequence, consumer sequence (the reader's business), and the pending count and
# stored-at time (Unix ns) of its ack subject as ASCII digits, converted only when used.
Delivery = tuple[bytes, bytes, int, int, bytes, bytes]


def delivery(subject: bytes, data: bytes, ack: AckInfo) -> Delivery:
    """A ``Delivery`` from metadata already parsed (the readers' slower paths)."""
    return (
        subject,
        data,
        ack.stream_seq,
        ack.consumer_seq,
        b"%d" % ack.pending,
        b"%d" % ack.stored_at_ns,
    )


_NO_CHANGE = ViewChange()
_EVERYTHING = ViewChange(everything=True)


class MessageKind(StrEnum):
    """What a stream subject names; the ``kind`` label of the messages metric."""

    SERVICE = "svc"
    CLUSTER = "cluster"
    EPOCH = "epoch"
    # Not one of syncmesh's stream subjects.
    UNKNOWN = "unknown"


# Looked up once: the kind of every applied message, by its type.
_KINDS: dict[type, MessageKind] = {
    ServiceState: MessageKind.SERVICE,
    ClusterBeat: MessageKind.CLUSTER,
    EpochClaim: MessageKind.EPOCH,
}
_tuple_new = tuple.__new__
_SERVICE = MessageKind.SERVICE
_APPLIED = Outcome.APPLIED


def _age(wall_s: float, stored_at_ns: bytes) -> float:
    """Seconds since the server stored a message (never negative: the server's clock
    against ours only ever makes a replayed beat older)."""
    try:
        age_s = wall_s - int(stored_at_ns) * 1e-9
    except ValueError:  # not a number: no age to go by
        return 0.0
    return age_s if age_s > 0.0 else 0.0


def _kind_of(subject: str) -> MessageKind:
    key = subjects.parse_subject(subject)
    return MessageKind.UNKNOWN if key is None else MessageKind(key.kind)


class IngestResult(NamedTuple):
    outcome: Outcome
    kind: MessageKind
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
    # The subject of a rejected message (for its log line).
    subject: str = ""

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
        self.counts: dict[tuple[MessageKind, Outcome], int] = {}
        self.rejections: dict[str, int] = {}

    def prime(self, subject: str, data: bytes, stream_seq: int) -> bool:
        """Learn a claim before the full read starts; True if it was a valid claim.

        The stream keeps one message per subject, so after a takeover the old
        agent's claim is gone while its earlier messages are still there,
        stored before the new claim. A reader that met the new claim only at its
        place in the stream would take those messages for unclaimed ones; read
        first, it fences them as a live reader did. Counts and logs nothing:
        the full read meets the same claim again.
        """
        try:
            claim = validate_message(subject, data, self._limits)
            if not isinstance(claim, EpochClaim):
                return False
            self.view.apply_claim(claim, stream_seq)
        except Rejected:
            return False
        return True

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
        stream_seq: int,
        now: float,
        pending: int | None = None,
        age_s: float = 0.0,
    ) -> IngestResult:
        """One message, stored at ``stream_seq``; ``pending`` is what the reader still has
        to deliver after it, ``age_s`` how long ago the server stored it (a replayed
        beat is that old)."""
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
            if type(message) is ServiceState:
                applied = self.view.apply_service(message, stream_seq, now, age_s, data)
            else:
                applied = self.view.apply(message, stream_seq, now, age_s, data)
        except Rejected as rejected:
            return self._rejected(subject, rejected, now, caught_up_now, live)
        return self._applied(message, applied, caught_up_now, live)

    def handle_batch(
        self,
        batch: Sequence[Delivery],
        now: float,
        wall_s: float,
        report: Callable[[IngestResult], None],
    ) -> None:
        """``handle`` for each message of ``batch`` in order, ``report`` called with its
        result right after it is applied; ``wall_s``: the Unix time now (a message's
        age is ``wall_s`` minus when the server stored it).

        While catching up, a service state that was applied, was the same or was
        stale is only counted: no result (nobody is served yet, and the end of
        the catch-up reports ``everything``). Rejections, tombstones, beats,
        claims, the message that completes the catch-up and every message after
        it are reported.
        """
        limits = self._limits
        view = self.view
        apply_service = view.apply_service
        counts = self.counts
        target = self.target_seq
        # Service states counted but not reported while catching up, by outcome.
        quiet_applied = 0
        quiet: dict[Outcome, int] = {}
        try:
            for subject_bytes, data, stream_seq, _, pending, stored_at in batch:
                if stream_seq > self.last_seq:
                    self.last_seq = stream_seq
                live = self.caught_up
                caught_up_now = False
                if not live and (
                    (target is not None and self.last_seq >= target) or pending == b"0"
                ):
                    self._mark_caught_up(now)
                    caught_up_now = True
                subject = subject_bytes.decode()
                try:
                    message = validate_message(subject, data, limits)
                    if type(message) is ServiceState:
                        deleted = message.deleted
                        age_s = _age(wall_s, stored_at) if deleted else 0.0
                        applied = apply_service(message, stream_seq, now, age_s, data)
                        if not (live or caught_up_now or deleted):
                            outcome = applied.outcome
                            if outcome is _APPLIED:
                                quiet_applied += 1
                            else:
                                quiet[outcome] = quiet.get(outcome, 0) + 1
                            continue
                    else:
                        applied = view.apply(
                            message, stream_seq, now, _age(wall_s, stored_at), data
                        )
                except Rejected as rejected:
                    report(self._rejected(subject, rejected, now, caught_up_now, live))
                    continue
                report(self._applied(message, applied, caught_up_now, live))
        finally:
            if quiet_applied:
                quiet[_APPLIED] = quiet_applied
            for outcome, count in quiet.items():
                counted = (_SERVICE, outcome)
                counts[counted] = counts.get(counted, 0) + count

    def _applied(
        self, message: StreamMessage, applied: Applied, caught_up_now: bool, live: bool
    ) -> IngestResult:
        """Count an accepted message; its result."""
        kind = _KINDS[type(message)]
        outcome = applied.outcome
        counts = self.counts
        counted = (kind, outcome)
        counts[counted] = counts.get(counted, 0) + 1
        # What IngestResult(...) does, without its Python-level __new__ (once per message).
        return _tuple_new(
            IngestResult, (outcome, kind, applied, message, None, False, 0, caught_up_now, live, "")
        )

    def _rejected(
        self, subject: str, rejected: Rejected, now: float, caught_up_now: bool, live: bool
    ) -> IngestResult:
        """Count a rejection; its result, with whether to log it now."""
        log, suppressed = self._log.allow((rejected.reason, rejected.cluster), now)
        kind = _kind_of(subject)
        self._count(kind, Outcome.REJECTED)
        self.rejections[rejected.reason] = self.rejections.get(rejected.reason, 0) + 1
        return IngestResult(
            Outcome.REJECTED,
            kind,
            rejected=rejected,
            log=log,
            suppressed=suppressed,
            caught_up_now=caught_up_now,
            live=live,
            subject=subject,
        )

    def _count(self, kind: MessageKind, outcome: Outcome) -> None:
        key = (kind, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1
