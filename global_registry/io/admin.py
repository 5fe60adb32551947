"""Admin HTTP for operators and orchestrators (aiohttp, 127.0.0.1 by default).

``/healthz`` (the process serves), ``/readyz`` (the view caught up),
``/metrics`` (Prometheus), ``/v1/inventory`` (JSON, ``?cluster=&namespace=``),
``/v1/status`` (clusters, staleness, gateway probe states) and ``/v1/resolve``
(``?service=&namespace=&client=&cluster=``, the answer the DNS would rank).
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from global_registry.core.snapshot import RegistryStatus, inventory, resolve_reply
from global_registry.core.view import RegistryView
from global_registry.io.status_page import add_status_page
from syncmesh.schema import ResolveRequest, encode

__all__ = ["AdminSource", "AdminServer"]

_JSON = "application/json"


class AdminSource(Protocol):
    @property
    def view(self) -> RegistryView: ...

    @property
    def ready(self) -> bool: ...

    def readiness(self) -> str: ...

    def status_report(self) -> RegistryStatus: ...


class AdminServer:
    def __init__(
        self,
        source: AdminSource,
        collector_registry: CollectorRegistry,
        address: str,
        port: int,
    ) -> None:
        self._source = source
        self._collector_registry = collector_registry
        self._address = address
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/inventory", self._inventory)
        app.router.add_get("/v1/status", self._status)
        app.router.add_get("/v1/resolve", self._resolve)
        add_status_page(app, self._source)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._address, self._port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        text = self._source.readiness() + "\n"
        return web.Response(text=text, status=200 if self._source.ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._collector_registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _inventory(self, request: web.Request) -> web.Response:
        query = request.query
        snapshot = inventory(
            self._source.view, query.get("cluster") or None, query.get("namespace") or None
        )
        return web.Response(body=encode(snapshot), content_type=_JSON)

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(body=encode(self._source.status_report()), content_type=_JSON)

    async def _resolve(self, request: web.Request) -> web.Response:
        query = request.query
        service = query.get("service")
        if not service:
            return web.Response(status=400, text="missing ?service=\n")
        reply = resolve_reply(
            self._source.view,
            ResolveRequest(
                namespace=query.get("namespace") or "default",
                service=service,
                client=query.get("client") or None,
                cluster=query.get("cluster") or None,
                version=query.get("version") or None,
                tags=query.getall("tag", []),
            ),
        )
        return web.Response(body=encode(reply), content_type=_JSON)
