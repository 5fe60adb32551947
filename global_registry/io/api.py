"""NATS request/reply API: ``resolve`` and ``inventory`` (asyncio adapter).

Replicas share a queue group, so one replica answers each request. A request
that does not decode gets a reply with ``error`` set (and is counted), never
silence: the caller would otherwise wait for its timeout.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from global_registry.config import ApiConfig
from global_registry.core.snapshot import inventory, resolve_reply
from global_registry.core.view import RegistryView
from global_registry.io.metrics import RegistryMetrics
from syncmesh import subjects
from syncmesh.schema import Inventory, InventoryRequest, ResolveReply, ResolveRequest, encode

__all__ = ["RegistryApi", "inventory_reply_bytes"]

log = logging.getLogger(__name__)

_resolve_decoder = msgspec.json.Decoder(ResolveRequest)
_inventory_decoder = msgspec.json.Decoder(InventoryRequest)


def inventory_reply_bytes(view: RegistryView, request: InventoryRequest, max_bytes: int) -> bytes:
    """The encoded inventory, or an error reply when it would exceed ``max_bytes``."""
    # The stored messages' sizes bound the reply's from below: refuse before building it.
    stored = sum(
        len(entry.raw)
        for name, rec in view.clusters.items()
        if request.cluster is None or name == request.cluster
        for key, entry in rec.services.items()
        if request.namespace is None or key[0] == request.namespace
    )
    data = (
        b"" if stored > max_bytes else encode(inventory(view, request.cluster, request.namespace))
    )
    if data and len(data) <= max_bytes:
        return data
    size = max(stored, len(data))
    return encode(
        Inventory(
            error=f"inventory is over {size} bytes, more than {max_bytes}: filter by cluster "
            "and/or namespace, or read the stream (global_registry.io.watch.watch_inventory)"
        )
    )


class RegistryApi:
    def __init__(
        self,
        nc: Any,
        config: ApiConfig,
        view: Callable[[], RegistryView],
        metrics: RegistryMetrics | None = None,
    ) -> None:
        self._nc = nc
        self._config = config
        self._view = view
        self._metrics = metrics
        self._subs: list[Any] = []

    async def start(self) -> None:
        queue = self._config.queue_group
        self._subs.append(await self._nc.subscribe(subjects.RESOLVE, queue=queue, cb=self._resolve))
        self._subs.append(
            await self._nc.subscribe(subjects.INVENTORY, queue=queue, cb=self._inventory)
        )
        # Ready means answering: make sure the server has the interest before that.
        await self._nc.flush()

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    def _count(self, api: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.api_requests.labels(api, outcome).inc()

    async def _resolve(self, msg: Any) -> None:
        if not msg.reply:
            return
        try:
            request = _resolve_decoder.decode(msg.data)
        except msgspec.MsgspecError as exc:
            self._count("resolve", "error")
            reply = ResolveReply(namespace="", service="", known=False, error=f"bad request: {exc}")
        else:
            reply = resolve_reply(self._view(), request)
            self._count("resolve", "error" if reply.error else "ok")
        await self._respond(msg, encode(reply))

    async def _inventory(self, msg: Any) -> None:
        if not msg.reply:
            return
        try:
            request = _inventory_decoder.decode(msg.data) if msg.data else InventoryRequest()
        except msgspec.MsgspecError as exc:
            self._count("inventory", "error")
            await self._respond(msg, encode(Inventory(error=f"bad request: {exc}")))
            return
        limit = min(
            self._config.max_reply_bytes, int(getattr(self._nc, "max_payload", 0) or 1 << 30)
        )
        data = inventory_reply_bytes(self._view(), request, limit)
        self._count("inventory", "ok")
        await self._respond(msg, data)

    async def _respond(self, msg: Any, data: bytes) -> None:
        try:
            await self._nc.publish(msg.reply, data)
        except Exception as exc:  # a lost reply must not stop the subscription
            log.warning("cannot send reply to %s: %s", msg.reply, exc)
