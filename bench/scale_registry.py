"""The registry under test, as its own process: spawned, waited for, measured, stopped.

The registry runs as in production (``python -m syncmesh_app registry --config
FILE``, stock settings unless ``extra`` TOML is given) so that the figures
include interpreter start, imports and the real NATS client, and so that its
CPU and RSS can be read from ``/proc`` apart from the bench's own.
``bench/dns_compare.py`` spawns it the same way.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.common import CLIENT, ZONE, ProcStats, free_udp_tcp_port
from syncmesh_app.embedded.process import dying_with_parent, free_port

__all__ = ["Registry", "spawn_registry"]

# The checkout root: the child imports syncmesh from it (PYTHONPATH), as the bench does.
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Registry:
    """A spawned registry process and the ports it was given."""

    process: asyncio.subprocess.Process
    admin_port: int
    dns_port: int
    spawned_at: float
    log: Path

    @property
    def stats(self) -> ProcStats:
        return ProcStats(self.process.pid)

    @property
    def metrics_url(self) -> str:
        return f"http://{CLIENT}:{self.admin_port}/metrics"

    async def wait_ready(self, http: aiohttp.ClientSession, timeout: float = 300) -> float:
        url = f"http://{CLIENT}:{self.admin_port}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"registry exited: {self.log.read_text()[-3000:]}")
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return time.monotonic() - self.spawned_at
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.01)
        raise RuntimeError(f"registry not ready after {timeout}s: {self.log.read_text()[-3000:]}")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def spawn_registry(workdir: Path, nats_url: str, name: str, extra: str = "") -> Registry:
    """``extra``: more TOML appended to the config (diagnostics; the default is none)."""
    admin_port, dns_port = free_port(), free_udp_tcp_port()
    config = workdir / f"{name}.toml"
    config.write_text(
        f'replica = "bench"\nadmin_address = "{CLIENT}"\nadmin_port = {admin_port}\n'
        f'[locality]\nregion = "r0"\nzone = "r0-z0"\n'
        f'[nats]\nservers = ["{nats_url}"]\n'
        f'[dns]\naddress = "{CLIENT}"\nport = {dns_port}\nzone = "{ZONE}"\n' + extra
    )
    log = workdir / f"{name}.log"
    spawned = time.monotonic()
    argv, preexec = dying_with_parent(
        [sys.executable, "-m", "syncmesh_app", "--log-level", "WARNING", "registry"]
        + ["--config", str(config)]
    )
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=preexec,  # noqa: PLW1509 - only without setpriv
    )
    return Registry(process, admin_port, dns_port, spawned, log)
