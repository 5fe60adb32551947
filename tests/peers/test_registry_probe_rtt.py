"""The probe RTT comes from the kernel, so a busy event loop does not move RTT buckets."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from global_registry.io.probe_runner import tcp_probe

pytestmark = pytest.mark.peers


async def test_a_stalled_loop_does_not_lengthen_the_probe_rtt() -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        port = listener.getsockname()[1]
        loop = asyncio.get_running_loop()
        # Block the loop right after the connect is issued, as a burst of cache
        # misses or a GC pause does: the loop-timed RTT read 100+ ms on loopback.
        loop.call_soon(time.sleep, 0.3)
        started = loop.time()
        outcome = await tcp_probe("127.0.0.1", port, timeout_s=10.0)
        waited = loop.time() - started
    assert outcome.ok and outcome.rtt_s is not None
    assert waited >= 0.29  # the stall happened inside the probe
    # Loopback handshakes take microseconds; 50 ms leaves room for a loaded machine
    # and is still six times below the stall the loop clock would have reported.
    assert outcome.rtt_s < 0.05, outcome.rtt_s


async def test_a_refused_probe_reports_no_rtt() -> None:
    # Bound but not listening: the port stays ours and every connect is refused.
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        outcome = await tcp_probe("127.0.0.1", bound.getsockname()[1], timeout_s=5.0)
    assert not outcome.ok and outcome.rtt_s is None
