"""A fast ordered reader of the state stream, on its own nats-py connection.

Why: nats-py turns every delivered message into a ``Msg`` (headers parsed
into a dict, queued, handed to a callback task), which costs about as much as
decoding, validating and applying the message; a cold start reading 100,000
service states was bound by it. This reader keeps nats-py for everything a
connection needs (auth, TLS, reconnects, PING/PONG, the JetStream API) and
takes over only the frames of its own subscription: ``FrameParser`` replaces
the connection's protocol parser, hands those frames straight to the reader,
and passes every other frame to nats-py's parser unchanged.

It relies on nats-py internals (the ``_ps`` parser attribute, ``Parser.buf``
and ``Subscription._id``); ``supported(nc)`` checks for them, and the stream
reader falls back to nats-py's own ordered consumer when they are missing.

Ordering is the ordered-consumer protocol: an ephemeral push consumer with
flow control and idle heartbeats, no acks; a gap in the consumer sequence, a
heartbeat that reports a different last sequence, or silence for three
heartbeat intervals recreates the consumer from the last stream sequence seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from operator import itemgetter
from typing import Any, Protocol

from nats.aio.transport import TcpTransport
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

from global_registry.core.ingest import Delivery, delivery
from global_registry.core.jsmeta import parse_ack_reply_bytes
from syncmesh_io.retry import forever

__all__ = [
    "FrameParser",
    "FrameSink",
    "install_parser",
    "enlarge_reads",
    "READ_SIZE",
    "FastOrderedReader",
    "BatchHandler",
    "supported",
]

log = logging.getLogger(__name__)

# Every message of one read, in stream order (``Delivery``: see global_registry.core.ingest).
BatchHandler = Callable[[list[Delivery]], None]

_CONTROL = b"NATS/1.0 100"
READ_SIZE = 1 << 20
_consumer_seq = itemgetter(3)


def supported(nc: Any) -> bool:
    return isinstance(getattr(nc, "_ps", None), Parser) and hasattr(Parser, "parse")


class FrameSink(Protocol):
    """What takes the frames of one subscription off the connection."""

    def on_batch(self, batch: list[Delivery]) -> None:
        """Messages with a v1 ack subject, in the order they arrived."""

    def on_frame(self, subject: bytes, reply: bytes, headers: bytes, data: bytes) -> bytes | None:
        """Any other frame (``headers`` only for a message without payload); returns the
        subject of a reply to publish now (a flow-control answer), if any."""


class FrameParser(Parser):
    """nats-py's parser, with the frames of chosen subscription ids taken out.

    ``handlers`` maps a subscription id (as the bytes that appear on the wire) to a
    ``FrameSink``. The messages of a read that are complete in the buffer go to it
    as one batch; a frame of another kind first hands over what was batched before
    it, so the sink sees everything in wire order.
    """

    def __init__(self, nc: Any) -> None:
        self.handlers: dict[bytes, FrameSink] = {}
        self._generation = 0
        super().__init__(nc)

    def reset(self) -> None:
        # nats-py calls this on (re)connect: whatever is buffered came from the old socket.
        super().reset()
        self._generation += 1
        # A reconnect brings a new transport (after its TLS upgrade, if any).
        enlarge_reads(self.nc)

    async def _delegate(self, frame: bytes, generation: int) -> None:
        """One complete frame through nats-py's own parser."""
        pending = self.buf
        self.buf = bytearray()
        await Parser.parse(self, frame)
        if self._generation == generation:
            self.buf = pending

    async def parse(self, data: bytes = b"") -> None:
        if self.state != AWAITING_CONTROL_LINE:
            await Parser.parse(self, data)
            return
        buf = self.buf
        buf.extend(data)
        generation = self._generation
        handlers = self.handlers
        size = len(buf)
        pos = 0
        # Messages read but not handed over yet, all for ``sink``.
        batch: list[Delivery] = []
        sink: FrameSink | None = None
        # Slices of a memoryview copy once (bytes(bytearray[...]) copies twice); it
        # is released before the buffer is trimmed, which a live export forbids.
        view = memoryview(buf)
        try:
            while pos < size:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                # The form nearly every frame of a read has: a message delivered by
                # JetStream with its v1 ack subject, ``HMSG <subject> <sid> $JS.ACK.
                # <stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<stored at
                # ns>.<pending> <header bytes> <total bytes>``; anything else (control
                # messages, the v2 ack form, a message without headers) is a frame for
                # ``_other_frame``.
                if buf[pos] == 72:  # H
                    parts = view[pos:eol].tobytes().split(b" ")
                    if len(parts) == 6 and parts[0] == b"HMSG":
                        handler = handlers.get(parts[2])
                        tokens = parts[3].split(b".")
                        if (
                            handler is not None
                            and len(tokens) == 9
                            and tokens[1] == b"ACK"
                            and tokens[0] == b"$JS"
                        ):
                            try:
                                start = eol + 2 + int(parts[4])
                                end = eol + 2 + int(parts[5])
                                stream_seq = int(tokens[5])
                                consumer_seq = int(tokens[6])
                            except ValueError:
                                start = end = -1
                            if eol < start <= end:
                                if end + 2 > size:
                                    break
                                if handler is not sink:
                                    if batch:
                                        sink.on_batch(batch)  # type: ignore[union-attr]
                                        batch = []
                                    sink = handler
                                batch.append(
                                    (
                                        parts[1],
                                        view[start:end].tobytes(),
                                        stream_seq,
                                        consumer_seq,
                                        tokens[8],
                                        tokens[7],
                                    )
                                )
                                pos = end + 2
                                continue
                if batch:
                    sink.on_batch(batch)  # type: ignore[union-attr]
                    batch = []
                    if self._generation != generation:
                        return
                after = await self._other_frame(buf, view, pos, size, generation)
                if self._generation != generation:
                    return
                if after < 0:
                    break
                pos = after
        finally:
            if batch:
                sink.on_batch(batch)  # type: ignore[union-attr]
            view.release()
            if pos > 0 and self._generation == generation:
                del buf[:pos]

    async def _other_frame(
        self, buf: bytearray, view: memoryview, pos: int, size: int, generation: int
    ) -> int:
        """Handle the frame at ``pos``; the position after it (-1: incomplete)."""
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return -1
        lead = buf[pos]
        if not (
            lead in (72, 77) and (buf.startswith(b"HMSG ", pos) or buf.startswith(b"MSG ", pos))
        ):
            await self._delegate(view[pos : eol + 2].tobytes(), generation)
            return eol + 2
        with_headers = lead == 72
        parts = view[pos + (5 if with_headers else 4) : eol].tobytes().split()
        end = eol + 2 + int(parts[-1])
        if end + 2 > size:
            return -1
        handler = self.handlers.get(parts[1])
        if handler is None:
            await self._delegate(view[pos : end + 2].tobytes(), generation)
            return end + 2
        header_size = int(parts[-2]) if with_headers else 0
        start = eol + 2 + header_size
        payload = view[start:end].tobytes()
        answer = handler.on_frame(
            parts[0],
            parts[2] if len(parts) == (5 if with_headers else 4) else b"",
            # Only control messages (no payload) need their headers read.
            b"" if payload else view[eol + 2 : start].tobytes(),
            payload,
        )
        if answer:
            await self.nc.publish(answer.decode(), b"")
        return end + 2


