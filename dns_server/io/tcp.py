"""DNS over TCP (RFC 7766): length-prefixed messages, pipelining, idle timeout.

Every message goes through ``AnswerEngine.handle`` with the TCP size limit, so an
answer that was cut over UDP comes whole here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from dns_server.core.engine import AnswerEngine
from dns_server.io.metrics import DnsMetrics

__all__ = ["TcpConnection", "TcpLimits"]

_TCP_MAX_WRITE_BACKLOG = 1 << 20


class TcpLimits(Protocol):
    """What a connection needs from its server: limits and the open-connection set."""

    tcp_connections: set[TcpConnection]
    idle_timeout_s: float
    max_connections: int


class TcpConnection(asyncio.Protocol):
    def __init__(self, server: TcpLimits, engine: AnswerEngine, metrics: DnsMetrics) -> None:
        self._server = server
        self._engine = engine
        self._metrics = metrics
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._host = ""
        self._idle: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._host = peer[0] if peer else ""
        if len(self._server.tcp_connections) >= self._server.max_connections:
            self._close("tcp_connection_limit")
            return
        self._server.tcp_connections.add(self)
        self._metrics.tcp_connections.set(len(self._server.tcp_connections))
        self._arm()

    def _arm(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self._loop.call_later(
            self._server.idle_timeout_s, self._close, "tcp_idle_timeout"
        )

    def _close(self, reason: str) -> None:
        self._metrics.transport_errors.labels(reason).inc()
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._buffer += data
        buffer = self._buffer
        while len(buffer) >= 2:
            length = (buffer[0] << 8) | buffer[1]
            if length == 0:
                self._close("tcp_empty_message")
                return
            if len(buffer) < 2 + length:
                break
            message = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            started = time.perf_counter()
            response = self._engine.handle(message, self._host, tcp=True)
            if response is not None:
                transport.write(len(response).to_bytes(2, "big") + response)
                self._metrics.tcp_latency.observe(time.perf_counter() - started)
        if transport.get_write_buffer_size() > _TCP_MAX_WRITE_BACKLOG:
            # A client that pipelines queries but never reads the answers.
            self._close("tcp_write_backlog")
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._server.tcp_connections.discard(self)
        self._metrics.tcp_connections.set(len(self._server.tcp_connections))

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()
