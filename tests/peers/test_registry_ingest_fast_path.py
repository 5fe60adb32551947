"""The fast reader (frames parsed in place, ack metadata read from the reply subject, the
label-caching decode) builds the same view as nats-py's ordered consumer from the same
stream, bad messages included: each is rejected, counted and changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from global_registry.config import StaleConfig
from global_registry.core.ingest import Ingest, IngestResult
from global_registry.core.records import Outcome
from global_registry.core.snapshot import inventory
from global_registry.core.view import RegistryView
from global_registry.io.fast_reader import READ_SIZE, FrameParser
from global_registry.io.stream_reader import StreamReader
from harness.nats_peer import NatsPeer, nats_server
from harness.samples import claim_epoch, cluster_beat, instance, publish, service_state
from syncmesh import subjects
from syncmesh.limits import LimitsConfig
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import Locality, encode
from syncmesh_io.nats_connection import connect, ensure_stream

pytestmark = [pytest.mark.peers, pytest.mark.security]

SERVICES = 300


def bad(message: Any, **changes: object) -> bytes:
    data = msgspec.to_builtins(message)
    data.update(changes)
    return msgspec.json.encode(data)


async def fill(js: Any) -> dict[str, int]:
    """A stream of good states with bad ones between; returns the expected rejections."""
    await ensure_stream(js)
    east = await claim_epoch(js, "east")
    west = await claim_epoch(js, "west")
    await publish(js, cluster_beat("east", epoch=east))
    for i in range(SERVICES):
        cluster, epoch = ("east", east) if i % 2 else ("west", west)
        await publish(
            js,
            service_state(
                cluster,
                f"svc-{i}",
                epoch=epoch,
                revision=i + 1,
                instances=[
                    instance(id=f"a{i}", address=f"10.0.{i % 250}.1"),
                    instance(id=f"b{i}", address=f"web-{i}.example", health="critical"),
                ],
            ),
        )

    # The stream keeps one message per subject: each bad one on its own service.
    def good(name: str) -> Any:
        return service_state("east", name, epoch=east, revision=1, instances=[instance()])

    cases = {
        "label": bad(good("bad-label"), namespace="Default"),
        "address": bad(
            good("bad-address"), instances=[{"id": "x", "address": "10.0.0.300", "port": 80}]
        ),
        "schema": b'{"schema": 2, "cluster": "east"',
        "key-mismatch": encode(good("other")),
        "duplicate-instance": encode(
            service_state("east", "bad-dup", epoch=east, revision=1, instances=[instance()] * 2)
        ),
    }
    names = {"label": "bad-label", "address": "bad-address", "schema": "bad-schema"}
    names |= {"key-mismatch": "bad-key", "duplicate-instance": "bad-dup"}
    for reason, data in cases.items():
        await js.publish(subjects.service_subject("east", "default", names[reason]), data)
    # The last good message after the bad ones: catching up ends on it.
    await publish(js, service_state("west", "last", epoch=west, revision=SERVICES + 1))
    return {reason: 1 for reason in cases}


async def read(url: str, fast_path: bool) -> tuple[Ingest, list[IngestResult], str]:
    nc = await nats.connect(url)
    view = RegistryView(StaleConfig(), LimitsConfig(), Locality(), probes_required=False)
    ingest = Ingest(view, LimitsConfig())
    results: list[IngestResult] = []
    reader = StreamReader(nc, ingest, results.append, fast_path=fast_path, heartbeat_s=0.5)
    try:
        await reader.start()
        async with asyncio.timeout(30):
            await reader.caught_up.wait()
        return ingest, results, reader.mode
    finally:
        await reader.stop()
        await nc.close()


async def test_fast_reader_builds_the_view_nats_py_builds(nats_peer: NatsPeer) -> None:
    nc = await nats.connect(nats_peer.url)
    expected_rejections = await fill(nc.jetstream())
    await nc.close()

    fast, fast_results, fast_mode = await read(nats_peer.url, fast_path=True)
    slow, slow_results, slow_mode = await read(nats_peer.url, fast_path=False)
    assert (fast_mode, slow_mode) == ("fast", "nats-py-ordered")

    assert fast.rejections == slow.rejections == expected_rejections
    assert fast.counts == slow.counts
    assert [(r.outcome, r.kind) for r in fast_results] == [
        (r.outcome, r.kind) for r in slow_results
    ]
    assert inventory(fast.view) == inventory(slow.view)
    # Every good state is there, with the healthy counts the view ranks by.
    east = fast.view.clusters["east"].services
    west = fast.view.clusters["west"].services
    assert len(east) + len(west) == SERVICES + 1
    assert not [key for key in east if key[1].startswith("bad") or key[1] == "other"]
    assert all(entry.healthy == 1 and entry.instances == 2 for entry in east.values())
    assert fast.view.instance_count == slow.view.instance_count == 2 * SERVICES + 1
    # The stream sequence of each message came from the ack metadata of its frame.
    assert fast.last_seq == slow.last_seq > SERVICES
    rejected = [r for r in fast_results if r.outcome is Outcome.REJECTED]
    assert sorted(r.rejected.reason for r in rejected if r.rejected) == sorted(expected_rejections)


async def test_the_fast_reader_reads_more_than_32_kib_per_turn_across_a_reconnect(
    nats_peer: NatsPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats-py reads 32 KiB per turn of its read loop; the catch-up spent 14 % of its
    CPU on those turns. The reader's connection reads what is buffered, up to
    ``READ_SIZE``, and keeps doing so on the transport a reconnect brings."""
    nc = await nats.connect(nats_peer.url)
    js = nc.jetstream()
    await ensure_stream(js)
    epoch = await claim_epoch(js, "east")
    # 1,000 states of about 4 KB: far more than the server sends before the reader
    # drains its socket.
    many = [instance(id=f"i{n}", address=f"10.1.{n // 250}.{n % 250 + 1}") for n in range(40)]

    async def fill(first: int) -> None:
        for i in range(first, first + 1000):
            state = service_state("east", f"s{i}", epoch=epoch, revision=i + 1, instances=many)
            await publish(js, state)

    await fill(0)
    chunks: list[int] = []
    parse = FrameParser.parse

    async def counted(self: FrameParser, data: bytes = b"") -> None:
        chunks.append(len(data))
        await parse(self, data)

    monkeypatch.setattr(FrameParser, "parse", counted)
    reader_nc = await nats.connect(nats_peer.url)
    view = RegistryView(StaleConfig(), LimitsConfig(), Locality(), probes_required=False)
    ingest = Ingest(view, LimitsConfig())
    reader = StreamReader(reader_nc, ingest, lambda _: None, fast_path=True, heartbeat_s=0.5)
    services = view.clusters.get
    try:
        await reader.start()
        async with asyncio.timeout(60):
            await reader.caught_up.wait()
        assert len(view.clusters["east"].services) == 1000
        assert max(chunks) > 32768, sorted(chunks)[-5:]
        # A reconnect gives the transport a new socket reader (with nats-py's 32 KiB limit).
        old_reader = reader_nc._transport._io_reader
        await reader_nc.force_reconnect()
        async with asyncio.timeout(30):
            while reader_nc._transport._io_reader is old_reader or not reader_nc.is_connected:
                await asyncio.sleep(0.05)
        await fill(1000)
        async with asyncio.timeout(60):
            while len(services("east").services) < 2000:  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
        # Live messages come as published, a few KB at a time; what lets a backlog
        # come in large reads is the new socket reader's limit.
        assert reader_nc._transport._io_reader._limit >= READ_SIZE
    finally:
        await reader.stop()
        await reader_nc.close()


