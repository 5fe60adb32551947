"""asyncio adapter of ``GatewayProbes``: runs the TCP connects the core asks for."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Callable, Iterable

from global_registry.config import ProbeConfig
from global_registry.core.probe_fsm import ProbePhase
from global_registry.core.probes import (
    GatewayId,
    GatewayProbes,
    GatewayStatus,
    ProbeOutcome,
    ProbeResult,
)
from global_registry.io.metrics import RegistryMetrics

__all__ = ["tcp_probe", "kernel_rtt_s", "ProbeRunner"]

log = logging.getLogger(__name__)

_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}
# struct tcp_info (linux/tcp.h): tcpi_rtt, in microseconds, is the u32 at byte 68.
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_TCPI_RTT = struct.Struct("=I")
_TCPI_RTT_OFFSET = 68


def kernel_rtt_s(sock: socket.socket) -> float | None:
    """The handshake RTT the kernel measured for a just-connected socket, or None.

    Timing ``sock_connect`` on the event loop adds however long the loop was
    busy when the connect completed (a miss storm, a GC pause: 100 ms read for
    a 0.06 ms loopback connect), and that moved gateways between RTT buckets.
    The kernel takes its sample from SYN to SYN-ACK, outside the loop, in
    microseconds. 0 means it kept no sample (a retransmitted SYN, Karn's rule).
    """
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
    except OSError:
        return None
    if len(info) < _TCPI_RTT_OFFSET + 4:
        return None
    (rtt_us,) = _TCPI_RTT.unpack_from(info, _TCPI_RTT_OFFSET)
    return rtt_us / 1e6 if rtt_us else None


async def tcp_probe(address: str, port: int, timeout_s: float) -> ProbeOutcome:
    """One TCP connect (and immediate close); success means the gateway accepts connections."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    started = loop.time()
    try:
        async with asyncio.timeout(timeout_s):
            await loop.sock_connect(sock, (address, port))
        rtt_s = kernel_rtt_s(sock)
        return ProbeOutcome(True, loop.time() - started if rtt_s is None else rtt_s)
    except TimeoutError:
        return ProbeOutcome(
            False, result=ProbeResult.TIMEOUT, detail=f"no connect within {timeout_s}s"
        )
    except ConnectionRefusedError:
        return ProbeOutcome(False, result=ProbeResult.REFUSED, detail="connection refused")
    except OSError as exc:
        result = ProbeResult.UNREACHABLE if exc.errno in _UNREACHABLE else ProbeResult.ERROR
        return ProbeOutcome(False, result=result, detail=exc.strerror or str(exc))
    finally:
        sock.close()


class ProbeRunner:
    def __init__(
        self,
        config: ProbeConfig,
        probes: GatewayProbes,
        on_status: Callable[[GatewayId, GatewayStatus, bool], None],
        metrics: RegistryMetrics | None = None,
    ) -> None:
        """``on_status(gateway, status, up_changed)`` is called after every probe."""
        self._config = config
        self.probes = probes
        self._on_status = on_status
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._round_done = asyncio.Event()

    def set_targets(self, gateways: Iterable[GatewayId]) -> None:
        self.probes.set_targets(gateways, self._loop.time())
        self._round_done.clear()
        self._wake.set()

    async def wait_all_probed(self) -> None:
        """Until every current target has had one outcome."""
        while not self.probes.all_probed():
            self._round_done.clear()
            # Also re-check now and then: removed targets can complete the round too.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.25):
                    await self._round_done.wait()

    async def run(self) -> None:
        try:
            while True:
                now = self._loop.time()
                for gw in self.probes.take_due(now):
                    task = asyncio.create_task(
                        self._probe(gw), name=f"probe {gw.address}:{gw.port}"
                    )
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                wakeup = self.probes.next_wakeup()
                self._wake.clear()
                delay = None if wakeup is None else max(0.0, wakeup - self._loop.time())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _probe(self, gw: GatewayId) -> None:
        try:
            outcome = await tcp_probe(gw.address, gw.port, self._config.timeout_s)
        except Exception as exc:  # a probe must never kill the loop
            outcome = ProbeOutcome(False, result=ProbeResult.ERROR, detail=repr(exc))
        before = self.probes.status(gw)
        status = self.probes.record(gw, outcome, self._loop.time())
        self._wake.set()
        if status is None:
            return
        up_changed = before is None or before.up != status.up or before.phase is ProbePhase.UNKNOWN
        if self._metrics is not None:
            self._metrics.probes.labels(outcome.result).inc()
            if outcome.ok and outcome.rtt_s is not None:
                self._metrics.probe_seconds.observe(outcome.rtt_s)
            if up_changed:
                self._metrics.probe_transitions.labels("1" if status.up else "0").inc()
        if up_changed:
            log.info(
                "gateway %s %s:%d is %s (%s%s)",
                gw.cluster,
                gw.address,
                gw.port,
                "up" if status.up else "down",
                outcome.result,
                f": {outcome.detail}" if outcome.detail else "",
            )
        self._on_status(gw, status, up_changed)
        if self.probes.all_probed():
            self._round_done.set()
