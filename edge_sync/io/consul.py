"""Consul, asyncio adapter: two blocking queries, a bounded fetch pool, one bounded connector.

Connection bound: every request goes through one ``aiohttp.TCPConnector`` with
``limit = max_connections`` (<= 64); the two long polls hold two connections
and at most ``fetch_concurrency`` workers fetch, so the connector never even
has to queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec

from edge_sync.config import ConsulSourceConfig
from edge_sync.core.consul import (
    BlockingIndex,
    ConsulTracker,
    FetchBacklog,
    Plan,
    RelistSchedule,
    bulk_worthwhile,
)
from edge_sync.core.consul_mapping import (
    ConsulFormatError,
    NodeServices,
    decode_checks,
    decode_node_services,
)
from edge_sync.core.ratelimit import TokenBucket
from edge_sync.core.source_api import SourceSink
from syncmesh_io.retry import forever
from syncmesh_io.secrets import SecretFile

__all__ = ["ConsulSource", "ConsulHTTPError"]

log = logging.getLogger("edge_sync.consul")

CATALOG_PATH = "/v1/catalog/services"
CHECKS_PATH = "/v1/health/state/any"
NODES_PATH = "/v1/catalog/nodes"
FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs"
FIRST_RETRY_S = 0.2
# Services turned into results (and handed to the publisher) per turn of the loop by the
# bulk read: the publisher sends the first while the next are built.
BULK_SLICE = 250


class ConsulHTTPError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status


_RETRYABLE: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    TimeoutError,
    ConsulHTTPError,
    msgspec.DecodeError,
    # A token file being replaced (not atomically) is briefly unreadable.
    OSError,
)


def _error_reason(exc: BaseException) -> str:
    if isinstance(exc, ConsulHTTPError):
        return "consul_forbidden" if exc.status == 403 else f"consul_http_{exc.status}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "consul_connect"
    if isinstance(exc, TimeoutError):
        return "consul_timeout"
    if isinstance(exc, msgspec.DecodeError):
        return "consul_malformed"
    return "consul_io"


def _on_loopback(address: str) -> bool:
    """``host:port`` (or ``[v6]:port``) names this machine."""
    host = address
    if address.startswith("["):
        host = address[1:].split("]", 1)[0]
    elif address.count(":") == 1:
        host = address.split(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _index_value(header: str | None) -> int:
    try:
        return int(header) if header is not None else 0
    except ValueError:
        return 0


class ConsulSource:
    def __init__(
        self, config: ConsulSourceConfig, sink: SourceSink, may_accept: Callable[[str], bool]
    ) -> None:
        self.config = config
        self.sink = sink
        self.tracker = ConsulTracker(config.skip_services, may_accept, config.attribution_grace_s)
        self.backlog = FetchBacklog()
        self._work = asyncio.Event()
        # Set after every watch result: the re-list schedule may have a new deadline.
        self._watched = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._bucket: TokenBucket | None = None
        self._token_file: SecretFile | None = None
        self._synced = False
        # Closed until the initial read (bulk or not) is planned: workers then start,
        # so a per-service fetch is never overwritten by an older bulk answer.
        self._initial_read = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.config.scheme != "https":
            return False
        return ssl.create_default_context(cafile=self.config.ca_file or None)

    def _params(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        params = dict(extra or {})
        if self.config.datacenter:
            params["dc"] = self.config.datacenter
        return params

    def _new_session(self) -> aiohttp.ClientSession:
        cfg = self.config
        connector = aiohttp.TCPConnector(
            limit=cfg.max_connections, limit_per_host=cfg.max_connections, ssl=self._ssl()
        )
        headers = {"X-Consul-Token": cfg.token} if cfg.token else {}
        if _on_loopback(cfg.address):
            # A Consul agent on this machine: gzip would only cost CPU on both sides of
            # the same machine (the 6.7 MB checks snapshot of 15,000 checks, 8.7 MB of
            # node-services in a 5,000-service initial read: ~40 % of their time).
            headers["Accept-Encoding"] = "identity"
        # A token file is read per request (one stat; re-read when it changed).
        self._token_file = SecretFile(cfg.token_file) if cfg.token_file else None
        return aiohttp.ClientSession(
            base_url=f"{cfg.scheme}://{cfg.address}", connector=connector, headers=headers
        )

    async def run(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._bucket = TokenBucket(cfg.rate_per_s, cfg.burst, loop.time())
        async with self._new_session() as session:
            self._session = session
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self._watch(CATALOG_PATH, self.tracker.on_catalog))
                group.create_task(self._watch(CHECKS_PATH, self.tracker.on_checks))
                group.create_task(self._relist_timer())
                for _ in range(cfg.fetch_concurrency):
                    group.create_task(self._worker())

    # -- HTTP ------------------------------------------------------------
    def _on_error(self, what: str) -> Callable[[BaseException, int], None]:
        def report(exc: BaseException, attempt: int) -> None:
            self.sink.failed(
                _error_reason(exc), f"{what}: {type(exc).__name__}: {exc} (attempt {attempt})"
            )

        return report

    async def _get_once(
        self,
        path: str,
        params: dict[str, str],
        timeout_s: float,
        kind: str,
        decode: Callable[[bytes], Any] = msgspec.json.decode,
    ) -> tuple[Any, str | None]:
        assert self._session is not None
        self.sink.request(kind)
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        headers = (
            {"X-Consul-Token": self._token_file.value()} if self._token_file is not None else None
        )
        async with self._session.get(path, params=params, timeout=timeout, headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise ConsulHTTPError(resp.status, body[:200].decode("utf-8", "replace"))
            return decode(body), resp.headers.get("X-Consul-Index")

    async def _get(
        self,
        path: str,
        params: dict[str, str],
        timeout_s: float,
        kind: str,
        retry_params: dict[str, str] | None = None,
        decode: Callable[[bytes], Any] = msgspec.json.decode,
    ) -> tuple[Any, str | None]:
        """One GET, retried forever with backoff; decoded JSON and X-Consul-Index."""
        try:
            # The retry machinery is only built once something failed: thousands of
            # fetches per re-list should not pay for it.
            return await self._get_once(path, params, timeout_s, kind, decode)
        except _RETRYABLE as exc:
            report = self._on_error(path)
            report(exc, 1)
        await asyncio.sleep(FIRST_RETRY_S * (1 + random.random()))
        result: tuple[Any, str | None] = (None, None)
        # A failed blocking query may mean a restarted Consul whose index starts over:
        # asking it to block on our old, higher index would hang for the whole wait.
        params = retry_params if retry_params is not None else params
        async for attempt in forever(_RETRYABLE, lambda exc, n: report(exc, n + 1)):
            with attempt:
                result = await self._get_once(path, params, timeout_s, kind, decode)
        return result

    # -- blocking-query loops ----------------------------------------------
    async def _throttle(self) -> None:
        assert self._bucket is not None
        loop = asyncio.get_running_loop()
        delay = self._bucket.delay(loop.time())
        if delay > 0:
            await asyncio.sleep(delay)
        self._bucket.try_take(loop.time())

    async def _watch(self, path: str, handle: Callable[[Any, int, float], Plan]) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        index = BlockingIndex()
        blocking_timeout = cfg.wait_s + cfg.wait_s / 16 + cfg.request_timeout_s
        kind = "catalog" if path == CATALOG_PATH else "checks"
        decode = decode_checks if path == CHECKS_PATH else msgspec.json.decode
        while True:
            await self._throttle()
            params = self._params({"index": str(index.value), "wait": f"{int(cfg.wait_s)}s"})
            fresh_read = self._params({"index": "0"})
            data, header = await self._get(path, params, blocking_timeout, kind, fresh_read, decode)
            if index.observe(header):
                self.sink.event("consul_index_reset")
                log.info(
                    "consul %s index went backwards (restart or snapshot restore); reset to 0 "
                    "for a fresh read, and every service is read again",
                    path,
                )
                self.tracker.index_reset()
            try:
                plan = handle(data, _index_value(header), loop.time())
            except ConsulFormatError as exc:
                self.sink.invalid("consul_malformed", str(exc))
                self.sink.failed("consul_malformed", str(exc))
                continue
            self.sink.recovered()
            self._apply_plan(plan)
            self._watched.set()

    def _apply_plan(self, plan: Plan) -> None:
        if plan.removed:
            for ref in plan.removed:
                self.backlog.discard(ref.name)
            self.sink.apply(removed=plan.removed)
        if plan.initial:
            assert self._group is not None
            self._group.create_task(self._initial_bulk(plan.fetch))
            return
        if plan.fetch:
            self.backlog.add(plan.fetch)
            self._work.set()

    # -- initial bulk read -------------------------------------------------
    async def _initial_bulk(self, names: set[str]) -> None:
        """The initial read: node by node when that takes fewer requests, else per service.

        Anything the bulk read could not give (refused, failed, malformed, a service
        it did not see) goes through the per-service fetch pool as before.
        """
        try:
            fetch = await self._bulk_read(names)
        except asyncio.CancelledError:
            raise
        except ConsulHTTPError as exc:
            if exc.status == 403:
                log.warning(
                    "consul: bulk initial read refused (HTTP 403: the token lacks node:read); "
                    "reading service by service"
                )
            else:
                log.warning(
                    "consul: bulk initial read failed (%s); reading service by service", exc
                )
            self.sink.event("consul_bulk_fallback")
            fetch = names
        except ConsulFormatError as exc:
            self.sink.invalid("consul_malformed", str(exc))
            log.warning("consul: bulk initial read malformed (%s); reading service by service", exc)
            self.sink.event("consul_bulk_fallback")
            fetch = names
        except Exception as exc:  # noqa: BLE001 - the per-service path is the fallback
            log.warning(
                "consul: bulk initial read failed (%s: %s); reading service by service",
                type(exc).__name__,
                exc,
            )
            self.sink.event("consul_bulk_fallback")
            fetch = names
        self.backlog.add(fetch)
        self._initial_read.set()
        self._work.set()

    async def _bulk_read(self, names: set[str]) -> set[str]:
        """Read every node's services and apply them; the names still to fetch one by one."""
        cfg = self.config
        nodes, _ = await self._get_once(NODES_PATH, self._params(), cfg.request_timeout_s, "nodes")
        if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
            raise ConsulFormatError("catalog/nodes: expected a list of objects")
        node_names = sorted({str(n.get("Node", "")) for n in nodes} - {""})
        if not bulk_worthwhile(len(node_names), len(names)):
            return names
        self.sink.event("consul_bulk_read")
        limit = asyncio.Semaphore(cfg.fetch_concurrency)
        filtered = False
        bulk = self.tracker.bulk_read()
        arrived: asyncio.Queue[NodeServices] = asyncio.Queue()

        async def node_services(node: str) -> None:
            nonlocal filtered
            path = f"/v1/catalog/node-services/{quote(node, safe='')}"
            async with limit:
                data, was_filtered = await self._get_bulk(path)
            filtered = filtered or was_filtered
            arrived.put_nowait(data)

        async def map_answers() -> None:
            # Each answer is mapped as it arrives, while Consul still works on the others,
            # one answer per turn of the loop: answers arriving together must not hold up
            # the NATS connection's round trips (connect, stream check, claim) behind them.
            for _ in node_names:
                bulk.add(await arrived.get())
                await asyncio.sleep(0)

        mapper = asyncio.ensure_future(map_answers())
        try:
            await asyncio.gather(*(node_services(n) for n in node_names))
            await mapper
        finally:
            mapper.cancel()
        missing: set[str] = set()
        catalog = self.tracker.names()
        for start in range(0, len(catalog), BULK_SLICE):
            # A slice at a time, the loop turning between slices: the publisher sends the
            # first services (and NATS stores them) while the next slice is built.
            result = bulk.finish(catalog[start : start + BULK_SLICE])
            for bad in result.invalid:
                self.sink.invalid(bad.reason, bad.detail)
            if result.changed or result.removed:
                self.sink.apply(result.changed, result.removed)
            missing |= result.missing
            await asyncio.sleep(0)
        if filtered:
            log.info(
                "consul: the token may not read every node or service (results filtered by "
                "ACLs); %d services not seen in bulk are read one by one",
                len(missing),
            )
        return missing

    async def _get_bulk(self, path: str) -> tuple[NodeServices, bool]:
        """One GET of the bulk read; also whether Consul filtered the answer by ACLs."""
        assert self._session is not None
        self.sink.request("node_services")
        headers = (
            {"X-Consul-Token": self._token_file.value()} if self._token_file is not None else None
        )
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout_s)
        async with self._session.get(
            path, params=self._params(), timeout=timeout, headers=headers
        ) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise ConsulHTTPError(resp.status, body[:200].decode("utf-8", "replace"))
            filtered = resp.headers.get(FILTERED_HEADER, "").lower() == "true"
            return decode_node_services(body), filtered

    async def _relist_timer(self) -> None:
        """Sleeps until the schedule's next deadline or a watch result; the policy is pure."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        schedule = RelistSchedule(
            self.tracker, cfg.full_relist_interval_s, cfg.min_relist_interval_s, loop.time()
        )
        while True:
            deadline = schedule.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._watched.wait(), timeout)
            self._watched.clear()
            reason = schedule.due(loop.time())
            if reason is not None:
                self.sink.event(f"consul_relist_{reason}")
                self.backlog.add(self.tracker.names())
                self._work.set()

    # -- fetch pool --------------------------------------------------------
    async def _worker(self) -> None:
        cfg = self.config
        await self._initial_read.wait()
        while True:
            name = self.backlog.next()
            if name is None:
                self._maybe_synced()
                self._work.clear()
                await self._work.wait()
                continue
            try:
                path = f"/v1/health/service/{quote(name, safe='')}"
                data, _ = await self._get(path, self._params(), cfg.request_timeout_s, "service")
                try:
                    result = self.tracker.on_service_health(name, data)
                except ConsulFormatError as exc:
                    self.sink.invalid("consul_malformed", str(exc))
                    continue
                for bad in result.invalid:
                    self.sink.invalid(bad.reason, bad.detail)
                if result.changed or result.removed:
                    self.sink.apply(result.changed, result.removed)
            finally:
                self.backlog.done(name)
                if len(self.backlog):
                    self._work.set()

    def _maybe_synced(self) -> None:
        if (
            not self._synced
            and self.tracker.initial_planned
            and self._initial_read.is_set()
            and self.backlog.idle
        ):
            self._synced = True
            self.sink.synced()

    # -- one-shot listing ----------------------------------------------------
    async def list_once(self) -> None:
        """One complete listing, no watch (``syncmesh audit``): the catalog, then every
        wanted service's health through the same mapping, reported to the sink (then
        ``synced``). Errors are raised, not retried."""
        cfg = self.config
        async with self._new_session() as session:
            self._session = session
            try:
                data, header = await self._get_once(
                    CATALOG_PATH, self._params(), cfg.request_timeout_s, "catalog"
                )
                self.tracker.on_catalog(data, _index_value(header), 0.0)
                limit = asyncio.Semaphore(cfg.fetch_concurrency)

                async def fetch(name: str) -> None:
                    path = f"/v1/health/service/{quote(name, safe='')}"
                    async with limit:
                        entries, _ = await self._get_once(
                            path, self._params(), cfg.request_timeout_s, "service"
                        )
                    result = self.tracker.on_service_health(name, entries)
                    for bad in result.invalid:
                        self.sink.invalid(bad.reason, bad.detail)
                    if result.changed:
                        self.sink.apply(result.changed)

                await asyncio.gather(*(fetch(name) for name in self.tracker.names()))
            finally:
                self._session = None
        self.sink.synced()
