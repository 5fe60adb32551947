"""Read what the stream holds for this cluster's services (start-up and takeover
reconciliation, resyncs, ``syncmesh audit``, tests), or for one of them (a key whose
publish failed and whose stream content the agent must learn, docs/digest.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from edge_sync.core.agent import RemoteService
from edge_sync.core.publish_state import Key
from syncmesh import subjects
from syncmesh.schema import ServiceState, decode_service_state

__all__ = [
    "StoredState",
    "read_stored_states",
    "read_last_states",
    "read_cluster_services",
    "read_cluster_service",
]


class StoredState(NamedTuple):
    """The last message of one service subject: decoded (None: undecodable), where and when
    the server stored it (Unix seconds on the server's clock)."""

    state: ServiceState | None
    seq: int
    stored_at: float


def _ignore(reason: str, detail: str) -> None:
    return None


def _stored_at(metadata: Any) -> float:
    stamp = getattr(metadata, "timestamp", None)
    return stamp.timestamp() if isinstance(stamp, datetime) else 0.0


async def read_stored_states(
    js: Any,
    cluster: str,
    on_invalid: Callable[[str, str], None] = _ignore,
    idle_timeout_s: float = 5.0,
) -> dict[Key, StoredState]:
    """The last message of every ``syncmesh.v2.svc.<cluster>.>`` subject.

    An ordered consumer with deliver policy "last per subject" streams them in
    one pass and stops when nothing is pending; no request per subject.
    """
    from nats.js.api import DeliverPolicy

    wildcard = subjects.cluster_service_wildcard(cluster)
    info = await js.stream_info(subjects.STREAM, subjects_filter=wildcard)
    if not (info.state.subjects or {}):
        return {}
    out: dict[Key, StoredState] = {}
    sub = await js.subscribe(
        wildcard,
        stream=subjects.STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
    )
    try:
        while True:
            msg = await sub.next_msg(timeout=idle_timeout_s)
            parsed = subjects.parse_subject(msg.subject)
            if parsed is not None and parsed.kind == "svc" and parsed.cluster == cluster:
                key = (parsed.namespace, parsed.service)
                meta = msg.metadata
                seq, stored_at = int(meta.sequence.stream), _stored_at(meta)
                try:
                    out[key] = StoredState(decode_service_state(msg.data), seq, stored_at)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    on_invalid("stream_malformed", f"{msg.subject}: {exc}")
                    out[key] = StoredState(None, seq, stored_at)
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return out


async def read_last_states(
    js: Any,
    cluster: str,
    on_invalid: Callable[[str, str], None] = _ignore,
    idle_timeout_s: float = 5.0,
) -> dict[Key, ServiceState | None]:
    """The last message of every ``syncmesh.v2.svc.<cluster>.>`` subject (None: undecodable)."""
    stored = await read_stored_states(js, cluster, on_invalid, idle_timeout_s)
    return {key: s.state for key, s in stored.items()}


async def read_cluster_services(
    js: Any, cluster: str, on_invalid: Callable[[str, str], None] = _ignore
) -> dict[Key, RemoteService]:
    """What reconciliation and adoption need: per key, the source name, whether it is a
    tombstone, the message and its stream sequence.

    Undecodable content under our subject counts as live, so it gets a tombstone
    unless the source has that service.
    """
    stored = await read_stored_states(js, cluster, on_invalid)
    return {key: _remote(key, s) for key, s in stored.items()}


def _remote(key: Key, stored: StoredState) -> RemoteService:
    if stored.state is None:
        return RemoteService(key[1], False, None, stored.seq)
    state = stored.state
    return RemoteService(state.source_name, state.deleted, state, stored.seq)


async def read_cluster_service(
    js: Any, cluster: str, key: Key, on_invalid: Callable[[str, str], None] = _ignore
) -> RemoteService | None:
    """The last message of one service subject of ``cluster`` (None: the stream has none).

    A plain (not direct) get: the stream leader answers, after every message the server
    stored before the request, including a publish whose acknowledgement was lost.
    """
    import nats.js.errors

    subject = subjects.service_subject(cluster, *key)
    try:
        raw = await js.get_last_msg(subjects.STREAM, subject)
    except nats.js.errors.NotFoundError:
        return None
    seq = int(raw.seq or 0)
    try:
        state: ServiceState | None = decode_service_state(raw.data or b"")
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        on_invalid("stream_malformed", f"{subject}: {exc}")
        state = None
    return _remote(key, StoredState(state, seq, 0.0))
