"""Why a publish failed, and the agent being deposed: the NATS adapter's exceptions."""

from __future__ import annotations

import enum

from edge_sync.core.epoch_claim import LastClaim
from edge_sync.io.epoch import ClaimConflict, is_wrong_last_sequence

__all__ = ["PublishError", "PublishFailed", "Deposed", "publish_error_reason", "TTL_DISABLED"]

# JetStream's "per-message TTL is disabled" (a stream made without allow_msg_ttl).
TTL_DISABLED = 10166


class PublishError(enum.StrEnum):
    """Why a call to NATS failed (``syncmesh_edge_publish_errors_total{reason}``)."""

    NO_STREAM = "no_stream"  # no stream answered: JetStream starting, or the store was lost
    API_ERROR = "api_error"
    TIMEOUT = "timeout"
    DISCONNECTED = "disconnected"
    FENCED = "fenced"  # refused by the claim fence: deposed, or the claim was lost
    TTL_DISABLED = "ttl_disabled"  # a stream made without per-message TTLs
    CLAIM_RACE = "claim_race"  # another claim landed between our read and our claim
    OTHER = "other"


class PublishFailed(Exception):
    def __init__(self, reason: PublishError, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Deposed(Exception):
    """Another agent claimed the cluster after us: this run must not publish again."""

    def __init__(self, epoch: int, newer: LastClaim) -> None:
        who = newer.claim.agent if newer.claim is not None else "?"
        super().__init__(f"epoch {epoch} superseded by the claim at {newer.seq} (agent {who})")


def publish_error_reason(exc: BaseException) -> PublishError:
    import nats.errors
    import nats.js.errors

    if isinstance(exc, PublishFailed):
        return exc.reason
    if isinstance(exc, ClaimConflict):
        return PublishError.CLAIM_RACE
    if is_wrong_last_sequence(exc):
        return PublishError.FENCED
    if getattr(exc, "err_code", None) == TTL_DISABLED:
        return PublishError.TTL_DISABLED
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return PublishError.NO_STREAM
    if isinstance(exc, nats.js.errors.APIError):
        return PublishError.API_ERROR
    if isinstance(exc, nats.errors.TimeoutError | TimeoutError):
        return PublishError.TIMEOUT
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionReconnectingError):
        return PublishError.DISCONNECTED
    return PublishError.OTHER
