"""NATS side of standby agents: read the lease, announce presence, claim when it ran out.

The decisions (is the lease held, may this agent claim, how many stand by) are
in ``edge_sync.core.lease``. The lease record is the epoch claim itself; a
takeover is the same compare-and-set claim an agent makes at start, but made
once over the sequence the standby saw expire, never over a newer claim.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from edge_sync.config import EdgeConfig
from edge_sync.core.agent import EdgeCore
from edge_sync.core.epoch_claim import EpochClaimer, LastClaim
from edge_sync.core.lease import LeaseDecision, LeaseReading, Verdict, judge, poll_interval
from edge_sync.io.epoch import is_wrong_last_sequence, read_last_claim
from syncmesh import subjects
from syncmesh.loggate import GatedLog
from syncmesh.schema import (
    SCHEMA_VERSION,
    StandbyPresence,
    decode_cluster_beat,
    decode_epoch_claim,
    encode,
)

__all__ = ["server_now", "read_lease", "try_claim", "Standby"]

log = logging.getLogger("edge_sync.standby")

_presence_decoder = msgspec.json.Decoder(StandbyPresence)


def _stamp(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


async def server_now(nc: Any, timeout_s: float = 2.0) -> float:
    """The NATS server's clock (Unix seconds): the ``ts`` of a stream info reply.

    Ages of stored messages are measured against it, so no agent clock takes part.
    """
    reply = await nc.request(f"$JS.API.STREAM.INFO.{subjects.STREAM}", b"", timeout=timeout_s)
    body = json.loads(reply.data or b"{}")
    if "error" in body:
        raise RuntimeError(f"stream info: {body['error']}")
    ts = body.get("ts")
    if not isinstance(ts, str):
        raise RuntimeError("the NATS server does not report its time (ts); nats-server >= 2.10")
    return datetime.fromisoformat(ts).timestamp()


async def _last(js: Any, subject: str) -> Any:
    import nats.js.errors

    try:
        return await js.get_last_msg(subjects.STREAM, subject, direct=True)
    except nats.js.errors.NotFoundError:
        return None


async def read_lease(nc: Any, js: Any, cluster: str) -> tuple[LeaseReading, LastClaim]:
    """The claim and the beat of ``cluster``, aged on the server's clock."""
    now = await server_now(nc)
    claim_msg = await _last(js, subjects.epoch_subject(cluster))
    beat_msg = await _last(js, subjects.cluster_subject(cluster))
    last = LastClaim(0)
    fields: dict[str, Any] = {}
    if claim_msg is not None:
        try:
            claim = decode_epoch_claim(claim_msg.data or b"")
        except (msgspec.ValidationError, msgspec.DecodeError):
            claim = None
        last = LastClaim(int(claim_msg.seq or 0), claim)
        stored = _stamp(claim_msg.time)
        fields.update(
            claim_seq=last.seq,
            claim_agent=claim.agent if claim is not None else "",
            claim_age_s=None if stored is None else now - stored,
        )
    if beat_msg is not None:
        try:
            beat = decode_cluster_beat(beat_msg.data or b"")
        except (msgspec.ValidationError, msgspec.DecodeError):
            beat = None
        stored = _stamp(beat_msg.time)
        if beat is not None:
            fields.update(
                beat_epoch=beat.epoch,
                beat_age_s=None if stored is None else now - stored,
                beat_interval_s=beat.interval_s,
                beat_retired=beat.retired,
            )
    return LeaseReading(**fields), last


async def try_claim(js: Any, claimer: EpochClaimer, expected: int) -> bool:
    """One compare-and-set claim over the claim at ``expected`` (0: none); True if won.

    Unlike ``claim_epoch`` it never claims over a newer claim: that one is another
    standby's takeover, and this agent keeps standing by.
    """
    plan = claimer.plan(LastClaim(expected), sent_at=time.time())
    try:
        ack = await js.publish(plan.subject, encode(plan.message), headers=plan.headers)
    except Exception as exc:
        # Lost the race, or the acknowledgement was lost: is the stored claim ours?
        last = await read_last_claim(js, claimer.cluster)
        if claimer.adopt(last):
            return True
        if is_wrong_last_sequence(exc):
            return False
        raise
    claimer.claimed(int(ack.seq))
    return True


