"""The fast reader's batches: frames parsed out of any split of the byte stream, a
consumer-sequence gap inside a batch, and ``Ingest.handle_batch`` (a bad message among
good ones; plain states only counted while catching up)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from global_registry.config import StaleConfig
from global_registry.core.ingest import Delivery, Ingest, IngestResult, MessageKind
from global_registry.core.records import Outcome
from global_registry.core.view import RegistryView
from global_registry.io.fast_reader import FastOrderedReader, FrameParser
from harness.samples import cluster_beat, epoch_claim, service_state, subject_of
from syncmesh.limits import LimitsConfig
from syncmesh.schema import Locality, encode
from syncmesh.view_api import ServiceKey

pytestmark = pytest.mark.core

SID = b"7"
ACK = b"$JS.ACK.SYNCMESH_V2.cons"


def delivered(subject: bytes, data: bytes, seq: int, dseq: int, pending: int) -> bytes:
    """One message as nats-server delivers it to a push consumer (v1 ack subject)."""
    headers = b"NATS/1.0\r\nNats-Msg-Id: x:1:%d\r\n\r\n" % seq
    reply = ACK + b".1.%d.%d.1700000000000000000.%d" % (seq, dseq, pending)
    line = b"HMSG %s %s %s %d %d\r\n" % (subject, SID, reply, len(headers), len(headers + data))
    return line + headers + data + b"\r\n"


def flow_control(reply: bytes) -> bytes:
    headers = b"NATS/1.0 100 FlowControl Request\r\n\r\n"
    line = b"HMSG _INBOX.x %s %s %d %d\r\n" % (SID, reply, len(headers), len(headers))
    return line + headers + b"\r\n"


class FakeConnection:
    def __init__(self) -> None:
        self.published: list[str] = []
        self.other: list[tuple[Any, ...]] = []

    async def publish(self, subject: str, payload: bytes = b"") -> None:
        self.published.append(subject)

    async def _process_msg(self, *args: Any, **kwargs: Any) -> None:
        self.other.append(args)

    async def _process_ping(self) -> None:
        self.other.append(("PING",))

    async def _process_pong(self) -> None:
        self.other.append(("PONG",))


class Sink:
    """Records what the parser hands over, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_batch(self, batch: list[Delivery]) -> None:
        self.events.extend(("msg", *item) for item in batch)

    def on_frame(self, subject: bytes, reply: bytes, headers: bytes, data: bytes) -> bytes | None:
        self.events.append(("frame", subject, reply, data))
        return reply if b"FlowControl" in headers else None


def stream_bytes() -> tuple[bytes, list[tuple[Any, ...]]]:
    """Three messages, a flow-control request, a PING and one more message; the events
    a sink must see for them."""
    states = [service_state("east", f"svc-{i}", revision=i + 1) for i in range(4)]
    wire = b""
    expected: list[tuple[Any, ...]] = []
    for i, state in enumerate(states[:3]):
        subject = subject_of(state).encode()
        wire += delivered(subject, encode(state), 10 + i, i + 1, 3 - i)
        expected.append(("msg", subject, encode(state), 10 + i, i + 1, b"%d" % (3 - i), b""))
    wire += flow_control(b"$JS.FC.SYNCMESH_V2.cons.ab") + b"PING\r\n"
    expected.append(("frame", b"_INBOX.x", b"$JS.FC.SYNCMESH_V2.cons.ab", b""))
    subject = subject_of(states[3]).encode()
    wire += delivered(subject, encode(states[3]), 13, 4, 0)
    expected.append(("msg", subject, encode(states[3]), 13, 4, b"0", b""))
    return wire, expected


def without_stored_at(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(*e[:6], b"") if e[0] == "msg" else e for e in events]


async def test_frames_split_at_every_byte_offset_come_out_the_same() -> None:
    wire, expected = stream_bytes()
    for cut in range(len(wire) + 1):
        nc = FakeConnection()
        parser = FrameParser(nc)
        sink = Sink()
        parser.handlers[SID] = sink
        await parser.parse(wire[:cut])
        await parser.parse(wire[cut:])
        assert without_stored_at(sink.events) == expected, f"cut at byte {cut}"
        # The flow-control request is answered after the messages before it were handed
        # over; the PING went to nats-py's own handling.
        assert nc.published == ["$JS.FC.SYNCMESH_V2.cons.ab"]
        assert nc.other == [("PING",)]
        assert parser.buf == bytearray()


async def test_frames_fed_one_byte_at_a_time() -> None:
    wire, expected = stream_bytes()
    parser = FrameParser(FakeConnection())
    sink = Sink()
    parser.handlers[SID] = sink
    for i in range(len(wire)):
        await parser.parse(wire[i : i + 1])
    assert without_stored_at(sink.events) == expected


async def test_a_consumer_sequence_gap_inside_a_batch_applies_what_came_before_it() -> None:
    nc = FakeConnection()
    parser = FrameParser(nc)
    batches: list[list[Delivery]] = []
    reader = FastOrderedReader(nc, parser, "SYNCMESH_V2", [], batches.append)
    parser.handlers[SID] = reader
    resets: list[str] = []
    reader._reset = resets.append  # type: ignore[method-assign]
    states = [service_state("east", f"svc-{i}", revision=i + 1) for i in range(4)]
    # Consumer sequences 1, 2, 4, 5: the server skipped one.
    wire = b"".join(
        delivered(subject_of(s).encode(), encode(s), 10 + i, dseq, 9)
        for i, (s, dseq) in enumerate(zip(states, (1, 2, 4, 5), strict=True))
    )
    await parser.parse(wire)
    assert [[item[2] for item in batch] for batch in batches] == [[10, 11]]
    assert reader.last_sseq == 11
    assert resets == ["consumer sequence 4, expected 3"]


