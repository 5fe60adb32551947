"""The nemesis's churn: registers, changes and deregisters services in Consul,
Nacos and the service file, and remembers what it wrote (with a short history,
for judging answers that may lag a change)."""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time

import aiohttp

from harness.nemesis_plan import CLUSTERS, InstanceView
from harness.nemesis_system import NemesisSystem
from harness.samples import service_file_text

__all__ = ["Churn", "SERVICES", "NAMESPACE", "GRACE_S"]

log = logging.getLogger("nemesis")

SERVICES = [f"svc{i}" for i in range(6)]
NAMESPACE = "default"
# Answers may lag a change by the propagation path and the probes' fall/rise.
GRACE_S = 6.0


class Churn:
    """Registers, changes and deregisters services in the three sources."""

    def __init__(self, system: NemesisSystem, rng: random.Random) -> None:
        self.system = system
        self.rng = rng
        self.file_state: dict[str, list[InstanceView]] = {}
        self.model: dict[tuple[str, str], frozenset[InstanceView]] = {}
        # (time, model copy) of the last GRACE_S seconds: an answer may follow any.
        self.history: collections.deque[
            tuple[float, dict[tuple[str, str], frozenset[InstanceView]]]
        ] = collections.deque()
        self.writes = 0
        self.failed_writes = 0
        self.running = asyncio.Event()

    def _instances(self, cluster: str, service: str) -> list[InstanceView]:
        count = self.rng.choice([0, 1, 1, 2, 3])
        out = []
        for i in range(count):
            health = "passing" if self.rng.random() < 0.75 else "critical"
            if cluster == "west":
                port = self.system.nacos_targets[i].port
                out.append(("127.0.0.5", port, health))
            else:
                prefix = "10.1" if cluster == "east" else "10.3"
                out.append((f"{prefix}.{SERVICES.index(service)}.{i + 1}", 8080, health))
        return out

    async def step(self, http: aiohttp.ClientSession) -> None:
        cluster = self.rng.choice(list(CLUSTERS))
        service = self.rng.choice(SERVICES)
        instances = self._instances(cluster, service)
        try:
            if cluster == "east":
                await self._consul(http, service, instances)
            elif cluster == "west":
                await self._nacos(http, service, instances)
            else:
                self.file_state[service] = instances
                self._write_file()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # The source is down (a fault): its truth is re-read after healing.
            self.failed_writes += 1
            log.debug("write to %s failed: %s", cluster, exc)
            return
        self.writes += 1
        now = time.monotonic()
        self.history.append((now, dict(self.model)))
        while self.history and now - self.history[0][0] > GRACE_S:
            self.history.popleft()
        self.model[(cluster, service)] = frozenset(instances)

    async def _consul(
        self, http: aiohttp.ClientSession, service: str, instances: list[InstanceView]
    ) -> None:
        url = self.system.consul.http_url
        for i in range(3):
            sid = f"{service}-{i}"
            if i < len(instances):
                address, port, health = instances[i]
                body = {
                    "ID": sid,
                    "Name": service,
                    "Address": address,
                    "Port": port,
                    "Check": {"CheckID": f"chk-{sid}", "TTL": "24h", "Status": health},
                }
                async with http.put(f"{url}/v1/agent/service/register", json=body) as resp:
                    resp.raise_for_status()
            else:
                async with http.put(f"{url}/v1/agent/service/deregister/{sid}") as resp:
                    if resp.status != 404:  # never registered (or already gone): fine
                        resp.raise_for_status()

    async def _nacos(
        self, http: aiohttp.ClientSession, service: str, instances: list[InstanceView]
    ) -> None:
        url = f"{self.system.nacos.base_url}/v1/ns/instance"
        for i, target in enumerate(self.system.nacos_targets):
            params = {
                "serviceName": service,
                "ip": "127.0.0.5",
                "port": str(target.port),
                "ephemeral": "false",
            }
            if i < len(instances):
                params["enabled"] = "true" if instances[i][2] == "passing" else "false"
                async with http.post(url, params=params) as resp:
                    resp.raise_for_status()
                async with http.put(url, params=params) as resp:
                    resp.raise_for_status()
            else:
                async with http.delete(url, params=params) as resp:
                    # Nacos answers an error for an instance that was never there: fine,
                    # unless the server itself is unavailable.
                    if resp.status in (502, 503, 504):
                        resp.raise_for_status()

    def _write_file(self) -> None:
        path = self.system.service_file
        tmp = path.with_suffix(".tmp")
        tmp.write_text(service_file_text(dict(sorted(self.file_state.items()))))
        tmp.replace(path)  # atomic: the agent never reads half a file

    async def run(self, rate_per_s: float) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            while True:
                await self.running.wait()
                await self.step(http)
                await asyncio.sleep(self.rng.expovariate(rate_per_s))
