"""NATS side of the epoch claim: read the claim subject, publish the claim, retry on a race.

The decisions (what to send, what a refusal means) are in ``edge_sync.core.epoch_claim``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from edge_sync.core.epoch_claim import EpochClaimer, LastClaim
from syncmesh import subjects
from syncmesh.schema import decode_epoch_claim, encode
from syncmesh_io.retry import forever

__all__ = ["ClaimConflict", "is_wrong_last_sequence", "read_last_claim", "claim_epoch"]

# JetStream's "wrong last sequence" (JSStreamWrongLastSequenceErrF): an expected
# last (subject) sequence header did not match.
WRONG_LAST_SEQUENCE = 10071


class ClaimConflict(Exception):
    """Another claim landed between our read and our write."""


def is_wrong_last_sequence(exc: BaseException) -> bool:
    return getattr(exc, "err_code", None) == WRONG_LAST_SEQUENCE


async def read_last_claim(js: Any, cluster: str) -> LastClaim:
    """The last claim of ``cluster`` (sequence 0 when there is none)."""
    import nats.errors
    import nats.js.errors

    subject = subjects.epoch_subject(cluster)
    try:
        try:
            raw = await js.get_last_msg(subjects.STREAM, subject, direct=True)
        except nats.errors.NoRespondersError:
            # A stream made without allow_direct (older versions): ask the leader.
            raw = await js.get_last_msg(subjects.STREAM, subject)
    except nats.js.errors.NotFoundError:
        return LastClaim(0)
    try:
        claim = decode_epoch_claim(raw.data or b"")
    except (msgspec.ValidationError, msgspec.DecodeError):
        # Still a claim for ordering purposes: its sequence is what we must supersede.
        claim = None
    return LastClaim(int(raw.seq or 0), claim)


async def claim_epoch(
    js: Any, claimer: EpochClaimer, on_error: Callable[[BaseException, int], None]
) -> int:
    """Claim the cluster: read, compare-and-set publish, re-read and retry on a race."""
    # Capped backoff: a race is settled by the next attempt; NATS being away is waited out.
    async for attempt in forever((Exception,), on_error, initial_s=0.05, max_s=2.0):
        with attempt:
            last = await read_last_claim(js, claimer.cluster)
            if claimer.adopt(last):
                return claimer.epoch
            plan = claimer.plan(last, sent_at=time.time())
            try:
                ack = await js.publish(plan.subject, encode(plan.message), headers=plan.headers)
            except Exception as exc:
                if is_wrong_last_sequence(exc):
                    raise ClaimConflict(str(exc)) from exc
                raise
            return claimer.claimed(int(ack.seq))
    raise AssertionError("unreachable: forever() retries until success")
