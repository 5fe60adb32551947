"""The synthetic inventory of ``bench/scale.py`` and how it reaches NATS.

- ``Inventory``: ``size`` service states over 100 clusters, every field derived
  from (cluster, index) so that a run can be repeated exactly and a state can be
  rebuilt at any revision without keeping the published ones;
- ``publish_inventory``: the epoch claims, one beat per cluster and every state,
  published the way an edge agent would (subjects, ``Nats-Msg-Id``);
- ``Churn``: changes at a fixed rate while a measurement runs.

``bench/dns_compare.py`` uses the same inventory so that its figures and those
of ``bench/scale.py`` are about the same service set.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from bench.common import claim_epoch, wait_stream_messages
from syncmesh import subjects
from syncmesh.schema import (
    SCHEMA_VERSION,
    ClusterBeat,
    Gateway,
    Instance,
    Locality,
    ServiceState,
    encode,
)

__all__ = ["Inventory", "publish_inventory", "Churn"]

CLUSTERS = 100


@dataclass
class Inventory:
    """``size`` states over 100 clusters; clusters 2k and 2k+1 hold the same service names."""

    size: int
    clusters: int = CLUSTERS
    epochs: dict[int, int] = field(default_factory=dict)
    revisions: dict[int, int] = field(default_factory=dict)
    # (cluster, index in the cluster) -> health of instance 0 (what churn flips)
    flipped: dict[tuple[int, int], bool] = field(default_factory=dict)

    @property
    def per_cluster(self) -> int:
        return max(1, self.size // self.clusters)

    @staticmethod
    def cluster(c: int) -> str:
        return f"c{c:03d}"

    def name_id(self, c: int, s: int) -> int:
        return (c // 2) * self.per_cluster + s

    @staticmethod
    def namespace(name_id: int) -> str:
        return "default" if name_id % 4 == 0 else f"team{name_id % 8}"

    @staticmethod
    def service(name_id: int) -> str:
        return f"svc{name_id:06d}"

    def names(self) -> list[tuple[str, str, tuple[int, int]]]:
        """Every distinct (namespace, service) with the two clusters that have it."""
        out = []
        for pair in range(0, self.clusters, 2):
            for s in range(self.per_cluster):
                nid = self.name_id(pair, s)
                out.append((self.namespace(nid), self.service(nid), (pair, pair + 1)))
        return out

    @staticmethod
    def gateways(c: int, port: int) -> list[Gateway]:
        count = 2 if c % 3 == 0 else 1
        return [Gateway(address=f"127.1.{c}.{g + 1}", port=port) for g in range(count)]

    def gateway_addresses(self) -> list[str]:
        return [g.address for c in range(self.clusters) for g in self.gateways(c, 1)]

    def beat(self, c: int, port: int) -> ClusterBeat:
        cidrs = [f"10.{c}.0.0/16"] + (["127.0.0.0/8"] if c == 0 else [])
        return ClusterBeat(
            schema=SCHEMA_VERSION,
            cluster=self.cluster(c),
            epoch=self.epochs[c],
            revision=1,
            interval_s=3600.0,
            gateways=self.gateways(c, port),
            locality=Locality(region=f"r{c % 5}", zone=f"r{c % 5}-z{c % 3}"),
            client_cidrs=cidrs,
            agent_version="bench",
            source_kind="consul",
            services=self.per_cluster,
        )

    def state(self, c: int, s: int, revision: int) -> ServiceState:
        nid = self.name_id(c, s)
        name = self.service(nid)
        count = 3 + (nid * 7 + c) % 8
        down = self.flipped.get((c, s), False)
        return ServiceState(
            schema=SCHEMA_VERSION,
            cluster=self.cluster(c),
            namespace=self.namespace(nid),
            service=name,
            epoch=self.epochs.get(c, 0),
            revision=revision,
            source="consul",
            source_name=name,
            instances=[
                Instance(
                    id=f"node-{(nid + i) % 97:02d}/{name}-{i}",
                    address=f"10.{c}.{(s * 10 + i) // 250 % 250}.{(s * 10 + i) % 250 + 1}",
                    port=8080 + i,
                    health="critical" if (i == 0 and down) else "passing",
                    zone=f"r{c % 5}-z{i % 3}",
                    meta={"version": f"v{nid % 3}", "team": f"t{nid % 11}"},
                )
                for i in range(count)
            ],
        )

    def next_revision(self, c: int) -> int:
        self.revisions[c] = self.revisions.get(c, 1) + 1
        return self.revisions[c]


async def publish_inventory(js: Any, nc: Any, inv: Inventory, gateway_port: int) -> int:
    """Claims, beats and every state; returns how many messages the stream holds."""
    for c in range(inv.clusters):
        inv.epochs[c] = await claim_epoch(js, inv.cluster(c))
    for c in range(inv.clusters):
        beat = inv.beat(c, gateway_port)
        await nc.publish(
            subjects.cluster_subject(beat.cluster),
            encode(beat),
            headers={"Nats-Msg-Id": subjects.msg_id(beat.cluster, beat.epoch, beat.revision)},
        )
        for s in range(inv.per_cluster):
            state = inv.state(c, s, inv.next_revision(c))
            await nc.publish(
                subjects.service_subject(state.cluster, state.namespace, state.service),
                encode(state),
                headers={
                    "Nats-Msg-Id": subjects.msg_id(state.cluster, state.epoch, state.revision)
                },
            )
        await nc.flush()
    expected = inv.clusters * (2 + inv.per_cluster)
    info = await wait_stream_messages(js, expected)
    return int(info.state.bytes)


class Churn:
    """``rate`` changes/s (one instance of a random service flips health), while running."""

    def __init__(self, nc: Any, inv: Inventory, rate: int, seed: int = 5) -> None:
        self._nc, self._inv, self._rate = nc, inv, rate
        self._rng = random.Random(seed)
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        inv = self._inv
        started = loop.time()
        while True:
            due = int((loop.time() - started) * self._rate) - self.sent
            for _ in range(due):
                c = self._rng.randrange(inv.clusters)
                s = self._rng.randrange(inv.per_cluster)
                inv.flipped[(c, s)] = not inv.flipped.get((c, s), False)
                state = inv.state(c, s, inv.next_revision(c))
                await self._nc.publish(
                    subjects.service_subject(state.cluster, state.namespace, state.service),
                    encode(state),
                    headers={
                        "Nats-Msg-Id": subjects.msg_id(state.cluster, state.epoch, state.revision)
                    },
                )
                self.sent += 1
            await asyncio.sleep(0.005)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._nc.flush()
