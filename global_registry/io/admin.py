"""Admin HTTP for operators and orchestrators (aiohttp, 127.0.0.1 by default).

``/healthz`` (the process serves), ``/readyz`` (the view caught up),
``/metrics`` (Prometheus), ``/v1/inventory`` (JSON, ``?cluster=&namespace=``),
``/v1/status`` (clusters, staleness, gateway probe states) and ``/v1/resolve``
(``?service=&namespace=&client=&cluster=``, the answer the DNS would rank).
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from global_registry.core.snapshot import RegistryStatus, inventory, resolve_reply
from global_registry.core.view import RegistryView
from global_registry.io.status_page import add_status_page
from syncmesh.schema import ResolveRequest, encode
from syncmesh_io.http import HttpServer, metrics_route

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
        # The one HTTP server every process uses (syncmesh_io.http).
        self._http = HttpServer(address, port)
        self._http.add_get("/metrics", metrics_route(collector_registry))
        self._http.add_handler("/healthz", self._healthz)
        self._http.add_handler("/readyz", self._readyz)
        self._http.add_handler("/v1/inventory", self._inventory)
        self._http.add_handler("/v1/status", self._status)
        self._http.add_handler("/v1/resolve", self._resolve)
        self._http.on_setup(lambda app: add_status_page(app, self._source))

    @property
    def port(self) -> int:
        return self._http.port

    async def start(self) -> None:
        await self._http.start()

    async def close(self) -> None:
        await self._http.stop()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        text = self._source.readiness() + "\n"
        return web.Response(text=text, status=200 if self._source.ready else 503)

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
