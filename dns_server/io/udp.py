"""UDP adapters around ``AnswerEngine``: a reader thread or an asyncio protocol
(the batched reader thread, the default on Linux, is in ``udp_batch``).

Every mode answers cache hits with the same function, ``engine.hot``, and
hands the rest to ``engine.handle``.

Why a thread: per datagram, a blocking ``recvfrom``/``sendto`` loop costs less
than an event loop's readiness polling and callback machinery (measured on
2 cores: about 1.3x the queries per second of a uvloop ``DatagramProtocol``
doing the same lookup). The thread only calls ``engine.hot``, which reads
dicts that the loop thread mutates with single, GIL-atomic operations. Every
other packet goes to the event loop thread through a bounded queue, so the
engine's slow path, the cache's bookkeeping and the view only run on the loop.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
import time
from typing import Any

from dns_server.core.engine import AnswerEngine
from dns_server.io.metrics import DnsMetrics

__all__ = ["UdpProtocol", "UdpReaderThread"]

# Largest datagram read; a DNS query is far smaller, a larger packet is cut and rejected.
_READ_SIZE = 4096
# Packets waiting for the loop thread; beyond this the reader drops (overload).
_MAX_PENDING = 4096
# How long the loop thread answers misses per turn before other callbacks run.
_DRAIN_BUDGET_S = 0.005


class UdpProtocol(asyncio.DatagramProtocol):
    """Everything on the event loop (``udp_mode = "loop"``)."""

    def __init__(self, engine: AnswerEngine, metrics: DnsMetrics, sample_every: int) -> None:
        self._hot = engine.hot
        self._handle = engine.handle
        self._metrics = metrics
        self._sample_every = sample_every
        self._until_sample = sample_every
        self._sendto: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not every loop's datagram transport subclasses DatagramTransport.
        self._sendto = transport.sendto  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._until_sample -= 1
        started = 0.0
        if not self._until_sample:
            self._until_sample = self._sample_every
            started = time.perf_counter()
        response = self._hot(data, addr[0]) or self._handle(data, addr[0])
        if response is not None:
            self._sendto(response, addr)
        if started:
            self._metrics.udp_latency.observe(time.perf_counter() - started)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable from a client that went away: nothing to do but count.
        self._metrics.transport_errors.labels("udp_" + type(exc).__name__).inc()


class UdpReaderThread:
    """A blocking socket served by a thread; misses handled on ``loop``."""

    def __init__(
        self,
        sock: socket.socket,
        engine: AnswerEngine,
        metrics: DnsMetrics,
        loop: asyncio.AbstractEventLoop,
        sample_every: int,
    ) -> None:
        sock.setblocking(True)
        self._sock = sock
        self._engine = engine
        self._metrics = metrics
        self._loop = loop
        self._sample_every = sample_every
        self._pending: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._drain_scheduled = False
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="syncmesh-dns-udp", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        recv = self._sock.recvfrom
        send = self._sock.sendto
        hot = self._engine.hot
        forward = self._forward
        observe = self._metrics.udp_latency.observe
        perf_counter = time.perf_counter
        sample_every = self._sample_every
        countdown = sample_every
        while True:
            try:
                data, addr = recv(_READ_SIZE)
                countdown -= 1
                started = 0.0
                if not countdown:
                    countdown = sample_every
                    started = perf_counter()
                response = hot(data, addr[0])
                if response is None:
                    # Misses are timed by _drain, on the loop thread.
                    if forward(data, addr):
                        return
                    continue
                send(response, addr)
                if started:
                    observe(perf_counter() - started)
            except OSError as exc:
                if self._stopping:
                    return
                self._metrics.transport_errors.labels("udp_" + type(exc).__name__).inc()
            except Exception as exc:  # the reader must outlive any bug
                self._metrics.transport_errors.labels("udp_reader_" + type(exc).__name__).inc()

    def _forward(self, data: bytes, addr: Any) -> bool:
        """Queue a packet for the loop thread; True when the reader must stop."""
        if self._stopping:
            return True
        if len(self._pending) >= _MAX_PENDING:
            self._metrics.transport_errors.labels("udp_overload").inc()
            return False
        self._pending.append((data, addr))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon_threadsafe(self._drain)
        return False

    def _drain(self) -> None:
        # Cleared before draining: a packet queued meanwhile schedules another drain.
        self._drain_scheduled = False
        handle = self._engine.handle
        pending = self._pending
        # At most a few milliseconds per turn, then the rest after whatever else
        # is ready: drained to empty, a flood of misses (random names, ECS) kept
        # this one callback running as long as it lasted and starved every task
        # on the loop (NATS, probes, the stream, the GC refreeze). A budget of
        # time, not of packets: each turn costs the loop a GIL hand-over with the
        # reader thread, and 64 packets a turn halved the misses served.
        deadline = time.perf_counter() + _DRAIN_BUDGET_S
        started = 0.0
        while pending and started < deadline:
            data, addr = pending.popleft()
            started = time.perf_counter()
            response = handle(data, addr[0])
            if response is None:
                continue
            try:
                self._sock.sendto(response, addr)
            except OSError as exc:
                self._metrics.transport_errors.labels("udp_" + type(exc).__name__).inc()
            self._metrics.udp_latency.observe(time.perf_counter() - started)
        if pending and not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    async def stop(self) -> None:
        self._stopping = True
        # Wake the blocked recvfrom with a datagram of our own.
        family = self._sock.family
        address = self._sock.getsockname()
        host = address[0]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if family == socket.AF_INET else "::1"
        with socket.socket(family, socket.SOCK_DGRAM) as waker:
            for _ in range(50):
                waker.sendto(b"", (host, address[1]))
                await asyncio.to_thread(self._thread.join, 0.1)
                if not self._thread.is_alive():
                    break
        self._sock.close()