async def test_the_fast_reader_over_tls_reads_large_chunks(tmp_path: Path) -> None:
    """Over TLS nats-py swaps the socket reader for one on the TLS transport after
    connecting; the reader still takes its frames and reads more than 32 KiB a turn."""
    async with nats_server(workdir=tmp_path / "nats", tls=True) as peer:
        assert peer.certs is not None
        config = NatsConfig(servers=[peer.url], tls_ca=str(peer.certs.ca))
        nc = await connect(config)
        js = nc.jetstream()
        await ensure_stream(js)
        epoch = await claim_epoch(js, "east")
        many = [instance(id=f"i{n}", address=f"10.1.0.{n + 1}") for n in range(40)]
        for i in range(600):
            await publish(
                js, service_state("east", f"s{i}", epoch=epoch, revision=i + 1, instances=many)
            )
        await nc.close()

        chunks: list[int] = []
        parse = FrameParser.parse

        async def counted(self: FrameParser, data: bytes = b"") -> None:
            chunks.append(len(data))
            await parse(self, data)

        reader_nc = await connect(config)
        view = RegistryView(StaleConfig(), LimitsConfig(), Locality(), probes_required=False)
        ingest = Ingest(view, LimitsConfig())
        reader = StreamReader(reader_nc, ingest, lambda _: None, fast_path=True, heartbeat_s=0.5)
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(FrameParser, "parse", counted)
                await reader.start()
                async with asyncio.timeout(60):
                    await reader.caught_up.wait()
            assert reader.mode == "fast"
            assert len(view.clusters["east"].services) == 600
            assert max(chunks) > 32768, sorted(chunks)[-5:]
        finally:
            await reader.stop()
            await reader_nc.close()
