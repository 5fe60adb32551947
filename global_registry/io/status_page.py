"""The operator status page on the admin HTTP: ``GET /status`` and its data, ``/status/data.json``.

One static HTML file (``status_page.html``, plain HTML and a little JavaScript,
no build step) that fetches ``/status/data.json?client=&namespace=`` every two
seconds: the replica's status (clusters with beat age, source health and
staleness; gateways with probe state and RTT) and a services x clusters matrix
of healthy instance counts with, per service, the cluster the DNS would answer
with for the chosen client address. Clicking a service asks ``/v1/resolve`` for
the whole ranking and its reasons.

The matrix is built here (``page_data`` is pure) rather than from
``/v1/inventory`` in the browser: it needs only the counts the view already
keeps, not every instance decoded, so refreshing it every two seconds stays
cheap with many services; ``limit`` bounds the rows.
"""

from __future__ import annotations

import ipaddress
from functools import cache
from importlib import resources
from typing import Protocol

from aiohttp import web
from msgspec import Struct

from global_registry.core.snapshot import RegistryStatus, resolve_reply
from global_registry.core.view import RegistryView
from syncmesh.schema import ResolveRequest, encode

__all__ = ["StatusPageSource", "MatrixRow", "StatusPageData", "page_data", "add_status_page"]

DEFAULT_ROWS = 500
MAX_ROWS = 5000


class StatusPageSource(Protocol):
    @property
    def view(self) -> RegistryView: ...

    def status_report(self) -> RegistryStatus: ...


class MatrixCell(Struct, kw_only=True):
    healthy: int
    instances: int


class MatrixRow(Struct, kw_only=True, omit_defaults=True):
    namespace: str
    service: str
    # cluster -> counts; a cluster without the service has no entry.
    cells: dict[str, MatrixCell] = {}
    # The cluster (and its gateway addresses) the DNS answers with for the chosen client.
    answer: str | None = None
    answer_reason: str = ""
    answer_addresses: list[str] = []


class StatusPageData(Struct, kw_only=True):
    status: RegistryStatus
    clusters: list[str]
    rows: list[MatrixRow]
    # Services left out beyond ``limit``.
    truncated: int = 0
    client: str = ""
    client_error: str = ""


def page_data(
    view: RegistryView,
    report: RegistryStatus,
    client: str = "",
    namespace: str = "",
    limit: int = DEFAULT_ROWS,
) -> StatusPageData:
    client = client.strip()
    client_error = ""
    if client:
        try:
            ipaddress.ip_address(client)
        except ValueError:
            client_error = f"{client!r} is not an IP address; answers are for no client"
            client = ""
    keys: set[tuple[str, str]] = set()
    for rec in view.clusters.values():
        keys.update(k for k in rec.services if not namespace or k[0] == namespace)
    ordered = sorted(keys)
    rows = []
    for ns, service in ordered[:limit]:
        cells = {
            name: MatrixCell(healthy=entry.healthy, instances=entry.instances)
            for name, rec in sorted(view.clusters.items())
            if (entry := rec.services.get((ns, service))) is not None
        }
        reply = resolve_reply(
            view, ResolveRequest(namespace=ns, service=service, client=client or None)
        )
        row = MatrixRow(namespace=ns, service=service, cells=cells)
        if reply.clusters:
            top = reply.clusters[0]
            row.answer = top.cluster
            row.answer_reason = top.reason
            row.answer_addresses = [g.address for g in top.gateways]
        rows.append(row)
    return StatusPageData(
        status=report,
        clusters=sorted(view.clusters),
        rows=rows,
        truncated=max(0, len(ordered) - limit),
        client=client,
        client_error=client_error,
    )


@cache
def _html() -> bytes:
    return resources.files(__package__).joinpath("status_page.html").read_bytes()


def add_status_page(app: web.Application, source: StatusPageSource) -> None:
    """Register ``/status`` and ``/status/data.json`` on the admin HTTP application."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=_html(), content_type="text/html", charset="utf-8")

    async def data(request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = min(MAX_ROWS, max(1, int(query.get("limit") or DEFAULT_ROWS)))
        except ValueError:
            return web.Response(status=400, text="limit: not a number\n")
        body = page_data(
            source.view,
            source.status_report(),
            client=query.get("client", ""),
            namespace=query.get("namespace", ""),
            limit=limit,
        )
        return web.Response(body=encode(body), content_type="application/json")

    app.router.add_get("/status", page)
    app.router.add_get("/status/data.json", data)