class Standby:
    """Stands by until the lease runs out, then claims: ``await until_leader()``."""

    def __init__(
        self,
        config: EdgeConfig,
        core: EdgeCore,
        claimer: EpochClaimer,
        limited: GatedLog,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.core = core
        self.claimer = claimer
        self.limited = limited
        self.clock = clock
        self.poll_s = poll_interval(config.ha.poll_interval_s, config.beat_interval_s)
        # Set while this agent stands by (not before its first reading, not while leading).
        self.standing_by = False
        self.last_decision: LeaseDecision | None = None
        self.leader = ""
        self._stood_by = False

    async def until_leader(self, nc: Any, js: Any) -> LeaseDecision:
        """Return once this agent holds the cluster's claim (``claimer.epoch``); the decision
        that let it claim tells why (free, expired, retired)."""
        cfg = self.config
        while True:
            try:
                reading, last = await read_lease(nc, js, cfg.cluster)
                if self.claimer.adopt(last):
                    # Our claim was stored although its acknowledgement was lost.
                    decision = judge(reading, cfg.ha.lease_beats, cfg.beat_interval_s)
                    return self._won(decision)
                decision = judge(reading, cfg.ha.lease_beats, cfg.beat_interval_s)
                self.last_decision = decision
                if decision.may_claim(starting=not self._stood_by):
                    if await try_claim(js, self.claimer, reading.claim_seq):
                        return self._won(decision)
                    continue  # another standby won: read its claim at once
                self._stand_by(reading, decision)
                await self._announce(nc)
                # Read again when the lease would run out if the leader stays silent, so a
                # takeover does not wait for the next regular poll.
                delay = self.poll_s
                if decision.verdict is Verdict.HELD:
                    delay = min(delay, decision.remaining_s + 0.02)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS trouble: keep standing by, read again
                self.limited.warning(
                    "standby_read", self.clock(), "standby: cannot read the lease: %s", exc
                )
                delay = self.poll_s
            await asyncio.sleep(delay)

    def _won(self, decision: LeaseDecision) -> LeaseDecision:
        self.standing_by = False
        self.leader = self.claimer.agent
        return decision

    def _stand_by(self, reading: LeaseReading, decision: LeaseDecision) -> None:
        if not self.standing_by or reading.claim_agent != self.leader:
            log.info(
                "standing by: cluster %s is led by %s (epoch %d, %s, last sign of life %.1fs "
                "ago, lease %.1fs)",
                self.config.cluster,
                reading.claim_agent or "?",
                reading.claim_seq,
                decision.verdict,
                decision.silent_s or 0.0,
                decision.lease_s,
            )
        self.standing_by = True
        self._stood_by = True
        self.leader = reading.claim_agent

    def stepped_down(self) -> None:
        """Deposed while leading: from now on a standby (a retired cluster is not revived)."""
        self._stood_by = True
        self.standing_by = True

    async def _announce(self, nc: Any) -> None:
        core = self.core
        presence = StandbyPresence(
            schema=SCHEMA_VERSION,
            cluster=self.config.cluster,
            agent=self.claimer.agent,
            interval_s=self.poll_s,
            source_synced=core.source_synced,
            source_health=core.source_health,  # type: ignore[arg-type]
            sent_at=time.time(),
        )
        await nc.publish(subjects.standby_subject(self.config.cluster), encode(presence))


def decode_presence(data: bytes, cluster: str) -> StandbyPresence | None:
    """A presence message for ``cluster``, or None when it is not one."""
    if len(data) > 4096:
        return None
    try:
        presence = _presence_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return presence if presence.cluster == cluster else None
