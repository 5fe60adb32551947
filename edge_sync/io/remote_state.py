"""Read what the stream holds for this cluster's services (start-up reconciliation, tests, tools)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from edge_sync.core.agent import RemoteService
from edge_sync.core.publish_state import Key
from syncmesh import subjects
from syncmesh.schema import ServiceState, decode_service_state

__all__ = ["read_last_states", "read_cluster_services"]


def _ignore(reason: str, detail: str) -> None:
    return None


async def read_last_states(
    js: Any,
    cluster: str,
    on_invalid: Callable[[str, str], None] = _ignore,
    idle_timeout_s: float = 5.0,
) -> dict[Key, ServiceState | None]:
    """The last message of every ``syncmesh.v2.svc.<cluster>.>`` subject (None: undecodable).

    An ordered consumer with deliver policy "last per subject" streams them in
    one pass and stops when nothing is pending; no request per subject.
    """
    from nats.js.api import DeliverPolicy

    wildcard = subjects.cluster_service_wildcard(cluster)
    info = await js.stream_info(subjects.STREAM, subjects_filter=wildcard)
    if not (info.state.subjects or {}):
        return {}
    out: dict[Key, ServiceState | None] = {}
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
                try:
                    out[key] = decode_service_state(msg.data)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    on_invalid("stream_malformed", f"{msg.subject}: {exc}")
                    out[key] = None
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return out


async def read_cluster_services(
    js: Any, cluster: str, on_invalid: Callable[[str, str], None] = _ignore
) -> dict[Key, RemoteService]:
    """What reconciliation needs: per key, the source name and whether it is a tombstone.

    Undecodable content under our subject counts as live, so it gets a tombstone
    unless the source has that service.
    """
    states = await read_last_states(js, cluster, on_invalid)
    return {
        key: RemoteService(key[1], False)
        if state is None
        else RemoteService(state.source_name, state.deleted)
        for key, state in states.items()
    }
