"""Gateway loads, asyncio adapter: reads every configured load source each
``load.interval_s`` and keeps ``EdgeCore.loads`` current; the next beat
carries the values (``Gateway.load``).

Sources (config ``[[load.sources]]``, parsing in ``edge_sync.core.load``):
a file, an HTTP URL, a Consul service instance's meta key or check output
(the Consul of ``[source.consul]``), a Nacos instance's metadata key (the
Nacos of ``[source.nacos]``, through its HTTP open API: the naming SDK's
subscriptions belong to the service source). A read that fails or times out
makes that gateway's load unknown (``None``), is counted by reason, and is
logged once per failure streak; the recovery is logged too.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge

from edge_sync.config import EdgeConfig, LoadSourceConfig
from edge_sync.core.load import (
    MAX_TEXT,
    GatewayLoads,
    LoadError,
    consul_load_text,
    gateway_key,
    nacos_load_text,
    parse_load,
)
from syncmesh_io.secrets import SecretFile

__all__ = ["LoadMetrics", "LoadPoller"]

log = logging.getLogger("edge_sync.load")

# Consul and Nacos answers for one service: bounded, a gateway service is small.
MAX_BODY = 4 * 1024 * 1024


class LoadMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.load = Gauge(
            "syncmesh_edge_gateway_load_percent",
            "Gateway load as last read from its load source (absent while unknown).",
            ["address", "port"],
            registry=registry,
        )
        self.reads = Counter(
            "syncmesh_edge_load_reads",
            "Load source reads, by outcome (ok, failed).",
            ["outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "syncmesh_edge_load_errors",
            "Failed load source reads by reason (load_unreadable, load_http_<code>, "
            "load_connect, load_timeout, load_malformed, load_range, load_no_instance, "
            "load_no_value); the gateway's load is unknown until the next good read.",
            ["reason"],
            registry=registry,
        )
        self.failing = Gauge(
            "syncmesh_edge_load_sources_failing",
            "Load sources whose last read failed.",
            registry=registry,
        )


def _http_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "load_timeout"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"load_http_{exc.status}"
    if isinstance(exc, aiohttp.ClientConnectionError):
        return "load_connect"
    return "load_io"


class LoadPoller:
    def __init__(
        self,
        config: EdgeConfig,
        loads: GatewayLoads,
        metrics: LoadMetrics,
        on_move: Callable[[], None] | None = None,
    ) -> None:
        """``on_move`` is called after a round of reads that moved a load by
        ``load.beat_on_change_pct`` from what the last beat carried."""
        self.config = config
        self.loads = loads
        self.metrics = metrics
        self._on_move = on_move
        consul = config.source.consul
        self._consul_token = SecretFile(consul.token_file) if consul.token_file else None
        nacos = config.source.nacos
        self._nacos_password = SecretFile(nacos.password_file) if nacos.password_file else None
        self._nacos_token: str | None = None
        self.rounds = 0

    async def run(self) -> None:
        """Until cancelled: every source, every ``interval_s``, concurrently."""
        cfg = self.config.load
        if not cfg.sources:
            return
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await asyncio.gather(*(self.refresh(session, s) for s in cfg.sources))
                self.metrics.failing.set(self.loads.failing)
                self.rounds += 1
                if self._on_move is not None and self.loads.moved(cfg.beat_on_change_pct):
                    self._on_move()
                await asyncio.sleep(cfg.interval_s)

    async def refresh(self, session: aiohttp.ClientSession, source: LoadSourceConfig) -> None:
        key = gateway_key(source.address, source.port)
        labels = (source.address, str(source.port))
        try:
            async with asyncio.timeout(self.config.load.timeout_s):
                text = await self._read(session, source)
            load = parse_load(text)
        except LoadError as exc:
            self._failed(source, labels, exc)
        except (OSError, aiohttp.ClientError, TimeoutError, msgspec.DecodeError) as exc:
            if isinstance(exc, msgspec.DecodeError):
                reason = "load_malformed"
            elif source.kind == "file" and not isinstance(exc, TimeoutError):
                reason = "load_unreadable"
            else:
                reason = _http_reason(exc)
            self._failed(source, labels, LoadError(reason, str(exc) or type(exc).__name__))
        else:
            self.metrics.reads.labels("ok").inc()
            self.metrics.load.labels(*labels).set(load)
            if self.loads.succeeded(key, load):
                log.info("load source of gateway %s:%s recovered", source.address, source.port)

    def _failed(self, source: LoadSourceConfig, labels: tuple[str, str], exc: LoadError) -> None:
        self.metrics.reads.labels("failed").inc()
        self.metrics.errors.labels(exc.reason).inc()
        # Unknown is absent, never 0: a dashboard must not read a broken source as idle.
        try:
            self.metrics.load.remove(*labels)
        except KeyError:
            pass
        if self.loads.failed(gateway_key(source.address, source.port), exc):
            log.warning(
                "load source of gateway %s:%s (%s) failed, load unknown until it answers: %s",
                source.address,
                source.port,
                source.kind,
                exc,
            )

    # -- the kinds -------------------------------------------------------------

    async def _read(self, session: aiohttp.ClientSession, source: LoadSourceConfig) -> str:
        if source.kind == "file":
            return await asyncio.to_thread(_read_file, source.path)
        if source.kind == "http":
            return await self._get_text(session, source.url)
        if source.kind == "consul":
            return consul_load_text(await self._consul(session, source), source)
        return nacos_load_text(await self._nacos(session, source), source)

    async def _get_text(self, session: aiohttp.ClientSession, url: str, **kwargs: Any) -> str:
        async with session.get(url, raise_for_status=True, **kwargs) as resp:
            return (await resp.content.read(MAX_TEXT + 1)).decode("utf-8", "replace")

    async def _get_json(self, session: aiohttp.ClientSession, url: str, **kwargs: Any) -> Any:
        async with session.get(url, raise_for_status=True, **kwargs) as resp:
            body = await resp.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise LoadError("load_malformed", f"answer larger than {MAX_BODY} bytes")
        return msgspec.json.decode(body)

    async def _consul(self, session: aiohttp.ClientSession, source: LoadSourceConfig) -> Any:
        cfg = self.config.source.consul
        headers = {}
        token = self._consul_token.value() if self._consul_token is not None else cfg.token
        if token:
            headers["X-Consul-Token"] = token
        params = {"dc": cfg.datacenter} if cfg.datacenter else {}
        sslctx: ssl.SSLContext | bool = False
        if cfg.scheme == "https":
            sslctx = ssl.create_default_context(cafile=cfg.ca_file or None)
        url = f"{cfg.scheme}://{cfg.address}/v1/health/service/{quote(source.service, safe='')}"
        return await self._get_json(session, url, headers=headers, params=params, ssl=sslctx)

    async def _nacos(self, session: aiohttp.ClientSession, source: LoadSourceConfig) -> Any:
        cfg = self.config.source.nacos
        base = f"http://{cfg.server_addr}/nacos"
        params = {
            "serviceName": source.service,
            "groupName": source.group,
            "namespaceId": "" if source.namespace == "public" else source.namespace,
            "healthyOnly": "false",
        }
        if cfg.username:
            params["accessToken"] = await self._nacos_login(session, base)
        try:
            return await self._get_json(session, f"{base}/v1/ns/instance/list", params=params)
        except aiohttp.ClientResponseError as exc:
            if exc.status == 403:
                # An expired token (or a rotated password): log in again next time.
                self._nacos_token = None
            raise

    async def _nacos_login(self, session: aiohttp.ClientSession, base: str) -> str:
        if self._nacos_token is not None and (
            self._nacos_password is None or not self._nacos_password.changed()
        ):
            return self._nacos_token
        cfg = self.config.source.nacos
        password = self._nacos_password.value() if self._nacos_password else cfg.password
        async with session.post(
            f"{base}/v1/auth/users/login",
            data={"username": cfg.username, "password": password},
            raise_for_status=True,
        ) as resp:
            reply = msgspec.json.decode(await resp.read())
        token = reply.get("accessToken") if isinstance(reply, dict) else None
        if not isinstance(token, str):
            raise LoadError("load_malformed", "nacos login answered no accessToken")
        self._nacos_token = token
        return token


def _read_file(path: str) -> str:
    with Path(path).open("rb") as fh:
        return fh.read(MAX_TEXT + 1).decode("utf-8", "replace")