def install_parser(nc: Any) -> FrameParser:
    """Put a ``FrameParser`` in place of the connection's parser, keeping its state,
    and let the connection read more at a time (``enlarge_reads``)."""
    current = nc._ps
    if isinstance(current, FrameParser):
        return current
    parser = FrameParser(nc)
    parser.__dict__.update(current.__dict__)
    nc._ps = parser
    enlarge_reads(nc)
    return parser


def enlarge_reads(nc: Any) -> None:
    """Read up to ``READ_SIZE`` bytes per turn of nats-py's read loop on ``nc`` when its
    transport is one this knows (nats-py's ``TcpTransport``, plain or TLS).

    Why: nats-py reads 32 KiB per turn and its StreamReader stops reading the
    socket above 64 KiB. A catch-up of 87 MB took 2,700 turns (each an await,
    a wake-up and a pause/resume of the socket) and spent 14 % of its CPU
    outside parsing; with 1 MiB it takes about 120. ``read`` returns what is
    buffered as soon as there is anything, so a live message waits no longer.
    """
    transport = getattr(nc, "_transport", None)
    if not isinstance(transport, TcpTransport) or not isinstance(
        getattr(transport, "_io_reader", None), asyncio.StreamReader
    ):
        return

    async def read(_: int) -> bytes:
        # Looked up per call: a TLS upgrade replaces the reader.
        reader: Any = transport._io_reader
        if reader._limit < READ_SIZE:
            reader._limit = READ_SIZE
        return await reader.read(READ_SIZE)  # type: ignore[no-any-return]

    transport.read = read  # type: ignore[method-assign,assignment]


