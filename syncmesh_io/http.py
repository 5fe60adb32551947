"""One small aiohttp server for a process's admin endpoints (metrics, health, ...).

The one HTTP server of every process (the agent's health and metrics, the
registry's admin API and status page). Callers add GET routes with plain async
functions that return an ``HttpReply`` (``add_get``), or aiohttp handlers that
need the request (``add_handler``, ``on_setup``); ``metrics_route`` serves a
prometheus CollectorRegistry. Port ``-1`` (or 0) binds an ephemeral port; the
bound one is ``HttpServer.port``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["HttpReply", "HttpServer", "MetricsServer", "json_reply", "metrics_route"]


class HttpReply(NamedTuple):
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[], Awaitable[HttpReply]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_reply(status: int, value: object) -> HttpReply:
    return HttpReply(status, msgspec.json.encode(value), "application/json")


def metrics_route(registry: CollectorRegistry) -> Route:
    async def metrics() -> HttpReply:
        return HttpReply(200, generate_latest(registry), CONTENT_TYPE_LATEST)

    return metrics


class HttpServer:
    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.requested_port = port
        self.port = 0
        self._routes: dict[str, Route] = {}
        self._handlers: dict[str, Handler] = {}
        self._setups: list[Callable[[web.Application], None]] = []
        self._runner: web.AppRunner | None = None

    def add_get(self, path: str, route: Route) -> None:
        """Serve ``GET path`` (and HEAD) from ``route``; call before ``start``."""
        self._routes[path] = route

    def add_handler(self, path: str, handler: Handler) -> None:
        """Serve ``GET path`` with an aiohttp handler (it reads the query string)."""
        self._handlers[path] = handler

    def on_setup(self, setup: Callable[[web.Application], None]) -> None:
        """Let ``setup`` add its own routes (a static page and its data) at start."""
        self._setups.append(setup)

    @staticmethod
    def _handler(route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(_request: web.Request) -> web.Response:
            reply = await route()
            # As a header, so parameters such as prometheus' version=0.0.4 are kept.
            return web.Response(
                status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type}
            )

        return handle

    async def start(self) -> None:
        """Bind and serve; raises ``OSError`` when the port is taken."""
        app = web.Application()
        for path, route in self._routes.items():
            app.router.add_get(path, self._handler(route))
        for path, handler in self._handlers.items():
            app.router.add_get(path, handler)
        for setup in self._setups:
            setup(app)
        # The process handles its own signals (SIGTERM like Ctrl-C), not aiohttp.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.address, max(self.requested_port, 0))
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server  # aiohttp exposes the bound port only through the server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.requested_port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class MetricsServer(HttpServer):
    """Serves one CollectorRegistry at ``/metrics``."""

    def __init__(self, registry: CollectorRegistry, address: str, port: int) -> None:
        super().__init__(address, port)
        self.registry = registry
        self.add_get("/metrics", metrics_route(registry))
