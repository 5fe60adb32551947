"""Start and stop the DNS server: bind UDP and TCP on one port, wire the
answer engine, the metrics and the adapters together.

The engine never reads a clock; this module reads the wall clock once for the
SOA serial and the monotonic clock for the rejection log gate, and the
adapters read ``perf_counter`` for sampled latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from dns_server.config import DnsConfig
from dns_server.core.engine import AnswerEngine, OnReject
from dns_server.core.wire import Reject
from dns_server.io.metrics import DnsMetrics
from dns_server.io.tcp import TcpConnection
from dns_server.io.udp import UdpProtocol, UdpReaderThread
from dns_server.io.udp_batch import UdpBatchReaderThread, batch_io_available
from syncmesh.loggate import GatedLog, LogGate
from syncmesh.view_api import ViewChange, ViewReader

__all__ = ["DnsServer", "start_dns", "run"]

log = logging.getLogger("syncmesh.dns")
T = TypeVar("T")

# Each rejection reason is logged at most once per period, with the count of
# those suppressed since; the metric counts every one.
_REJECT_LOG_PERIOD_S = 10.0


def _reject_logger() -> OnReject:
    limited = GatedLog(log, LogGate(period_s=_REJECT_LOG_PERIOD_S))

    def on_reject(reason: Reject, host: str) -> None:
        limited.warning(reason, time.monotonic(), "dns: query from %s rejected", host)

    return on_reject


class DnsServer:
    """A running server; ``port`` is the bound port (UDP and TCP share it)."""

    def __init__(self, config: DnsConfig, engine: AnswerEngine) -> None:
        self.engine = engine
        self.port = 0
        self.tcp_connections: set[TcpConnection] = set()
        self.idle_timeout_s = config.tcp_idle_timeout_s
        self.max_connections = config.tcp_max_connections
        self._udp_transport: asyncio.BaseTransport | None = None
        self._udp_reader: UdpReaderThread | None = None
        self._tcp: asyncio.Server | None = None

    def invalidate(self, change: ViewChange) -> None:
        """Drop the cached answers ``change`` affects (every qtype and client class)."""
        if change:
            self.engine.invalidate(change)

    async def close(self) -> None:
        if self._udp_reader is not None:
            await self._udp_reader.stop()
        if self._udp_transport is not None:
            self._udp_transport.close()
        if self._tcp is not None:
            self._tcp.close()
            for connection in list(self.tcp_connections):
                connection.abort()
            await self._tcp.wait_closed()


def _bind(config: DnsConfig, port: int) -> tuple[socket.socket, socket.socket]:
    family = socket.AF_INET6 if ":" in config.address else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                udp.setsockopt(socket.SOL_SOCKET, option, config.udp_socket_buffer_bytes)
        udp.bind((config.address, port))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((config.address, udp.getsockname()[1]))
        tcp.listen(128)
        tcp.setblocking(False)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


def _bind_retrying(config: DnsConfig) -> tuple[socket.socket, socket.socket]:
    for attempt in range(20):
        try:
            return _bind(config, config.port)
        except OSError as exc:
            # Port 0: the ephemeral UDP port may be taken for TCP; pick another.
            if config.port != 0 or exc.errno != errno.EADDRINUSE or attempt == 19:
                raise
    raise AssertionError("unreachable")


async def start_dns(config: DnsConfig, view: ViewReader, registry: CollectorRegistry) -> DnsServer:
    """Serve ``config.zone`` from ``view`` on UDP and TCP ``config.address:config.port``.

    With ``enabled = false`` nothing is bound (``port`` stays 0) but the
    returned server still accepts ``invalidate`` and ``close``.
    """
    loop = asyncio.get_running_loop()
    engine = AnswerEngine(config, view, serial=int(time.time()), on_reject=_reject_logger())
    metrics = DnsMetrics(registry, lambda: engine.stats, lambda: len(engine.cache))
    server = DnsServer(config, engine)
    if not config.enabled:
        return server
    udp_sock, tcp_sock = _bind_retrying(config)
    server.port = int(udp_sock.getsockname()[1])
    try:
        server._tcp = await loop.create_server(
            lambda: TcpConnection(server, engine, metrics), sock=tcp_sock
        )
        if config.udp_mode in ("batch", "thread"):
            reader = (
                UdpBatchReaderThread
                if config.udp_mode == "batch" and batch_io_available()
                else UdpReaderThread
            )
            server._udp_reader = reader(
                udp_sock, engine, metrics, loop, config.latency_sample_every
            )
            server._udp_reader.start()
        else:
            udp_sock.setblocking(False)
            protocol = UdpProtocol(engine, metrics, config.latency_sample_every)
            server._udp_transport, _ = await loop.create_datagram_endpoint(
                lambda: protocol, sock=udp_sock
            )
    except BaseException:
        udp_sock.close()
        tcp_sock.close()
        raise
    log.info(
        "dns: serving %s on %s port %d (udp %s, tcp)",
        config.zone,
        config.address,
        server.port,
        config.udp_mode,
    )
    return server


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
