"""The registry keeps what survives out of the garbage collector's scans
(syncmesh_io/gc_pauses.py) and reports its pauses on /metrics."""

from __future__ import annotations

import asyncio
import gc

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from dns_server.config import DnsConfig
from global_registry.config import ProbeConfig
from harness.nats_peer import NatsPeer
from syncmesh.nats_config import NatsConfig
from syncmesh_app.embedded.process import wait_until
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig
from syncmesh_io.gc_pauses import GcConfig


async def scrape(port: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("syncmesh_gc_"):
                key = sample.name + "".join(f",{k}={v}" for k, v in sorted(sample.labels.items()))
                values[key] = sample.value
    return values


async def test_survivors_are_refrozen_and_pauses_are_on_metrics(nats_peer: NatsPeer) -> None:
    gc.unfreeze()
    config = RegistryConfig(
        nats=NatsConfig(servers=[nats_peer.url]),
        admin_port=0,
        dns=DnsConfig(port=0),
        probe=ProbeConfig(enabled=False),
        gc=GcConfig(refreeze_interval_s=0.2, full_collect_interval_s=0.6),
    )
    try:
        async with RegistryApp(config) as app:
            async with asyncio.timeout(30):
                await app.wait_ready()
            frozen_at_ready = gc.get_freeze_count()
            assert frozen_at_ready > 0  # the view, frozen once caught up
            kept = [[i] for i in range(5000)]  # what the process allocates once serving

            async def refrozen() -> bool:
                return not any(o is kept[0] or o is kept[-1] for o in gc.get_objects())

            await wait_until(
                refrozen, 30, interval=0.1, what="objects allocated after ready frozen"
            )
            metrics: dict[str, float] = {}

            async def full_collection_seen() -> bool:
                # The thaw-and-collect-all runs every 0.6 s: a generation-2 pause.
                metrics.update(await scrape(app.admin_port))
                return metrics.get("syncmesh_gc_pause_seconds_count,generation=2", 0) >= 2

            await wait_until(full_collection_seen, 30, interval=0.2)
            assert metrics["syncmesh_gc_frozen_objects"] >= len(kept)
            assert metrics["syncmesh_gc_longest_pause_seconds"] > 0
        # Closed: the hook is gone.
        assert not any(getattr(cb, "__self__", None) is app._gc_pauses for cb in gc.callbacks)
    finally:
        gc.unfreeze()
