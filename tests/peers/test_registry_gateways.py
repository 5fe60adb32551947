"""Gateway probes against real TCP listeners on 127.0.0.1: fall x interval out, rise x interval back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from dns_server.config import DnsConfig
from global_registry.config import ProbeConfig, ReplicaLocality
from harness.nats_peer import NatsPeer
from harness.samples import claim_epoch, cluster_beat, publish, service_state
from syncmesh import subjects
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import Gateway, ProbeReport
from syncmesh.view_api import ServiceKey
from syncmesh_app.embedded.process import wait_until
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig
from syncmesh_io.nats_connection import ensure_stream

pytestmark = pytest.mark.peers

WEB = ServiceKey("default", "web")
INTERVAL = 0.25
JITTER = 0.1
RISE, FALL = 2, 3


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def until(predicate: Callable[[], bool], limit_s: float) -> float:
    """Seconds until ``predicate()`` holds (checked every 10 ms)."""
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def holds() -> bool:
        return predicate()

    await wait_until(holds, limit_s, interval=0.01)
    return loop.time() - start


async def test_closed_gateway_leaves_after_fall_and_returns_after_rise(nats_peer: NatsPeer) -> None:
    nc = await nats.connect(nats_peer.url)
    js = nc.jetstream()
    await ensure_stream(js)
    east_gw = await asyncio.start_server(accept, "127.0.0.1", 0)
    west_gw = await asyncio.start_server(accept, "127.0.0.2", 0)
    east_port = east_gw.sockets[0].getsockname()[1]
    west_port = west_gw.sockets[0].getsockname()[1]
    east, west = await claim_epoch(js, "east"), await claim_epoch(js, "west")
    await publish(
        js,
        cluster_beat(
            "east",
            epoch=east,
            region="us",
            zone="us-1",
            gateways=[Gateway(address="127.0.0.1", port=east_port)],
        ),
    )
    await publish(
        js,
        cluster_beat(
            "west",
            epoch=west,
            region="eu",
            zone="eu-1",
            gateways=[Gateway(address="127.0.0.2", port=west_port)],
        ),
    )
    await publish(js, service_state("east", "web", epoch=east, revision=2))
    await publish(js, service_state("west", "web", epoch=west, revision=2))
    reports: asyncio.Queue[ProbeReport] = asyncio.Queue()

    async def on_report(msg: Msg) -> None:
        await reports.put(msgspec.json.decode(msg.data, type=ProbeReport))

    await nc.subscribe(subjects.probe_subject("prober"), cb=on_report)
    cfg = RegistryConfig(
        nats=NatsConfig(servers=[nats_peer.url]),
        replica="prober",
        admin_port=0,
        dns=DnsConfig(enabled=False),
        locality=ReplicaLocality(region="us", zone="us-1"),
        probe=ProbeConfig(
            interval_s=INTERVAL,
            timeout_s=0.5,
            rise=RISE,
            fall=FALL,
            jitter=JITTER,
            report_interval_s=5.0,
        ),
    )

    def clusters() -> list[str]:
        return [c.cluster for c in app.view.resolve(WEB, None).clusters]

    try:
        async with RegistryApp(cfg) as app:
            async with asyncio.timeout(10):
                await app.wait_ready()
            assert clusters() == ["east", "west"]

            east_gw.close()
            await east_gw.wait_closed()
            gone = await until(lambda: clusters() == ["west"], 5)
            # FALL failed probes: the first may come right away, the last after FALL-1 more intervals.
            assert (
                (FALL - 1) * INTERVAL * (1 - JITTER) - 0.05
                <= gone
                <= FALL * INTERVAL * (1 + JITTER) + 0.5
            )

            # The down transition is published promptly (not only every report_interval_s).
            async with asyncio.timeout(2):
                while True:
                    report = await reports.get()
                    east = next(g for g in report.gateways if g.cluster == "east")
                    if not east.up:
                        break
            assert east.state == "down" and report.replica == "prober"

            east_gw = await asyncio.start_server(accept, "127.0.0.1", east_port)
            back = await until(lambda: clusters() == ["east", "west"], 5)
            assert (
                (RISE - 1) * INTERVAL * (1 - JITTER) - 0.05
                <= back
                <= RISE * INTERVAL * (1 + JITTER) + 0.5
            )
    finally:
        east_gw.close()
        west_gw.close()
        await nc.close()


async def test_a_gateway_that_never_answers_times_out_and_is_down(nats_peer: NatsPeer) -> None:
    """A listener whose backlog is full does not complete connects: the probe times out."""
    nc = await nats.connect(nats_peer.url)
    js = nc.jetstream()
    await ensure_stream(js)
    # 192.0.2.0/24 (TEST-NET-1) is not routed: a connect there never completes.
    east = await claim_epoch(js, "east")
    await publish(
        js, cluster_beat("east", epoch=east, gateways=[Gateway(address="192.0.2.1", port=443)])
    )
    await publish(js, service_state("east", "web", epoch=east, revision=2))
    cfg = RegistryConfig(
        nats=NatsConfig(servers=[nats_peer.url]),
        admin_port=0,
        dns=DnsConfig(enabled=False),
        probe=ProbeConfig(interval_s=0.2, timeout_s=0.2, rise=1, fall=1),
    )
    try:
        async with RegistryApp(cfg) as app:
            async with asyncio.timeout(10):
                await app.wait_ready()
            status = app.status_report()
            gateway = status.clusters[0].gateways[0]
            assert (gateway.up, gateway.state) == (False, "down")
            assert app.view.resolve(WEB, None).clusters == ()
            assert app.view.resolve(WEB, None).known
    finally:
        await nc.close()
