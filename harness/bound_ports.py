"""Ports that a syncmesh process bound itself (port 0), read back from its log.

Picking a free port in the test and handing it to a process that binds it
later races with every other process on the machine; a process that binds
port 0 cannot collide. Every syncmesh process logs each port it binds (the
registry's admin HTTP and DNS, the agent's health endpoints, the demo's
banner), so its log names the port it got. The last mention counts: a
process restarted into the same log file logs its new port after the old.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from syncmesh_app.embedded.process import PeerStartError, wait_until

__all__ = [
    "ADMIN_HTTP",
    "AGENT_HTTP",
    "DEMO_ADMIN",
    "DEMO_DNS",
    "DNS",
    "port_in_log",
    "wait_for_port",
]

ADMIN_HTTP = re.compile(r"admin HTTP on \S+?:(\d+)")
DNS = re.compile(r"dns: serving \S+ on \S+ port (\d+)")
AGENT_HTTP = re.compile(r"serving /metrics, /healthz and /readyz on \S+?:(\d+)")
DEMO_DNS = re.compile(r"DNS 127\.0\.0\.1:(\d+) ")
DEMO_ADMIN = re.compile(r"admin http://127\.0\.0\.1:(\d+)")


def port_in_log(log: Path, pattern: re.Pattern[str], offset: int = 0) -> int | None:
    """The port of the last line of ``log`` matching ``pattern``, if any; only
    bytes from ``offset`` on count (the log size when the process last started)."""
    try:
        with log.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    found = pattern.findall(text)
    return int(found[-1]) if found else None


async def wait_for_port(
    log: Path,
    pattern: re.Pattern[str],
    alive: Callable[[], bool] = lambda: True,
    timeout: float = 60.0,
) -> int:
    """Wait until ``log`` names the port; fails at once when the process is gone."""
    found: list[int] = []

    async def logged() -> bool:
        port = port_in_log(log, pattern)
        if port is not None:
            found.append(port)
            return True
        if not alive():
            raise PeerStartError(f"process exited before logging its port; log {log}")
        return False

    await wait_until(logged, timeout, interval=0.05, what=f"{pattern.pattern!r} in {log}")
    return found[-1]