def new_ingest() -> Ingest:
    return Ingest(RegistryView(StaleConfig(), LimitsConfig(), Locality()), LimitsConfig())


def as_delivery(message: Any, seq: int, pending: int, data: bytes | None = None) -> Delivery:
    raw = encode(message) if data is None else data
    return (subject_of(message).encode(), raw, seq, seq, b"%d" % pending, b"0")


def test_a_bad_message_among_good_ones_is_rejected_counted_and_reported_once() -> None:
    ingest = new_ingest()
    ingest.begin(10, now=0.0)
    good = [service_state("east", f"svc-{i}", revision=i + 1) for i in range(4)]
    bad = service_state("east", "bad", instances=[])
    batch = [as_delivery(epoch_claim("east"), 1, 9), as_delivery(cluster_beat("east"), 2, 8)]
    batch += [as_delivery(s, 3 + i, 7 - i) for i, s in enumerate(good[:2])]
    # The subject names east/default/bad; the payload is not JSON.
    batch.append((subject_of(bad).encode(), b'{"schema": 2, "clus', 5, 5, b"5", b"0"))
    batch += [as_delivery(s, 6 + i, 4 - i) for i, s in enumerate(good[2:])]
    reported: list[IngestResult] = []
    ingest.handle_batch(batch, now=1.0, wall_s=1.0, report=reported.append)

    services = ingest.view.clusters["east"].services
    assert sorted(key[1] for key in services) == ["svc-0", "svc-1", "svc-2", "svc-3"]
    assert ingest.rejections == {"schema": 1}
    assert ingest.counts == {
        (MessageKind.EPOCH, Outcome.APPLIED): 1,
        (MessageKind.CLUSTER, Outcome.APPLIED): 1,
        (MessageKind.SERVICE, Outcome.APPLIED): 4,
        (MessageKind.SERVICE, Outcome.REJECTED): 1,
    }
    # While catching up, the plain states are only counted; the claim, the beat and
    # the rejection are reported, the rejection with what its log line needs.
    assert [(r.kind, r.outcome) for r in reported] == [
        (MessageKind.EPOCH, Outcome.APPLIED),
        (MessageKind.CLUSTER, Outcome.APPLIED),
        (MessageKind.SERVICE, Outcome.REJECTED),
    ]
    rejected = reported[2]
    assert rejected.log and rejected.subject == "syncmesh.v2.svc.east.default.bad"
    assert rejected.rejected is not None and rejected.rejected.cluster == "east"
    assert ingest.last_seq == 7 and not ingest.caught_up


def test_the_message_that_ends_catching_up_and_those_after_it_are_reported() -> None:
    ingest = new_ingest()
    ingest.begin(3, now=0.0)
    states = [service_state("east", f"svc-{i}", revision=i + 1) for i in range(3)]
    batch = [as_delivery(epoch_claim("east"), 1, 4)]
    batch += [as_delivery(s, 2 + i, 2 - i) for i, s in enumerate(states)]
    reported: list[IngestResult] = []
    ingest.handle_batch(batch, now=2.0, wall_s=2.0, report=reported.append)
    assert ingest.caught_up and ingest.caught_up_at == 2.0
    # seq 3 reaches the target: it ends the catch-up, seq 4 is live.
    assert [(r.caught_up_now, r.live) for r in reported[1:]] == [(True, False), (False, True)]
    assert reported[1].change.everything
    assert reported[2].change.services == {ServiceKey("default", "svc-2")}
    assert ingest.counts[(MessageKind.SERVICE, Outcome.APPLIED)] == 3


def test_a_tombstone_while_catching_up_is_reported_with_its_age() -> None:
    ingest = new_ingest()
    ingest.begin(10, now=100.0)
    state = service_state("east", "web")
    gone = service_state("east", "web", revision=2, deleted=True, instances=[])
    batch = [as_delivery(epoch_claim("east"), 1, 9), as_delivery(state, 2, 8)]
    # Stored 30 s before now (Unix ns of the server's clock).
    batch.append((subject_of(gone).encode(), encode(gone), 3, 3, b"7", b"%d" % (970 * 10**9)))
    reported: list[IngestResult] = []
    ingest.handle_batch(batch, now=100.0, wall_s=1000.0, report=reported.append)
    assert [r.outcome for r in reported] == [Outcome.APPLIED, Outcome.APPLIED]
    assert reported[1].message == gone
    tombstone = ingest.view.clusters["east"].tombstones[("default", "web")]
    assert tombstone.expires_at == pytest.approx(70.0 + StaleConfig().tombstone_ttl_s)


async def test_a_bug_while_applying_loses_only_its_own_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from global_registry.io.stream_reader import StreamReader

    ingest = new_ingest()
    ingest.begin(0, now=0.0)
    seen: list[IngestResult] = []

    def on_result(result: IngestResult) -> None:
        if result.kind is MessageKind.CLUSTER:
            raise RuntimeError("bug")
        seen.append(result)

    reader = StreamReader(FakeConnection(), ingest, on_result)
    states = [service_state("east", f"svc-{i}", revision=i + 1) for i in range(2)]
    batch = [as_delivery(epoch_claim("east"), 1, 0), as_delivery(cluster_beat("east"), 2, 0)]
    batch += [as_delivery(s, 3 + i, 0) for i, s in enumerate(states)]
    with caplog.at_level(logging.ERROR):
        reader._process_batch(batch)
    assert [r.kind for r in seen] == [MessageKind.EPOCH, MessageKind.SERVICE, MessageKind.SERVICE]
    assert "message at sequence 2 not applied" in caplog.text
    await asyncio.sleep(0)