class FastOrderedReader:
    """Every message of ``stream`` in order, in batches, to ``on_batch``; the ``FrameSink``
    of its subscription."""

    def __init__(
        self,
        nc: Any,
        parser: FrameParser,
        stream: str,
        filter_subjects: list[str],
        on_batch: BatchHandler,
        heartbeat_s: float = 2.0,
    ) -> None:
        self._nc = nc
        self._parser = parser
        self._stream = stream
        self._filters = filter_subjects
        self._on_batch = on_batch
        self._heartbeat_s = heartbeat_s
        self._loop = asyncio.get_running_loop()
        self._sub: Any = None
        self._sid = b""
        self._consumer = ""
        self._expected_dseq = 1
        self.last_sseq = 0
        self._last_activity = 0.0
        self._resetting: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._create(self.last_sseq + 1)
        self._watchdog = asyncio.create_task(self._watch(), name="registry-stream-watchdog")

    async def stop(self) -> None:
        for task in (self._watchdog, self._resetting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._drop_current()

    async def _create(self, start_seq: int) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(inbox)
        self._sid = str(self._sub._id).encode()
        self._expected_dseq = 1
        self._parser.handlers[self._sid] = self
        self._last_activity = self._loop.time()
        config = ConsumerConfig(
            deliver_subject=inbox,
            ack_policy=AckPolicy.NONE,
            max_deliver=1,
            flow_control=True,
            idle_heartbeat=self._heartbeat_s,
            mem_storage=True,
            num_replicas=1,
            filter_subjects=self._filters,
            inactive_threshold=max(30.0, 10 * self._heartbeat_s),
        )
        if start_seq > 1:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start_seq
        else:
            config.deliver_policy = DeliverPolicy.ALL
        info = await self._nc.jsm().add_consumer(self._stream, config=config)
        self._consumer = info.name

    async def pending(self) -> int | None:
        """Messages the server has not delivered yet, plus delivered ones not yet handled."""
        if not self._consumer:
            return None
        info = await self._nc.jsm().consumer_info(self._stream, self._consumer)
        delivered = int(info.delivered.consumer_seq) if info.delivered is not None else 0
        return int(info.num_pending) + max(0, delivered - (self._expected_dseq - 1))

    async def _drop_current(self) -> None:
        self._parser.handlers.pop(self._sid, None)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._consumer:
            with contextlib.suppress(Exception):
                await self._nc.jsm().delete_consumer(self._stream, self._consumer)
            self._consumer = ""

    def _reset(self, why: str) -> None:
        """Start over from the last stream sequence seen (never twice at once)."""
        if self._resetting is not None and not self._resetting.done():
            return
        self._parser.handlers.pop(self._sid, None)
        log.info("stream reader: %s; resuming after sequence %d", why, self.last_sseq)
        self._resetting = asyncio.create_task(self._recreate(), name="registry-stream-reset")

    async def _recreate(self) -> None:
        def report(exc: BaseException, attempt: int) -> None:
            log.warning("stream reader: cannot recreate consumer (attempt %d): %s", attempt, exc)

        # NATS may be down: keep trying, never waiting much longer than a heartbeat
        # so the view is current soon after it is back.
        async for attempt in forever((Exception,), report, max_s=self._heartbeat_s):
            with attempt:
                await self._drop_current()
                await self._create(self.last_sseq + 1)

    def on_batch(self, batch: list[Delivery]) -> None:
        self._last_activity = self._loop.time()
        expected = self._expected_dseq
        count = len(batch)
        if list(map(_consumer_seq, batch)) != list(range(expected, expected + count)):
            # A gap: what came before it is good, the rest comes again from a new consumer.
            good = 0
            while batch[good][3] == expected + good:
                good += 1
            if good:
                self._deliver(batch[:good])
            self._reset(f"consumer sequence {batch[good][3]}, expected {expected + good}")
            return
        self._deliver(batch)

    def _deliver(self, batch: list[Delivery]) -> None:
        last = batch[-1]
        self._expected_dseq = last[3] + 1
        self.last_sseq = last[2]
        try:
            self._on_batch(batch)
        except Exception:  # a bug here must not kill the connection's read loop
            log.exception(
                "stream reader: messages at sequences %d-%d not applied", batch[0][2], last[2]
            )

    def on_frame(self, subject: bytes, reply: bytes, headers: bytes, data: bytes) -> bytes | None:
        self._last_activity = self._loop.time()
        if not data and headers.startswith(_CONTROL):
            return self._on_control(reply, headers)
        # A message whose ack subject is not the v1 form the parser reads in place
        # (the v2 form, or a message without headers).
        ack = parse_ack_reply_bytes(reply) if reply.startswith(b"$JS.ACK.") else None
        if ack is None:
            return None
        self.on_batch([delivery(subject, data, ack)])
        return None

    def _on_control(self, reply: bytes, headers: bytes) -> bytes | None:
        if b"FlowControl" in headers:
            # Everything delivered before this request has been applied already.
            return reply or None
        fields = {}
        for line in headers.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        last = fields.get(b"nats-last-consumer")
        if last is not None and int(last) != self._expected_dseq - 1:
            self._reset(f"heartbeat reports consumer sequence {int(last)}")
            return None
        return fields.get(b"nats-consumer-stalled")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            silent = self._loop.time() - self._last_activity
            if silent > 3 * self._heartbeat_s and self._nc.is_connected:
                self._reset(f"no message or heartbeat for {silent:.1f}s")
