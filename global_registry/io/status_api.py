"""``syncmesh.v2.api.status``: one replica's operator status over NATS (asyncio adapter).

Unlike ``resolve`` and ``inventory`` there is no queue group: every replica
answers, because each probes the gateways from where it runs and an operator
wants to see all of them (``syncmesh status`` collects the replies). It starts
right after the NATS connection, before the replica is ready, so a replica
that is still catching up can say so.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import msgspec

from global_registry.core.snapshot import RegistryStatus
from syncmesh import subjects
from syncmesh.schema import StatusReply, StatusRequest, encode

__all__ = ["StatusSource", "status_reply", "serve_status"]

log = logging.getLogger(__name__)

_request_decoder = msgspec.json.Decoder(StatusRequest)


class StatusSource(Protocol):
    def status_report(self) -> RegistryStatus: ...

    def readiness(self) -> str: ...


def status_reply(report: RegistryStatus, readiness: str, cluster: str | None = None) -> StatusReply:
    """The wire form of a replica's status; fields the wire type lacks are left out."""
    # A round trip through builtins keeps this adapter independent of what the core's
    # status grows later: unknown fields are ignored, missing ones take defaults.
    reply = msgspec.convert(msgspec.to_builtins(report), StatusReply)
    clusters = [c for c in reply.clusters if cluster is None or c.cluster == cluster]
    return msgspec.structs.replace(reply, readiness=readiness, clusters=clusters)


async def serve_status(nc: Any, source: StatusSource) -> Any:
    """Subscribe on ``syncmesh.v2.api.status``; the subscription ends with the connection."""

    async def handle(msg: Any) -> None:
        if not msg.reply:
            return
        try:
            request = _request_decoder.decode(msg.data) if msg.data else StatusRequest()
        except msgspec.MsgspecError as exc:
            report = source.status_report()
            reply = StatusReply(
                replica=report.replica, ready=report.ready, error=f"bad request: {exc}"
            )
        else:
            reply = status_reply(source.status_report(), source.readiness(), request.cluster)
        try:
            await nc.publish(msg.reply, encode(reply))
        except Exception as exc:  # noqa: BLE001 - a lost reply must not end the subscription
            log.warning("cannot send status reply to %s: %s", msg.reply, exc)

    return await nc.subscribe(subjects.STATUS, cb=handle)
