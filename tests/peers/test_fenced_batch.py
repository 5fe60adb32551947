"""FencedSender.publish_many against a real nats-server: a pipelined batch whose
acknowledgements mean what ``js.publish`` would have raised, message by message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from edge_sync.io.errors import PublishError, publish_error_reason
from edge_sync.io.fenced import FencedSender
from edge_sync.io.metrics import EdgeMetrics
from harness.nats_peer import NatsPeer
from syncmesh import subjects
from syncmesh_io import nats_connection as natsconn

pytestmark = pytest.mark.peers


@pytest.fixture
async def sender(nats_peer: NatsPeer) -> AsyncIterator[FencedSender]:
    nc = await natsconn.connect(natsconn.NatsConfig(servers=[nats_peer.url]))
    try:
        js = nc.jetstream(timeout=2.0)
        await natsconn.join_stream(js)
        sender = FencedSender(EdgeMetrics(CollectorRegistry()))
        sender.nc, sender.js = nc, js
        yield sender
    finally:
        await nc.close()


def _subject(name: str) -> str:
    return subjects.service_subject("batch", "default", name)


async def test_a_batch_is_stored_in_order_and_each_failure_is_its_own(
    sender: FencedSender,
) -> None:
    fenced = {"Nats-Expected-Last-Subject-Sequence": "999"}  # not what the stream holds
    results = await sender.publish_many(
        [
            (_subject("a"), b"{}", {"Nats-Msg-Id": "a"}),
            (_subject("b"), b"{}", fenced),
            ("syncmesh.nostream.c", b"{}", {}),  # no stream takes this subject
            (_subject("d"), b"{}", {"Nats-Msg-Id": "d"}),
        ],
        timeout_s=2.0,
    )
    assert results[0] is None and results[3] is None
    assert results[1] is not None and publish_error_reason(results[1]) is PublishError.FENCED
    assert results[2] is not None and publish_error_reason(results[2]) is PublishError.NO_STREAM
    # A message sent after the last failed one was acknowledged.
    assert sender.settled_since_failure
    info = await sender.js.stream_info(subjects.STREAM)
    assert info.state.messages == 2
    last = await sender.js.get_last_msg(subjects.STREAM, _subject("d"))
    assert last.seq == 2  # a before d: sent, and stored, in order


async def test_an_unanswered_message_times_out(sender: FencedSender) -> None:
    # A plain subscriber takes the message and never answers: no acknowledgement comes.
    silent = await sender.nc.subscribe("syncmesh.silent", cb=_ignore)
    try:
        results = await sender.publish_many(
            [(_subject("ok"), b"{}", {}), ("syncmesh.silent", b"{}", {})], timeout_s=0.3
        )
    finally:
        await silent.unsubscribe()
    assert results[0] is None
    assert results[1] is not None and publish_error_reason(results[1]) is PublishError.TIMEOUT
    assert not sender.settled_since_failure  # nothing acknowledged after the timed-out one
    assert await sender.publish_many([(_subject("ok"), b"{}", {})], timeout_s=2.0) == [None]
    assert sender.settled_since_failure
    assert sender._acks == {}  # nothing left waiting


async def _ignore(_msg: Any) -> None:
    await asyncio.sleep(0)
